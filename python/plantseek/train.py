"""Training of M masked MLPs of one shape together, as one batched computation.

Every network of a batch has the same layer shapes but its own weights, mask, data and shuffling generator:
weights are stacked as ``(M, out, in)``, biases as ``(M, out)``, inputs as ``(M, N, in)``. The loss that is
differentiated is the sum of the M per-network mean losses, so each network receives exactly the gradient of
its own loss, and the optimisers (Adam, SGD with momentum and weight decay) are elementwise: training M
networks together gives what training each alone gives (float64: equal to ~1e-12), and ``M = 1`` is the
single run.

Masks: pruned weights and biases are set to zero before training and their gradients are masked after every
backward pass, so they stay exactly zero (Adam's moments stay zero there; SGD's weight decay of a zero is
zero). The forward pass then needs no mask multiplication on the dense path. A stack whose kept fraction is
below ``kernels.sparse_linear.crossover_density()`` trains on its kept values only, through the native feature-major
kernels (`plantseek.kernels.sparse_linear.sparse_linear_fm`), when the native module serves the device
(`plantseek.impl_choice.layer_impls`); networks with nothing pruned (dense baselines) train in a block of their
own in the same loop (`_Block`). Adam is torch's fused kernel (`plantseek.optim.AdamState`). Python's cyclic
garbage collector is paused during the loop. Stacking networks into these tensors and back: `plantseek.batching`.

The loop runs over pre-shuffled, pre-batched tensors (one ``randperm`` per run and epoch from the run's own
generator, one gather, then slices); no Dataset indexing. A non-finite loss in some epoch marks that run as
failed with a `TrainingDiverged` error naming the epoch; the other runs of the batch carry on.

Networks of a batch whose training would read exactly the same things (`identical_networks`: parameters, masks,
data, generator state; a seed's runs at density 1 under every pruner, and its dense baseline) train once, and
each gets the result and final generator state of its representative.
"""
from __future__ import annotations

import gc
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from . import native
from .kernels import sparse_linear as pnn
from .kernels import sparse_stack as native_stack
from .batching import LayerMasks, check_stacked
from .impl_choice import plan_training
from .losses import per_network_loss
from .optim import OPTIMIZERS, AdamState, sgd_step_
from .threads import cpu_threads_for

Tensor = torch.Tensor


class TrainingDiverged(ValueError):
    """The training loss became NaN or infinite; `epoch` (1-based) says when."""

    def __init__(self, message: str, epoch: int, run: int | None = None):
        super().__init__(message)
        self.epoch = epoch
        self.run = run


@dataclass
class TrainConfig:
    """Optimiser and loop settings (the paper's weak-ticket defaults: Adam, lr 1e-3, batch 32, 10 epochs)."""

    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"  # one of plantseek.optim.OPTIMIZERS
    momentum: float = 0.0  # sgd only
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "constant"  # or "cosine" (per epoch, as torch's CosineAnnealingLR with T_max = epochs)
    impl: str = "auto"  # "auto" (sparse native path below the crossover when available), "dense", "sparse"

    def __post_init__(self) -> None:
        if int(self.epochs) < 0:
            raise ValueError(f"epochs must be >= 0 (got {self.epochs})")
        if int(self.batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1 (got {self.batch_size})")
        if not (math.isfinite(float(self.lr)) and float(self.lr) > 0):
            raise ValueError(f"lr must be a positive number (got {self.lr})")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; available: {', '.join(OPTIMIZERS)}")
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"unknown schedule {self.schedule!r}; available: constant, cosine")
        if self.impl not in ("auto", "dense", "sparse"):
            raise ValueError(f"unknown impl {self.impl!r}; available: auto, dense, sparse")
        self.epochs, self.batch_size, self.lr = int(self.epochs), int(self.batch_size), float(self.lr)


@dataclass
class TrainResult:
    """Trained stacked parameters (zero where pruned) and, per run, None or the error that stopped it."""

    weights: list[Tensor]
    biases: list[Tensor]
    failed: list[Exception | None]
    train_loss: list[float]  # last completed epoch's mean loss per run (nan if none)
    time_s: float = 0.0
    history: list[list[float]] = field(default_factory=list)  # per epoch, per run mean training loss


def forward(weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor, masks: LayerMasks | None = None) -> Tensor:
    """Outputs (M, N, out) of the stacked MLPs for inputs (M, N, in); ReLU after every layer but the last.

    With `masks`, pruned parameters count as zero; without, the parameters are used as they are (training keeps
    them zero where pruned).
    """
    h = x
    depth = len(weights)
    for l, (w, b) in enumerate(zip(weights, biases)):
        if masks is not None:
            w = w * masks[l][0]
            b = b * masks[l][1]
        h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
        if l < depth - 1:
            h = torch.relu(h)
    return h


@dataclass
class MaskSchedule:
    """Masks that change during training (the during-training protocols, `plantseek.protocols`): after each
    optimiser-step count in ``steps``, ``update(step, weights, biases, masks, alive, dense_grads)`` returns the
    new stacked masks, or None to keep them. It gets the stacked parameters (zero where pruned), the current
    masks, which runs still train, and ``dense_grads()``, which returns per layer the (M, out, in) / (M, out)
    gradient of each network's loss on the last batch at every position, pruned ones included (RigL's grow
    criterion). Parameters a new mask drops are zeroed with their optimiser state; grown ones start at zero
    with zero optimiser state; the step count (Adam's bias correction) runs on."""

    steps: Sequence[int]
    update: Callable[..., LayerMasks | None]
    # True when every update keeps each network's kept-weight count (and whether it prunes anything): the
    # training plan (`plantseek.impl_choice.plan_training`) of the first segment then serves every segment
    keeps_counts: bool = False


@dataclass
class _Carry:
    """What a training segment hands the next (`train` with a `MaskSchedule`), in the caller's order."""

    step: int = 0
    perm: Tensor | None = None  # the current epoch's sample order when a segment ends inside an epoch
    epoch_sum: Tensor | None = None
    alive_host: list[bool] = field(default_factory=list)
    failed: list = field(default_factory=list)
    last_loss: list[float] = field(default_factory=list)
    history: list[list[float]] = field(default_factory=list)
    # per parameter in layer order (w0, b0, w1, ...): its optimiser state as dense stacked tensors (Adam: first
    # and second moment; SGD: the momentum buffer)
    opt_state: list[tuple[Tensor, ...]] | None = None
    last_batch: tuple[Tensor, Tensor] | None = None
    # instead of opt_state when every block was a native stack: the blocks themselves and their plan, so that
    # a next segment of the same layout maps their state onto its own structures directly (`_remap_state`)
    blocks: list | None = None
    plan: Any = None


def train(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    masks: LayerMasks,
    x: Tensor,
    y: Tensor,
    *,
    kind: str,
    generators: Sequence[torch.Generator],
    config: TrainConfig | None = None,
    loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
    progress: bool = False,
    desc: str = "train",
    labels: Sequence[str] | None = None,
    schedule: MaskSchedule | None = None,
) -> TrainResult:
    """Train M masked MLPs together; returns new stacked parameters (inputs are not modified).

    weights/biases: per layer (M, out, in) / (M, out); masks: per layer bool pairs of those shapes;
    x: (M, N, in); y: (M, N, out) float targets (regression) or (M, N) int64 labels (classification);
    generators: one per run, on the run's device, used for the per-epoch shuffle; loss_fn(outputs, targets)
    may replace the built-in loss and must return the (M,) per-network losses.
    `labels` name the runs in error messages. Small problems run on one CPU thread (`cpu_threads_for`).
    ``schedule`` (a `MaskSchedule`) changes the masks during training: the steps between two updates are one
    segment, planned (dense or sparse path, `plantseek.impl_choice`) and built for its masks, with the
    optimiser state and the shuffle carried over, so that without updates the result is the same.
    """
    cfg = config or TrainConfig()
    if masks is None:
        raise ValueError("train needs masks (all-True masks for a network with nothing pruned)")
    M = check_stacked(weights, biases, masks)
    if x.dim() != 3 or x.shape[0] != M or x.shape[2] != weights[0].shape[2]:
        raise ValueError(f"inputs must be (M={M}, N, {weights[0].shape[2]}), got {tuple(x.shape)}")
    if y.shape[0] != M or y.shape[1] != x.shape[1]:
        raise ValueError(f"targets must have shape (M={M}, N={x.shape[1]}, ...), got {tuple(y.shape)}")
    if len(generators) != M:
        raise ValueError(f"need one generator per run: {M} runs, {len(generators)} generators")
    if x.shape[1] == 0:
        raise ValueError("no training samples")
    labels = list(labels) if labels is not None else [f"run {k}" for k in range(M)]
    if schedule is None and loss_fn is None:
        rep = identical_networks(weights, biases, masks, x, y, generators)
        if len(set(rep)) < M:  # train each distinct network once (at density 1 every pruner's run is the dense one)
            return _train_distinct(rep, weights, biases, masks, x, y, kind=kind, generators=generators, config=cfg,
                                   progress=progress, desc=desc, labels=labels)
    loss_of = loss_fn or (lambda out, tgt: per_network_loss(out, tgt, kind))
    device, dtype = weights[0].device, weights[0].dtype
    total = cfg.epochs * math.ceil(x.shape[1] / cfg.batch_size)
    ends = [total]
    if schedule is not None:
        ends = _segment_ends(schedule.steps, total) + [total]
    bar = None
    if progress and total > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True)
    start = time.perf_counter()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # the loop allocates many small objects and no cycles: collections only cost time (7% here)
    try:
        carry, begin = None, 0
        plan = None
        for end in ends:
            if plan is None or not schedule.keeps_counts:
                plan = plan_training(masks, cfg.impl, dtype)
            if begin == 0 and end < total and _updates_in_loop(schedule, loss_fn, plan, device, dtype):
                # every update inside one loop: the native stacks are rebuilt in place (`_Remask`)
                with cpu_threads_for(plan.work * cfg.batch_size, device, parallel_networks=plan.stack_only(device, dtype)):
                    result, _ = _train_loop(weights, biases, masks, x, y, plan=plan, cfg=cfg, loss_of=loss_of,
                                            labels=labels, kind=kind, fused=True, generators=generators, bar=bar,
                                            remask=_Remask(ends[:-1], schedule.update, loss_of, kind))
                break
            if carry is not None and carry.blocks is not None and not _same_layout(plan, carry.plan):
                carry = _densify_state(carry, masks, [w.shape for w in weights], cfg.optimizer)
            parallel = loss_fn is None and plan.stack_only(device, dtype)
            with cpu_threads_for(plan.work * cfg.batch_size, device, parallel_networks=parallel):
                result, carry = _train_loop(weights, biases, masks, x, y, plan=plan, cfg=cfg, loss_of=loss_of,
                                            labels=labels, kind=kind, fused=loss_fn is None, generators=generators,
                                            bar=bar, begin=begin, end=end, carry=carry)
            if end == total or not any(carry.alive_host):
                break
            weights, biases = result.weights, result.biases
            new = schedule.update(end, weights, biases, masks, list(carry.alive_host),
                                  lambda: _carried_dense_grads(carry, kind) if _native_grads_pay(loss_fn, carry.blocks, weights)
                                  else _dense_grads(weights, biases, carry.last_batch, loss_of, carry.alive_host))
            if new is not None:
                check_stacked(weights, biases, new)
                weights, biases, carry = _apply_masks(weights, biases, new, carry)
                masks = new
            begin = end
    finally:
        if gc_was_enabled:
            gc.enable()
        if bar is not None:
            bar.close()
    result.time_s = time.perf_counter() - start
    return result


def identical_networks(weights, biases, masks, x, y, generators) -> list[int]:
    """Per network k the first network of the stack whose training reads exactly what k's reads (its
    parameters, masks, data and shuffle generator's state), else k: such networks train to the same result, since
    a network's training does not depend on the others of its batch (one seed's runs at density 1, whatever their
    pruner, are its dense baseline)."""
    M = len(generators)
    rep = list(range(M))
    if M < 2:
        return rep
    buckets: dict[bytes, list[int]] = {}
    per_network = [m for pair in masks for m in pair] + list(weights) + list(biases) + [x, y]  # masks differ most
    for k, g in enumerate(generators):
        same = buckets.setdefault(bytes(g.get_state().numpy()), [])
        for j in same:
            if all(torch.equal(t[j], t[k]) for t in per_network):
                rep[k] = j
                break
        else:
            same.append(k)
    return rep


def _train_distinct(rep: list[int], weights, biases, masks, x, y, *, generators, labels, **kwargs) -> TrainResult:
    """`train` of the distinct networks of ``rep`` (`identical_networks`) only; every other network gets its
    representative's result, and its generator the representative's final state."""
    uniq = sorted(set(rep))
    where = {j: i for i, j in enumerate(uniq)}
    device = weights[0].device
    idx = torch.tensor(uniq, device=device)

    def sub(t):
        return t.index_select(0, idx)

    res = train([sub(w) for w in weights], [sub(b) for b in biases], [(sub(wm), sub(bm)) for wm, bm in masks],
                sub(x), sub(y), generators=[generators[j] for j in uniq], labels=[labels[j] for j in uniq], **kwargs)
    back = torch.tensor([where[r] for r in rep], device=device)
    failed = []
    for k, r in enumerate(rep):
        if k != r:
            generators[k].set_state(generators[r].get_state())
        e = res.failed[where[r]]
        if isinstance(e, TrainingDiverged):  # its run: an index of this stack
            e = TrainingDiverged(str(e) if k == r else f"{e} (trained once for {labels[k]}, identical to it)",
                                 e.epoch, k)
        failed.append(e)
    return TrainResult([w.index_select(0, back) for w in res.weights], [b.index_select(0, back) for b in res.biases],
                       failed, [res.train_loss[where[r]] for r in rep], res.time_s,
                       [[h[where[r]] for r in rep] for h in res.history])


def _segment_ends(steps: Sequence[int], total: int) -> list[int]:
    """The update steps of a `MaskSchedule`, checked: whole numbers in [1, total), increasing."""
    out = []
    for s in steps:
        if isinstance(s, bool) or int(s) != s or not 1 <= int(s) < total:
            raise ValueError(f"mask update steps must be whole numbers in [1, {total}) (the training's "
                             f"{total} steps), got {s!r}")
        if out and int(s) <= out[-1]:
            raise ValueError(f"mask update steps must increase, got {out[-1]} then {s}")
        out.append(int(s))
    return out


def _dense_grads(weights, biases, batch, loss_of, alive) -> list[tuple[Tensor, Tensor]]:
    """Per layer the gradient of each live network's loss on `batch` at every position (pruned ones included)."""
    xb, yb = batch
    with torch.enable_grad():
        W = [w.detach().clone().requires_grad_(True) for w in weights]
        B = [b.detach().clone().requires_grad_(True) for b in biases]
        losses = loss_of(forward(W, B, xb), yb)
        live = torch.tensor(alive, dtype=torch.bool, device=losses.device)
        grads = torch.autograd.grad(torch.where(live, losses, torch.zeros_like(losses)).sum(), W + B)
    L = len(W)
    return [(grads[l], grads[L + l]) for l in range(L)]


# Networks of at most this many weights take RigL's dense gradient from their native stacks; wider ones from
# autograd's batched products (the native pass walks an explicit index of every position: at width 1000 that
# is 8 MB of indices a layer and network, which a GEMM does not read)
NATIVE_GRADS_MAX_WEIGHTS = 100_000


def _native_grads_pay(loss_fn, blocks, weights) -> bool:
    per_network = sum(w[0].numel() for w in weights)
    return loss_fn is None and bool(blocks) and per_network <= NATIVE_GRADS_MAX_WEIGHTS


def _carried_dense_grads(carry: _Carry, kind: str) -> list[tuple[Tensor, Tensor]]:
    """`_stack_dense_grads` of a finished segment's native stacks (`_Carry.blocks`), in the caller's order."""
    xb, yb = carry.last_batch
    order = carry.plan.order
    reorder = _Reorder(order, xb.device)
    alive = [carry.alive_host[k] for k in order]
    grads = _stack_dense_grads(carry.blocks, reorder.take(xb), reorder.take(yb), alive, kind)
    return [(reorder.untake(gw), reorder.untake(gb)) for gw, gb in grads]


def _stack_dense_grads(blocks, xb, yb, alive_host, kind: str) -> list[tuple[Tensor, Tensor]]:
    """`_dense_grads` of the built-in loss from native stacks (`NativeStack.dense_gradients`: one native pass
    per block instead of an autograd graph over dense weights); batch, liveness and result in the plan's order."""
    alive = torch.tensor(alive_host, dtype=torch.bool)
    parts = [blk.stack.dense_gradients(xb[blk.start:blk.stop], yb[blk.start:blk.stop], kind,
                                       alive[blk.start:blk.stop]) for blk in blocks]
    return [tuple(torch.cat([p[l][i] for p in parts]) if len(parts) > 1 else parts[0][l][i] for i in (0, 1))
            for l in range(len(parts[0]))]


class _Reorder:
    """Between the caller's order of networks and a plan's (`TrainingPlan.order`): index_select along dim 0."""

    def __init__(self, order: Sequence[int], device) -> None:
        self.identity = list(order) == list(range(len(order)))
        self.idx = self.inv = None
        if not self.identity:
            self.idx = torch.tensor(order, device=device)
            self.inv = torch.empty_like(self.idx)
            self.inv[self.idx] = torch.arange(len(order), device=device)

    def take(self, t):  # the caller's order -> the plan's
        return t if t is None or self.identity else t.index_select(0, self.idx)

    def untake(self, t):  # the plan's order -> the caller's
        return t if t is None or self.identity else t.index_select(0, self.inv)


def _updates_in_loop(schedule, loss_fn, plan, device, dtype) -> bool:
    """Whether a schedule's updates can happen inside one training loop: counts kept (so one plan serves every
    mask), the built-in loss, and every block a native stack (rebuilt in place at each update, `_Remask`)."""
    return (schedule is not None and schedule.keeps_counts and loss_fn is None and native_stack.available(device, dtype)
            and native.module_for(device) is not None and all(i == "sparse" for blk in plan.impls for i in blk))


@dataclass
class _Remask:
    """A `MaskSchedule`'s updates inside one `_train_loop` of native stacks only: at each step of `steps`, before
    that step trains, the blocks' parameters go to the schedule's ``update`` in the caller's order, and the blocks
    are rebuilt for its new masks, their optimiser state carried over (`_remap_state`): the same arithmetic as
    ending a segment there and starting the next, without leaving the loop."""

    steps: Sequence[int]
    update: Callable[..., LayerMasks | None]
    loss_of: Callable
    kind: str

    def __call__(self, step, blocks, masks, shapes, alive_host, batch, reorder: _Reorder, cfg):
        """New (blocks, masks) in the plan's order, or None when the schedule keeps the masks."""
        plan_w, plan_b = _blocks_out(blocks, shapes)
        weights, biases = [reorder.untake(w) for w in plan_w], [reorder.untake(b) for b in plan_b]
        caller_masks = [(reorder.untake(wm), reorder.untake(bm)) for wm, bm in masks]
        alive = [False] * len(alive_host)
        order = reorder.idx.tolist() if reorder.idx is not None else range(len(alive_host))
        for i, k in enumerate(order):
            alive[k] = alive_host[i]

        def grads():
            if _native_grads_pay(None, blocks, weights):
                return [(reorder.untake(gw), reorder.untake(gb))
                        for gw, gb in _stack_dense_grads(blocks, batch[0], batch[1], alive_host, self.kind)]
            return _dense_grads(weights, biases, (reorder.untake(batch[0]), reorder.untake(batch[1])), self.loss_of,
                                alive)

        new = self.update(step, weights, biases, caller_masks, alive, grads)
        if new is None:
            return None
        check_stacked(weights, biases, new)
        new = [(reorder.take(wm), reorder.take(bm)) for wm, bm in new]
        rebuilt = [_Block(blk.start, blk.stop, plan_w, plan_b, new, blk.impls, cfg) for blk in blocks]
        for old, blk in zip(blocks, rebuilt):
            _remap_state(old, blk)
        return rebuilt, new


def _apply_masks(weights, biases, masks, carry: _Carry):
    """Parameters and optimiser state zeroed where the new `masks` prune (grown ones are zero already)."""
    with torch.no_grad():
        W = [w * wm.to(w.dtype) for w, (wm, _) in zip(weights, masks)]
        B = [b * bm.to(b.dtype) for b, (_, bm) in zip(biases, masks)]
        if carry.opt_state is not None:
            flat = [m for pair in masks for m in pair]
            carry.opt_state = [tuple(t * m.to(t.dtype) for t in state) for state, m in zip(carry.opt_state, flat)]
    return W, B, carry


class _Block:
    """Networks [start, stop) of the (reordered) stack that share one path per layer, with their parameters.

    Layers on the native values path keep only their kept weights (`nn.sparse_linear_fm`: no dense weight,
    no dense gradient, optimiser state in proportion to the kept weights); dense layers keep their weight
    transposed, (M, in, out), which is the layout whose gradient autograd returns contiguous (the fused
    optimiser needs that; the (M, out, in) layout cost one copy per layer and step); other "sparse" layers
    (no native values path) keep (M, out, in) weights for `nn.masked_linear`. Weights and biases are zero where
    pruned and their gradients are masked after each step, except where nothing is pruned.
    """

    def __init__(self, start: int, stop: int, weights, biases, masks, impls: list[str], cfg: "TrainConfig"):
        self.start, self.stop = start, stop
        sl = slice(start, stop)
        wms = [(wm[sl], bm[sl]) for wm, bm in masks]
        self.impls = impls
        device, dtype = weights[0].device, weights[0].dtype
        values = "sparse" in impls and native.module_for(device) is not None
        # every layer on the values path of the CPU kernels: the whole step runs natively, network by network,
        # and updates the parameters itself (no autograd, no gradient masks)
        native_step = values and all(i == "sparse" for i in impls) and native_stack.available(device, dtype)
        self.kinds: list[str] = []
        self.structures: dict[int, Any] = {}
        self.masks = wms
        self.params: list[Tensor] = []
        self.grad_masks: list[tuple[int, Tensor]] = []  # (index into params, mask) where something is pruned
        for l, (w, b, (wm, bm)) in enumerate(zip(weights, biases, wms)):
            w = w[sl].detach()
            if impls[l] == "sparse" and values:
                st = pnn.mask_structure(wm)
                self.structures[l] = st
                self.kinds.append("values")
                self.params.append(w.reshape(-1)[st.pos].clone().requires_grad_(not native_step))
            else:
                transposed = impls[l] == "dense"
                self.kinds.append("dense" if transposed else "masked")
                fw = wm.to(dtype)
                if transposed:
                    fw = fw.transpose(1, 2).contiguous()
                    w = w.transpose(1, 2)
                self.params.append((w * fw).contiguous().requires_grad_(True))
                if not bool(wm.all()):
                    self.grad_masks.append((len(self.params) - 1, fw))
            fb = bm.to(dtype)
            self.params.append((b[sl].detach() * fb).requires_grad_(not native_step))
            if not native_step and not bool(bm.all()):
                self.grad_masks.append((len(self.params) - 1, fb))
        self.stack = None
        if native_step:
            self.stack = native_stack.NativeStack(
                [self.structures[l] for l in range(len(self.kinds))], self.params[0::2], self.params[1::2],
                [None if bool(bm.all()) else bm for _, bm in wms], cfg, checked=True)

    def forward(self, xb: Tensor) -> Tensor:
        """Outputs (stop - start, B, out); for a native stack, a leaf whose gradient `backward_step` takes.
        Consecutive layers on the values path stay feature-major (bias and ReLU
        fused into the kernels): activations are transposed only where such a chain starts and ends."""
        if self.stack is not None:
            return self.stack.forward(xb).requires_grad_(True)
        depth = len(self.kinds)
        h, ht, n = xb, None, xb.shape[1]
        for l, kind in enumerate(self.kinds):
            w, b, relu = self.params[2 * l], self.params[2 * l + 1], l < depth - 1
            if kind == "values":
                ht = pnn.sparse_linear_fm(pnn.to_feature_major(h) if ht is None else ht, w, self.structures[l], n, b,
                                          relu)
                continue
            if ht is not None:
                h, ht = pnn.from_feature_major(ht, n), None
            if kind == "masked":
                h = pnn.masked_linear(h, w, self.masks[l][0], b, self.masks[l][1], impl="auto")
            else:
                h = torch.baddbmm(b.unsqueeze(1), h, w)
            if relu:
                h = torch.relu(h)
        return h if ht is None else pnn.from_feature_major(ht, n)

    def weights_out(self, shapes: Sequence[torch.Size]) -> list[Tensor]:
        """The trained (stop - start, out, in) weights, zero where pruned."""
        return [_dense_of(self, l, self.params[2 * l].detach(), shapes[l]) for l in range(len(self.kinds))]


class _NativeFeed:
    """One epoch's batches for blocks that are all native stacks, gathered once per epoch straight into
    contiguous NumPy arrays per block and batch (batch-major: one gather of the epoch's data, no second copy),
    so that a step is one call into the core per block: the tensor slicing, copies and conversions around
    `NativeStack.train_step` took about a tenth of the training time of a width-100 multishot group of 62
    networks (issue 18's profile)."""

    def __init__(self, blocks, x: Tensor, y: Tensor, perm: Tensor, batch_size: int, kind: str,
                 alive_host: list[bool]) -> None:
        M, N = x.shape[0], x.shape[1]
        self.B, self.full = batch_size, N // batch_size
        cut = self.full * batch_size
        self.x_flat, self.y_flat = x.reshape((M * N,) + tuple(x.shape[2:])), y.reshape((M * N,) + tuple(y.shape[2:]))
        y_in = self.y_flat if kind == "classification" else self.y_flat.to(x.dtype)  # what the core reads
        self.rows = perm + torch.arange(M, device=perm.device).unsqueeze(1) * N  # (M, N): network m's epoch order

        def by_batch(flat, a, b):  # networks a..b: full batches (full, m, B, ...) and the rest (m, N - cut, ...)
            r = self.rows[a:b]
            head = r[:, :cut].reshape(b - a, self.full, batch_size).transpose(0, 1).reshape(-1)
            tail = r[:, cut:].reshape(-1)
            inner = tuple(flat.shape[1:])
            return (flat.index_select(0, head).view((self.full, b - a, batch_size) + inner).numpy(),
                    flat.index_select(0, tail).view((b - a, N - cut) + inner).numpy())

        self.parts = []
        for blk in blocks:
            live = alive_host[blk.start:blk.stop]
            self.parts.append((blk.start, blk.stack, by_batch(self.x_flat, blk.start, blk.stop),
                               by_batch(y_in, blk.start, blk.stop),
                               None if all(live) else torch.tensor(live, dtype=torch.bool).numpy()))

    def batch(self, s: int, e: int) -> tuple[Tensor, Tensor]:
        """Every network's batch [s, e) of this epoch's order, (M, e - s, ...) tensors (the carry's last batch)."""
        r = self.rows[:, s:e]
        M, n = r.shape
        xb = self.x_flat.index_select(0, r.reshape(-1)).view((M, n) + tuple(self.x_flat.shape[1:]))
        yb = self.y_flat.index_select(0, r.reshape(-1)).view((M, n) + tuple(self.y_flat.shape[1:]))
        return xb, yb

    def step(self, s: int, lr: float, threads: int, epoch_sum, n: int) -> None:
        """The step of the batch starting at sample `s` (n samples), adding n x each loss to `epoch_sum`."""
        i = s // self.B
        for start, stack, (xh, xt), (yh, yt), live in self.parts:
            if i < self.full:
                loss = stack.train_step_arrays(xh[i], yh[i], live, lr, threads)
            else:
                loss = stack.train_step_arrays(xt, yt, live, lr, threads)
            epoch_sum[start:start + loss.shape[0]] += loss * n


def _train_loop(weights, biases, masks, x, y, *, plan, cfg, loss_of, labels, kind, fused, generators, bar=None,
                begin=0, end=None, carry: _Carry | None = None, remask: _Remask | None = None):
    """Optimiser steps [begin, end) of `train` (arguments already checked; the whole training by default).
    `fused`: the built-in loss of `kind`, which native stacks compute themselves
    (`plantseek.kernels.sparse_stack.NativeStack.train_step`). `remask`: mask updates inside the loop (native
    stacks only, `_updates_in_loop`). Returns the result and the `_Carry` for the next segment (both in the
    caller's order)."""
    start = time.perf_counter()
    device, dtype = weights[0].device, weights[0].dtype
    M, N = x.shape[0], x.shape[1]
    batches = [(s, min(s + cfg.batch_size, N)) for s in range(0, N, cfg.batch_size)]
    nb = len(batches)
    end = cfg.epochs * nb if end is None else end
    carry = carry or _Carry(step=begin, alive_host=[True] * M, failed=[None] * M, last_loss=[float("nan")] * M)
    order = plan.order
    reorder = _Reorder(order, device)
    reordered, take = not reorder.identity, reorder.take

    weights, biases = [take(w) for w in weights], [take(b) for b in biases]
    masks = [(take(wm), take(bm)) for wm, bm in masks]
    x, y = take(x), take(y)
    if reordered:
        generators = [generators[k] for k in order]
        labels = [labels[k] for k in order]
    alive_host = [carry.alive_host[k] for k in order]
    failed = [carry.failed[k] for k in order]
    last_loss = [carry.last_loss[k] for k in order]
    history = [[h[k] for k in order] for h in carry.history]
    blocks = [_Block(a, b, weights, biases, masks, impls, cfg) for (a, b), impls in zip(plan.spans, plan.impls)]
    # parameters that autograd and torch's optimisers handle (native stacks update their own)
    torch_blocks = [blk for blk in blocks if blk.stack is None]
    stacks = [blk for blk in blocks if blk.stack is not None]
    params = [p for blk in torch_blocks for p in blk.params]
    offsets = [0]
    for blk in torch_blocks:
        offsets.append(offsets[-1] + len(blk.params))
    masked = [(offsets[i] + k, m) for i, blk in enumerate(torch_blocks) for k, m in blk.grad_masks]
    masked_idx = [k for k, _ in masked]
    grad_masks = [m for _, m in masked]

    # optimiser: torch's Adam (fused: 3.9x faster than the ~8 foreach passes on bench/bench_sweep.py's stack),
    # or the elementwise SGD step of `sgd_step_`
    adam = AdamState(params, cfg) if cfg.optimizer == "adam" and params else None
    with torch.no_grad():
        bufs = [torch.zeros_like(p) for p in params] if cfg.optimizer == "sgd" else []
    step = carry.step
    if carry.blocks is not None:  # a later segment of the same layout: the state maps block to block
        for old, blk in zip(carry.blocks, blocks):
            _remap_state(old, blk)
    elif carry.opt_state is not None:  # a later segment: the optimiser goes on where the last one stopped
        _load_state(blocks, torch_blocks, offsets, adam, bufs, [tuple(take(t) for t in st) for st in carry.opt_state],
                    step)
    alive = torch.tensor(alive_host, dtype=torch.bool, device=device)
    idx_m = torch.arange(M, device=device).unsqueeze(1)
    xb = yb = perm = epoch_sum = None
    first_epoch, first_batch = begin // nb + 1, begin % nb
    pending = list(remask.steps) if remask is not None else []
    shapes = [w.shape for w in weights]
    for epoch in range(first_epoch, cfg.epochs + 1):
        if step >= end or not any(alive_host):
            break
        if cfg.schedule == "cosine":
            lr = 0.5 * cfg.lr * (1.0 + math.cos(math.pi * (epoch - 1) / cfg.epochs))
        else:
            lr = cfg.lr
        resumed = epoch == first_epoch and first_batch > 0
        if resumed:  # an epoch a previous segment began: its sample order and loss sums
            perm, epoch_sum = take(carry.perm), take(carry.epoch_sum)
        else:
            perm = torch.stack([torch.randperm(N, generator=g, device=device) for g in generators])
            epoch_sum = torch.zeros(M, dtype=dtype, device=device)
        done_in_epoch = 0
        feed = None
        if fused and not torch_blocks and remask is None and device.type == "cpu":
            feed = _NativeFeed(blocks, x, y, perm, cfg.batch_size, kind, alive_host)
            sums, threads = epoch_sum.numpy(), torch.get_num_threads()
        else:
            rows = (perm + idx_m * N).reshape(-1)  # one index_select per tensor: 4x to 6x faster than x[idx_m, perm]
            xs = x.reshape((M * N,) + tuple(x.shape[2:])).index_select(0, rows).view(x.shape)
            ys = y.reshape((M * N,) + tuple(y.shape[2:])).index_select(0, rows).view(y.shape)
        for s, e in batches[first_batch if resumed else 0:]:
            if step >= end:
                break
            if feed is not None:  # every block a native stack: one call into the core per block
                feed.step(s, lr, threads, sums, e - s)
                last_se = (s, e)
                step += 1
                done_in_epoch += 1
                continue
            if pending and step == pending[0]:  # before this step: the masks change
                pending.pop(0)
                rebuilt = remask(step, blocks, masks, shapes, alive_host, (xb, yb), reorder, cfg)
                if rebuilt is not None:
                    blocks, masks = rebuilt
            xb, yb = xs[:, s:e], ys[:, s:e]
            if fused:  # native stacks step whole (loss included); the other blocks through autograd
                parts, tracked = [], []
                for blk in blocks:
                    sl = slice(blk.start, blk.stop)
                    if blk.stack is not None:
                        parts.append(blk.stack.train_step(xb[sl], yb[sl], kind, lr, alive[sl]))
                    else:
                        parts.append(loss_of(blk.forward(xb[sl]), yb[sl]))
                        tracked.append(torch.where(alive[sl], parts[-1], torch.zeros_like(parts[-1])).sum())
                losses = parts[0] if len(parts) == 1 else torch.cat(parts)
                grads = list(torch.autograd.grad(sum(tracked), params)) if params else []
            else:  # a caller's loss sees every output at once: the stacks' outputs are autograd leaves
                outs = [blk.forward(xb[blk.start:blk.stop]) for blk in blocks]
                leaves = [o for o, blk in zip(outs, blocks) if blk.stack is not None]
                losses = loss_of(outs[0] if len(outs) == 1 else torch.cat(outs), yb)
                total = torch.where(alive, losses, torch.zeros_like(losses)).sum()
                grads = list(torch.autograd.grad(total, params + leaves))
                for blk, g in zip(stacks, grads[len(params):]):
                    blk.stack.backward_step(g, lr)
                grads = grads[:len(params)]
            with torch.no_grad():
                epoch_sum += losses.detach() * (e - s)
            if masked_idx:
                with torch.no_grad():
                    torch._foreach_mul_([grads[i] for i in masked_idx], grad_masks)
            step += 1
            done_in_epoch += 1
            if adam is not None:
                adam.step(grads, lr)
            elif params:
                sgd_step_(params, grads, bufs, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          step=step)
        if feed is not None and done_in_epoch:
            xb, yb = feed.batch(*last_se)
        if bar is not None:
            bar.update(done_in_epoch)
        if step % nb != 0:  # the segment ends inside this epoch: the next one finishes it
            break
        mean = (epoch_sum / N).tolist()
        perm = epoch_sum = None
        history.append(mean)
        for k in range(M):
            if not alive_host[k]:
                continue
            if not math.isfinite(mean[k]):
                alive_host[k] = False
                failed[k] = TrainingDiverged(
                    f"training diverged: the loss became {mean[k]} in epoch {epoch} of {cfg.epochs} "
                    f"({labels[k]}; lr={cfg.lr}, optimizer={cfg.optimizer})", epoch, order[k])
            else:
                last_loss[k] = mean[k]
        if not all(alive_host):
            alive = torch.tensor(alive_host, dtype=torch.bool, device=device)
        if bar is not None:
            bar.set_postfix(loss=f"{_nanmean([last_loss[k] for k in range(M) if alive_host[k]]):.3g}")
    out_w, out_b = _blocks_out(blocks, shapes)
    finished = step >= cfg.epochs * nb or not any(alive_host)
    keep = not finished and not torch_blocks  # native stacks only: the next segment reads them (`_remap_state`)
    state = None if finished or keep else _dump_state(blocks, torch_blocks, offsets, adam, bufs,
                                                      [w.shape for w in weights], cfg.optimizer)
    back = list(range(M))
    if reordered:  # back to the caller's order
        untake = reorder.untake
        out_w, out_b = [untake(w) for w in out_w], [untake(b) for b in out_b]
        if state is not None:
            state = [tuple(untake(t) for t in st) for st in state]
        perm, epoch_sum, xb, yb = untake(perm), untake(epoch_sum), untake(xb), untake(yb)
        back = [0] * M
        for i, k in enumerate(order):
            back[k] = i

    def pick(seq):
        return [seq[back[k]] for k in range(M)]

    failed, last_loss, alive_host = pick(failed), pick(last_loss), pick(alive_host)
    history = [pick(h) for h in history]
    nxt = _Carry(step=step, perm=perm, epoch_sum=epoch_sum, alive_host=alive_host, failed=failed,
                 last_loss=last_loss, history=history, opt_state=state, blocks=blocks if keep else None,
                 plan=plan if keep else None,
                 last_batch=None if xb is None else (xb, yb))
    return TrainResult(out_w, out_b, failed, last_loss, time.perf_counter() - start, history), nxt


def _blocks_out(blocks, shapes) -> tuple[list[Tensor], list[Tensor]]:
    """The blocks' trained (M, out, in) weights, zero where pruned, and (M, out) biases, in the plan's order."""
    parts = [blk.weights_out(shapes) for blk in blocks]
    weights = [torch.cat([p[l] for p in parts]) if len(parts) > 1 else parts[0][l] for l in range(len(shapes))]
    biases = [torch.cat([blk.params[2 * l + 1].detach() for blk in blocks]) for l in range(len(shapes))]
    return weights, biases


def _dense_of(blk: "_Block", l: int, t: Tensor, shape: torch.Size) -> Tensor:
    """A block's layer-l weight-shaped tensor in its own layout (kept values scattered back, transposed, or as
    it is) as (m, out, in): its trained weights, or their optimiser state."""
    kind = blk.kinds[l]
    if kind == "values":
        dense = torch.zeros((blk.stop - blk.start,) + tuple(shape[1:]), dtype=t.dtype, device=t.device)
        dense.view(-1)[blk.structures[l].pos] = t.reshape(-1)
        return dense
    if kind == "dense":
        return t.transpose(1, 2).contiguous()
    return t


def _layout_of(blk: "_Block", l: int, dense: Tensor) -> Tensor:
    """The inverse of `_dense_of`: a (m, out, in) tensor in the block's layer-l layout."""
    kind = blk.kinds[l]
    if kind == "values":
        return dense.reshape(-1)[blk.structures[l].pos].contiguous()
    if kind == "dense":
        return dense.transpose(1, 2).contiguous()
    return dense.contiguous()


def _dump_state(blocks, torch_blocks, offsets, adam, bufs, shapes, optimizer) -> list[tuple[Tensor, ...]] | None:
    """Every parameter's optimiser state as dense stacked tensors (layer order w0, b0, w1, ...; blocks joined
    in the plan's order): Adam's two moments, SGD's momentum buffer."""
    n_state = 2 if optimizer == "adam" else 1
    torch_index = {id(blk): i for i, blk in enumerate(torch_blocks)}
    per_block = []
    for blk in blocks:
        states = []
        for j in range(len(blk.params)):
            l, is_bias = divmod(j, 2)
            if blk.stack is not None:
                raw = [blk.stack.state(l, w) for w in ((2, 3) if is_bias else (0, 1))[:n_state]]
                raw = [r.view(blk.params[j].shape) for r in raw] if is_bias else raw
            else:
                k = offsets[torch_index[id(blk)]] + j
                raw = [adam.exp_avg[k], adam.exp_avg_sq[k]] if adam is not None else [bufs[k]]
            # no copies: the segment is over, nothing steps these tensors again
            states.append(tuple(r.detach() if is_bias else _dense_of(blk, l, r.detach(), shapes[l]) for r in raw))
        per_block.append(states)
    if not per_block or not per_block[0] or not per_block[0][0]:
        return None
    if len(per_block) == 1:
        return per_block[0]
    return [tuple(torch.cat([pb[j][i] for pb in per_block]) for i in range(len(per_block[0][j])))
            for j in range(len(per_block[0]))]


def _same_layout(plan, old) -> bool:
    """Whether two segments' plans put the same networks in the same blocks on the same paths."""
    return plan.order == old.order and plan.spans == old.spans and plan.impls == old.impls


def _remap_state(old: "_Block", new: "_Block") -> None:
    """A native stack's optimiser state and step count onto the next segment's stack of the same networks: kept
    weights keep their state, grown ones start at zero, bias state is zeroed where pruned (one native pass,
    `NativeStack.adopt_state`)."""
    L = len(new.kinds)
    new.stack.adopt_state(old.stack, [old.structures[l] for l in range(L)], [new.structures[l] for l in range(L)])


def _densify_state(carry: _Carry, masks, shapes, optimizer: str) -> _Carry:
    """A carry of native stacks (`_Carry.blocks`) as dense optimiser state in the caller's order, zero where
    ``masks`` prune: for a next segment whose plan differs."""
    plan = carry.plan
    state = _dump_state(carry.blocks, [], [0], None, [], shapes, optimizer)
    if plan.order != list(range(len(plan.order))):
        inv = torch.empty(len(plan.order), dtype=torch.long)
        inv[torch.tensor(plan.order)] = torch.arange(len(plan.order))
        state = [tuple(t.index_select(0, inv.to(t.device)) for t in st) for st in state]
    flat = [m for pair in masks for m in pair]
    carry.opt_state = [tuple(t * m.to(t.dtype) for t in st) for st, m in zip(state, flat)]
    carry.blocks = carry.plan = None
    return carry


def _load_state(blocks, torch_blocks, offsets, adam, bufs, state, step) -> None:
    """`_dump_state`'s dense state (in the plan's order) into freshly built blocks, at step count `step`."""
    torch_index = {id(blk): i for i, blk in enumerate(torch_blocks)}
    with torch.no_grad():
        for blk in blocks:
            sl = slice(blk.start, blk.stop)
            for j in range(len(blk.params)):
                l, is_bias = divmod(j, 2)
                laid = [t[sl].contiguous() if is_bias else _layout_of(blk, l, t[sl]) for t in state[j]]
                if blk.stack is not None:
                    for w, t in zip((2, 3) if is_bias else (0, 1), laid):
                        blk.stack.set_state(l, w, t.reshape(-1))
                    continue
                k = offsets[torch_index[id(blk)]] + j
                if adam is not None:
                    adam.exp_avg[k].copy_(laid[0].view_as(adam.exp_avg[k]))
                    adam.exp_avg_sq[k].copy_(laid[1].view_as(adam.exp_avg_sq[k]))
                    adam.steps[k].fill_(float(step))
                elif bufs:
                    bufs[k].copy_(laid[0].view_as(bufs[k]))
            if blk.stack is not None:
                blk.stack.set_steps(step)


def _nanmean(values: Sequence[float]) -> float:
    vals = [v for v in values if math.isfinite(v)]
    return sum(vals) / len(vals) if vals else float("nan")


def masked_outputs(weights: Sequence[Tensor], biases: Sequence[Tensor], masks: LayerMasks, x: Tensor,
                   chunk: int = 65536) -> Tensor:
    """No-grad outputs (M, N, out) of the stacked MLPs under `masks` (pruned parameters count as zero).

    On the CPU with the native core (float32/float64) the layers run on their kept weights only
    (`kernels.sparse_linear.sparse_linear_fm`): the rescale fits every run's outputs on its whole training set
    before each weak training phase, and there (one network, 9000 samples, width 100, one thread) that took
    1.4 / 2.8 / 7.0 / 11.3 ms at density 0.01 / 0.1 / 0.5 / 1 against 12 to 15 ms dense. Each network's
    outputs depend only on its own parameters and inputs, whatever else is stacked, and the kernels split their
    rows over the caller's threads (`cpu_threads_for` with ``parallel_networks``: a small group's one-thread
    block does not hold them to one); `evaluate_outputs` elsewhere."""
    if not (native.cpu_module() is not None and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)
            and all(w.dim() == 3 for w in weights)):
        return evaluate_outputs(weights, biases, x, masks, chunk)
    depth = len(weights)
    with torch.no_grad(), cpu_threads_for(0.0, x.device, parallel_networks=True):
        layers = []
        for (w, b), (wm, bm) in zip(zip(weights, biases), masks):
            st = pnn.mask_structure(wm)
            layers.append((w.detach().reshape(-1)[st.pos].contiguous(), (b.detach() * bm.to(b.dtype)).contiguous(), st))

        def chain(xb: Tensor) -> Tensor:
            n = xb.shape[1]
            ht = pnn.to_feature_major(xb.contiguous())
            for l, (vals, bias, st) in enumerate(layers):
                ht = pnn.sparse_linear_fm(ht, vals, st, n, bias, l < depth - 1)
            return pnn.from_feature_major(ht, n)

        return _in_chunks(chain, x, chunk)


def evaluate_outputs(weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor, masks: LayerMasks | None = None,
                     chunk: int = 65536) -> Tensor:
    """No-grad outputs (M, N, out) in chunks of samples (parameters used as they are unless `masks`)."""
    with torch.no_grad():
        return _in_chunks(lambda xb: forward(weights, biases, xb, masks), x, chunk)


def _in_chunks(outputs_of: Callable[[Tensor], Tensor], x: Tensor, chunk: int) -> Tensor:
    """`outputs_of` (M, n, in) -> (M, n, out) over the samples of x in chunks of at most `chunk`, concatenated."""
    if x.shape[1] <= chunk:
        return outputs_of(x)
    return torch.cat([outputs_of(x[:, s:s + chunk]) for s in range(0, x.shape[1], chunk)], dim=1)
