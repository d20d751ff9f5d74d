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


@contextlib.contextmanager
def cpu_threads_for(work: float, device: torch.device | str = "cpu", parallel_networks: bool = False):
    """Run the block on one CPU thread when `work` (multiply-adds per step) is small, unless
    `parallel_networks`; `PLANTSEEK_TRAIN_THREADS` (a number) forces a thread count. Restores the previous
    setting afterwards. No effect off the CPU."""
    env = os.environ.get("PLANTSEEK_TRAIN_THREADS", "").strip()
    if env:
        n = int(env)
    elif torch.device(device).type == "cpu" and work < SMALL_WORK and not parallel_networks:
        n = 1
    else:
        n = 0
    if n <= 0 or n == torch.get_num_threads():
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)
