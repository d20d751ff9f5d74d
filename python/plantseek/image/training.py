"""Training and reading out convolutional networks: the conv family's training block.

`train_params` trains a network's parameters (one (weight, bias) pair per Conv2d/Linear layer) through its layer
sequence (`ConvNetwork.forward_params`), with a mask whose pruned entries stay exactly zero: it trains the small
network a ticket is learned in, fine-tunes the pruned ticket, and trains masked hosts under the weak protocols
and the dense host baseline. `rescaled` is the weak protocols' function-preserving rescale (`plantseek.rescale`)
for layer sequences whose layers scale per output channel.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..masks import Mask
from ..rescale import fit_factors
from ..train import TrainingDiverged

Tensor = torch.Tensor


def predict(fn: Callable[[Tensor], Tensor], x: Tensor, chunk: int = 1024) -> Tensor:
    """No-grad outputs of ``fn`` over ``x`` in chunks of samples."""
    with torch.no_grad():
        return torch.cat([fn(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)]) if x.shape[0] else fn(x)


def outputs(net, weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor) -> Tensor:
    """No-grad outputs of ``net``'s layer sequence with the given parameters."""
    params = list(zip(weights, biases))
    return predict(lambda xb: net.forward_params(params, xb), x)


def masked(weights: Sequence[Tensor], biases: Sequence[Tensor], mask: Mask | None) -> tuple[list[Tensor], list[Tensor]]:
    """The parameters with pruned entries zero (new tensors)."""
    if mask is None:
        return [w.clone() for w in weights], [b.clone() for b in biases]
    return ([w * wm.to(w.dtype) for w, (wm, _) in zip(weights, mask)],
            [b * bm.to(b.dtype) for b, (_, bm) in zip(biases, mask)])


def train_params(net, weights: Sequence[Tensor], biases: Sequence[Tensor], mask: Mask | None, x: Tensor, y: Tensor, *,
                 loss: Callable[[Tensor, Tensor], Tensor], epochs: int, lr: float, batch_size: int,
                 optimizer: str = "adam", generator: torch.Generator | None = None, progress: bool = False,
                 desc: str = "train") -> tuple[list[Tensor], list[Tensor], float]:
    """Train copies of ``weights``/``biases`` through ``net``'s layer sequence on (``x``, ``y``) over batches of
    a fresh shuffle per epoch (drawn from ``generator``); Adam, or SGD without momentum, as the MLP trainer.

    Pruned entries of ``mask`` start at zero and get zero gradients, so they stay exactly zero (Adam's moments
    stay zero there). Returns the trained parameters and the last epoch's mean loss (NaN without an epoch); a
    non-finite loss is a `plantseek.train.TrainingDiverged` naming the epoch.
    """
    w0, b0 = masked(weights, biases, mask)
    params = [t.detach().clone().requires_grad_(True) for pair in zip(w0, b0) for t in pair]
    factors = None
    if mask is not None:
        factors = [m.to(device=p.device, dtype=p.dtype) for m, p in zip([t for pair in mask for t in pair], params)]
    opt = torch.optim.Adam(params, lr=lr) if optimizer == "adam" else torch.optim.SGD(params, lr=lr)
    n, last = int(x.shape[0]), math.nan
    device = generator.device if generator is not None else torch.device("cpu")
    bar = None
    if progress and epochs > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=desc, unit="epoch", leave=False, dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            perm = torch.randperm(n, generator=generator, device=device).to(x.device)
            total = torch.zeros((), dtype=torch.float64, device=x.device)
            for s in range(0, n, batch_size):
                idx = perm[s:s + batch_size]
                out = net.forward_params(list(zip(params[0::2], params[1::2])), x[idx])
                value = loss(out, y[idx])
                opt.zero_grad(set_to_none=False)
                value.backward()
                if factors is not None:
                    with torch.no_grad():
                        for p, f in zip(params, factors):
                            p.grad.mul_(f)
                opt.step()
                total += value.detach().double() * idx.numel()
            last = float(total) / n
            if not math.isfinite(last):
                raise TrainingDiverged(f"training diverged: the loss became {last} in epoch {epoch} of {epochs} "
                                       f"({desc}, lr={lr})", epoch)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{last:.3g}")
    finally:
        if bar is not None:
            bar.close()
    out_w = [p.detach() for p in params[0::2]]
    out_b = [p.detach() for p in params[1::2]]
    return out_w, out_b, last


def rescaled(net, weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor, y: Tensor, kind: str,
             balance: bool = True) -> tuple[list[Tensor], list[Tensor], float]:
    """The masked network ``weights``/``biases`` rescaled by the weak protocols' rule (`plantseek.rescale`),
    fitted on (``x``, ``y``): factors c per output, g their geometric mean, every layer's weights x g^(1/L), layer
    l's biases x g^(l/L), the output rows x c_k/g; then (``balance``) every hidden channel or unit balanced, its
    incoming weights and bias x a and its outgoing weights / a with a = sqrt(|out| / |in|). A channel's outgoing
    weights are the next layer's columns that read it (after a flatten step its H x W block of features), so the
    rule holds through ReLU, pooling and flatten. Returns the parameters and g (1 when the rule skips the fit)."""
    c = fit_factors(outputs(net, weights, biases, x), y, kind)
    if c is None:
        return list(weights), list(biases), 1.0
    L = len(weights)
    g = float(torch.exp(torch.log(c).mean()))
    W = [w.detach().to(torch.float64) * g ** (1.0 / L) for w in weights]
    B = [b.detach().to(torch.float64) * g ** ((l + 1) / L) for l, b in enumerate(biases)]
    out = (c.to(W[-1].device) / g)
    W[-1] = W[-1] * out.reshape((-1,) + (1,) * (W[-1].dim() - 1))
    B[-1] = B[-1] * out
    if balance:
        for l in range(L - 1):
            n_ch = W[l].shape[0]
            nxt = W[l + 1].reshape(W[l + 1].shape[0], n_ch, -1)
            n_in = (W[l].reshape(n_ch, -1).pow(2).sum(1) + B[l].pow(2)).sqrt()
            n_out = nxt.pow(2).sum((0, 2)).sqrt()
            ok = (n_in > 0) & (n_out > 0)
            a = torch.where(ok, (n_out / torch.where(ok, n_in, torch.ones_like(n_in))).sqrt(), torch.ones_like(n_in))
            W[l] = W[l] * a.reshape((-1,) + (1,) * (W[l].dim() - 1))
            B[l] = B[l] * a
            W[l + 1] = (nxt / a.reshape(1, -1, 1)).reshape(W[l + 1].shape)
    return ([w.to(w0.dtype) for w, w0 in zip(W, weights)], [b.to(b0.dtype) for b, b0 in zip(B, biases)], g)
