"""Which path a stack of masked MLPs trains on: per layer "dense" (batched matmuls) or "sparse" (the native
kernels of `kernels.sparse_linear`, or the network-major step of `kernels.sparse_stack` on the CPU), and the blocks a
training splits its networks into (`plan_training`)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .kernels import sparse_linear as pnn
from .kernels import sparse_stack as native_stack
from .batching import LayerMasks

# Below this many weights, summed over every layer of the M networks trained together, the dense batched
# matmuls beat the layer-by-layer sparse path (autograd; CUDA, or CPU without the native stack) whatever the
# density. Measured here (one thread, float64, batch 32, ms per step, dense vs sparse): one network of width
# 50 / 70 / 100 with 3, 3 and 2 hidden layers (5k to 10k weights) at density 0.05: 0.50/0.57, 0.53/0.56,
# 0.49/0.52; width 100 with 4 hidden layers (30k weights) at density 0.01 and 0.2: 0.73/0.62 and 0.75/0.68.
SPARSE_MIN_STACK_SIZE = 20_000

# Where a CPU stack trains on the native network-major step (`plantseek.kernels.sparse_stack`): below this kept fraction
# whatever its size, and at any kept fraction for networks of at most `STACK_SMALL_NETWORK` weights. Measured
# here (one network, one thread, float64, batch 32, ms per step, dense path vs native stack): 5.3k weights
# (width 50, 3 hidden) at density 0.05 / 0.6: 0.67/0.30 and 0.65/0.31; 30.6k (width 100, 4 hidden) at 0.05 /
# 0.6 / 1.0: 0.69/0.22, 0.69/0.35, 0.65/0.46 (four such networks at 1.0: 1.69/1.26); 81k (width 200, 3 hidden)
# at 0.8 / 1.0: 1.03/1.02, 1.05/1.30; 322k (width 400, 3 hidden) at 0.2 / 0.6 / 0.8 / 1.0: 3.7/0.93, 3.7/2.7,
# 4.0/3.8, 3.7/4.8; 1M (width 1000, 2 hidden) at 0.1 / 0.25 / 0.4 / 0.6: 11.8/1.4, 9.4/4.3, 12.1/7.1, 11.7/10.2.
# The stack wins up to 0.6 to 0.8 from width 200 on, and at every density for the paper's width-100 networks.
# Since full layers run on their own dense kernels in the stack (csrc/sparse_linear.cpp, dense_rows_block), it
# also wins with nothing pruned up to about 100k weights: bench/bench_crossover.py --widths 100,200 --hidden 4,8
# (bench/RESULTS.md, "Dense products against the native stack") has the stack ahead in every width-100 cell (31k
# and 71k weights, the paper's depths 5 and 9) and the dense path ahead with nothing pruned from 8 networks of
# width 200 on (121k and 281k weights). For wide hosts on two threads (the same bench, --widths 400,1000
# --networks 1,4 --threads 2: RESULTS.md, "Dense products against the native stack, wide hosts") the dense path
# wins for four networks from density 0.6 at width 400 and from 0.5 at width 1000, nothing pruned included: 0.5
# stays the crossover (a lone network of those widths would gain from a higher one).
STACK_CROSSOVER_DENSITY = 0.5
STACK_SMALL_NETWORK = 100_000


def _crossover(device: torch.device | str = "cpu") -> float:
    """The measured crossover of `device`'s type (CUDA has its own, `kernels.sparse_linear.crossover_density`)."""
    try:
        return float(pnn.crossover_density(device))
    except ValueError:  # a malformed PLANTSEEK_SPARSE_CROSSOVER(_CUDA): never switch automatically
        return 0.0


def layer_impls(masks: LayerMasks | None, impl: str = "auto", dtype: torch.dtype = torch.float32) -> list[str]:
    """Per layer "dense" or "sparse" for the given stacked masks and the requested implementation.

    "auto" takes the sparse path for every layer when the kept fraction of all weights of the stack is below
    `STACK_CROSSOVER_DENSITY`, or each network has at most `STACK_SMALL_NETWORK` weights, where the native
    stack serves the masks' device and `dtype` (`kernels.sparse_stack.available`); elsewhere when the kept fraction
    is below `kernels.sparse_linear.crossover_density()` and the stack holds at least `SPARSE_MIN_STACK_SIZE` weights.
    One decision for the whole stack, not one per layer: a chain of sparse layers stays feature-major, and a
    dense layer inside it costs two transposes and a separate ReLU of its whole output. (Measured on
    bench/bench_sweep.py's stack: the 2-input first layer keeps 43% of its 200 weights, and deciding it alone
    put it on the dense path at a cost of about 1 ms per step for a layer of 5.5k kept weights.)
    """
    if not masks:
        return []
    kept = sum(float(wm.sum()) for wm, _ in masks)
    total = sum(wm.numel() for wm, _ in masks)
    return _stack_impls(len(masks), masks[0][0].shape[0], kept, total, masks[0][0].device, impl, dtype)


def _stack_impls(depth: int, M: int, kept: float, total: int, device: torch.device, impl: str,
                 dtype: torch.dtype) -> list[str]:
    """`layer_impls` from the counts: M networks of `depth` layers with `kept` of `total` weights kept."""
    if impl in ("dense", "sparse"):
        return [impl] * depth
    fraction = kept / max(1, total)
    if native_stack.available(device, dtype):
        small = total // max(1, M) <= STACK_SMALL_NETWORK
        return ["sparse" if fraction < STACK_CROSSOVER_DENSITY or small else "dense"] * depth
    if total < SPARSE_MIN_STACK_SIZE:
        return ["dense"] * depth
    return ["sparse" if fraction < _crossover(device) else "dense"] * depth


@dataclass
class TrainingPlan:
    """How one training runs: the networks' order (those with something pruned first, then those with nothing
    pruned, the dense baselines), the blocks [start, stop) of that order, each block's path per layer, and
    the multiply-adds per sample of one forward pass (kept weights only on the sparse path)."""

    order: list[int]
    spans: list[tuple[int, int]]
    impls: list[list[str]]
    work: float

    def stack_only(self, device: torch.device, dtype: torch.dtype) -> bool:
        """Whether every block of these (at least two) networks runs the native network-major step
        (`plantseek.kernels.sparse_stack`), whose networks can run in parallel, one per thread."""
        return (len(self.order) >= 2 and native_stack.available(device, dtype)
                and all(i == "sparse" for block in self.impls for i in block))


def plan_training(masks: LayerMasks, impl: str, dtype: torch.dtype) -> TrainingPlan:
    """One pass over the masks: per network its kept weights and whether nothing is pruned, then the blocks (a
    dense member would otherwise pull every layer of a sparse stack onto the dense path) and their paths."""
    M, device = masks[0][0].shape[0], masks[0][0].device
    kept = torch.zeros(M, dtype=torch.float64, device=device)
    full = torch.ones(M, dtype=torch.bool, device=device)
    per_network = 0
    for wm, bm in masks:
        w = wm.reshape(M, -1)
        kept += w.sum(dim=1)
        full &= w.all(dim=1) & bm.reshape(M, -1).all(dim=1)
        per_network += w.shape[1]
    kept_list, full_list = kept.tolist(), full.tolist()
    pruned = [k for k in range(M) if not full_list[k]]
    dense = [k for k in range(M) if full_list[k]]
    if not pruned or not dense or impl in ("dense", "sparse"):
        order, spans = list(range(M)), [(0, M)]
    else:
        order, spans = pruned + dense, [(0, len(pruned)), (len(pruned), M)]
    impls, work = [], 0.0
    for a, b in spans:
        block_kept = sum(kept_list[k] for k in order[a:b])
        block = _stack_impls(len(masks), b - a, block_kept, per_network * (b - a), device, impl, dtype)
        impls.append(block)
        work += block_kept if block and block[0] == "sparse" else per_network * (b - a)
    return TrainingPlan(order, spans, impls, work)


def stack_only(masks: LayerMasks, impl: str = "auto", dtype: torch.dtype = torch.float32) -> bool:
    """Whether every block of a training of these (at least two) networks runs on the native network-major step
    (`plantseek.kernels.sparse_stack`), whose networks can run in parallel, one per thread."""
    return bool(masks) and plan_training(masks, impl, dtype).stack_only(masks[0][0].device, dtype)
