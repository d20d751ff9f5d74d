"""The optimisers of the batched trainer and of edge-popup's score search: Adam (torch's fused kernel) and SGD
with heavy-ball momentum and weight decay. Both are elementwise, so M stacked networks get what M single runs get;
masked gradients are zero, so the moments and the steps of pruned parameters stay zero."""
from __future__ import annotations

import torch
from torch.optim.adam import adam as _functional_adam

Tensor = torch.Tensor

from .spec import OPTIMIZERS  # noqa: F401 - the names `plantseek.train.TrainConfig.optimizer` accepts (the spec owns them)


class AdamState:
    """Adam for a list of tensors through torch's functional `torch.optim.adam.adam`, fused where torch has a
    fused kernel for the device (one pass over each tensor instead of ~8 foreach passes).

    `cfg` gives `betas`, `eps` and `weight_decay` (a `plantseek.train.TrainConfig`). The functional form skips
    `torch.optim.Adam.step`'s per-call bookkeeping (0.35 ms of a 3 ms step of bench/bench_sweep.py's stack)."""

    def __init__(self, params: list[Tensor], cfg):
        self.params, self.cfg = params, cfg
        device = params[0].device
        self.fused = device.type in ("cpu", "cuda") and all(
            p.dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16) for p in params)
        with torch.no_grad():
            self.exp_avg = [torch.zeros_like(p) for p in params]
            self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        # fused kernels keep the step count on the device (float32), the foreach path on the CPU
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device if self.fused else "cpu") for p in params]

    @torch.no_grad()
    def step(self, grads: list[Tensor], lr: float) -> None:
        """One step with `grads` (laid out as the parameters: the fused kernel walks both linearly)."""
        cfg = self.cfg
        _functional_adam(self.params, [g.contiguous() for g in grads], self.exp_avg, self.exp_avg_sq, [], self.steps,
                         foreach=None if self.fused else True, fused=True if self.fused else None, amsgrad=False,
                         beta1=cfg.betas[0], beta2=cfg.betas[1], lr=lr, weight_decay=cfg.weight_decay, eps=cfg.eps,
                         maximize=False)


@torch.no_grad()
def sgd_step_(params: list[Tensor], grads: list[Tensor], bufs: list[Tensor], *, lr: float, momentum: float,
              weight_decay: float, step: int) -> None:
    """One SGD step in place (heavy-ball momentum as torch.optim.SGD: the first step copies the gradient)."""
    if weight_decay:
        torch._foreach_add_(grads, params, alpha=weight_decay)
    if momentum:
        if step == 1:
            torch._foreach_copy_(bufs, grads)
        else:
            torch._foreach_mul_(bufs, momentum)
            torch._foreach_add_(bufs, grads)
        torch._foreach_add_(params, bufs, alpha=-lr)
    else:
        torch._foreach_add_(params, grads, alpha=-lr)
