"""How many CPU threads a training or a search runs on: one for small per-step work, unless told otherwise."""
from __future__ import annotations

import contextlib
import os

import torch

# Per-step work (multiply-adds) below which a CPU loop runs on one thread: for the paper's small networks the
# OpenMP start-up of every tiny op costs more than the op, and on a machine whose cores are shared it is
# catastrophic (measured here, 2 busy cores: one epoch of 16 width-100 networks 1.5 s on 1 thread, 32 s on 2).
# Not for a training that runs only the fused native step on several networks (`parallel_networks`): it runs
# the networks in parallel, one per thread, in one parallel region per step with a dynamic schedule. Measured on
# bench/bench_sweep.py's 68 networks (ms per step, 1 thread / 2 threads): idle 5.0 / 2.7, one busy process
# beside it 5.1 / 6.0, two busy processes 7.7 / 8.0.
SMALL_WORK = 5e7


# The thread counts that enclosing `cpu_threads_for` blocks narrowed to one thread from (innermost last): a
# `parallel_networks` block inside them (a group's training inside `seek`'s per-group block) goes back to the
# caller's count. Without this, the paper grid's circle depth-4 groups (63 networks, 4.1e7 multiply-adds per
# step, under SMALL_WORK) trained on one of this machine's two cores.
_NARROWED_FROM: list[int] = []


@contextlib.contextmanager
def cpu_threads_for(work: float, device: torch.device | str = "cpu", parallel_networks: bool = False):
    """Run the block on one CPU thread when `work` (multiply-adds per step) is small; with `parallel_networks`,
    on the thread count the caller had before any enclosing block narrowed it. `PLANTSEEK_TRAIN_THREADS` (a
    number) forces a thread count. Restores the previous setting afterwards. No effect off the CPU."""
    env = os.environ.get("PLANTSEEK_TRAIN_THREADS", "").strip()
    cpu = torch.device(device).type == "cpu"
    if env:
        n = int(env)
    elif cpu and parallel_networks:
        n = _NARROWED_FROM[0] if _NARROWED_FROM else 0
    elif cpu and work < SMALL_WORK:
        n = 1
    else:
        n = 0
    old = torch.get_num_threads()
    if n <= 0 or n == old:
        yield
        return
    torch.set_num_threads(n)
    narrowed = n < old
    if narrowed:
        _NARROWED_FROM.append(old)
    try:
        yield
    finally:
        if narrowed:
            _NARROWED_FROM.pop()
        torch.set_num_threads(old)
