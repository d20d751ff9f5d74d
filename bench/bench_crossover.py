"""Dense batched products against the native sparse stack, per width, density and number of networks trained
together: the table `plantseek.impl_choice` needs to choose a path by measurement (issue 18).

For each cell, M networks (4 hidden layers of the width by default, `--hidden` for others; 2 inputs, 2 classes) train one epoch of 40
batches of 32 through `plantseek.train.train` with ``impl="dense"`` (torch.baddbmm per layer, autograd, fused
Adam: the batched-GEMM path) and with ``impl="sparse"`` (the native network-major stack, which the CPU rule
picks for these shapes at every density); milliseconds per optimiser step, best of 3, float32, on
PLANTSEEK_TRAIN_THREADS threads (1 by default). Beside them: the multiply-adds of a dense step (kept weights x
32 x 3 per network) and the rate each path reaches, against `torch.bmm`'s rate on the dense shape measured in
the same run.

    python bench/bench_crossover.py                  # widths 100 and 300, writes the RESULTS.md section
    python bench/bench_crossover.py --widths 100,200 --hidden 4,8   # also the paper's depth 9 (8 hidden)
    python bench/bench_crossover.py --widths 100 --no-write
    python bench/bench_crossover.py --widths 400,1000 --densities 0.5,0.7,0.9,1 --networks 1,4 --threads 2 \
        --heading "Dense products against the native stack, wide hosts"
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
HEADING = "Dense products against the native stack"
DENSITIES = [0.1, 0.25, 0.5, 1.0]
NETWORKS = [1, 4, 8, 16, 32]
DEPTH, BATCH, STEPS = 4, 32, 40


def problem(M: int, width: int, density: float, hidden: int = DEPTH):
    import torch

    g = torch.Generator().manual_seed(0)
    widths = [2] + [width] * hidden + [2]
    ws = [torch.randn(M, o, i, generator=g) * (2.0 / i) ** 0.5 for i, o in zip(widths[:-1], widths[1:])]
    bs = [torch.zeros(M, o) for o in widths[1:]]
    masks = [((torch.rand(M, o, i, generator=g) < density) if density < 1 else torch.ones(M, o, i, dtype=torch.bool),
              torch.ones(M, o, dtype=torch.bool)) for i, o in zip(widths[:-1], widths[1:])]
    x = torch.randn(M, BATCH * STEPS, 2, generator=g)
    y = torch.randint(0, 2, (M, BATCH * STEPS), generator=g)
    return ws, bs, masks, x, y


def ms_per_step(M: int, width: int, density: float, impl: str, hidden: int = DEPTH) -> float:
    import torch
    from plantseek import train as T

    ws, bs, masks, x, y = problem(M, width, density, hidden)
    cfg = T.TrainConfig(epochs=1, batch_size=BATCH, impl=impl)
    best = float("inf")
    for _ in range(4):  # the first is a warm-up
        gens = [torch.Generator().manual_seed(m) for m in range(M)]
        t0 = time.perf_counter()
        T.train(ws, bs, masks, x, y, kind="classification", generators=gens, config=cfg)
        best = min(best, time.perf_counter() - t0)
    return best / STEPS * 1e3


def bmm_rate(M: int, width: int) -> float:
    """G multiply-adds/s of torch.bmm on M networks' [32 x width] x [width x width] (float32)."""
    import torch

    a, b = torch.randn(M, BATCH, width), torch.randn(M, width, width)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(50):
            torch.bmm(a, b)
        best = min(best, (time.perf_counter() - t0) / 50)
    return M * BATCH * width * width / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--widths", default="100,300")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--hidden", default=str(DEPTH), help="comma-separated numbers of hidden layers")
    ap.add_argument("--densities", default=",".join(f"{d:g}" for d in DENSITIES))
    ap.add_argument("--networks", default=",".join(str(m) for m in NETWORKS))
    ap.add_argument("--heading", default=HEADING, help="the RESULTS.md section to write (one per set of widths)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    densities = [float(d) for d in args.densities.split(",")]
    networks = [int(m) for m in args.networks.split(",")]
    os.environ["PLANTSEEK_TRAIN_THREADS"] = args.threads
    load = os.getloadavg()
    import torch

    torch.set_num_threads(int(args.threads))
    rows, t_start = [], time.perf_counter()
    for hidden in [int(h) for h in args.hidden.split(",")]:
        for width in [int(w) for w in args.widths.split(",")]:
            weights = 2 * width + (hidden - 1) * width * width + 2 * width
            for M in networks:
                rate = bmm_rate(M, width)
                for d in densities:
                    dense, stack = ms_per_step(M, width, d, "dense", hidden), ms_per_step(M, width, d, "sparse", hidden)
                    work = 3 * BATCH * M * weights  # multiply-adds of a dense step
                    rows.append(dict(hidden=hidden, width=width, M=M, density=d, dense=dense, stack=stack, bmm=rate,
                                     dense_rate=work / dense / 1e6, stack_rate=d * work / stack / 1e6))
                    r = rows[-1]
                    print(f"hidden {hidden} width {width} M {M:2d} density {d:4.2f}: dense {dense:7.2f} ms "
                          f"({r['dense_rate']:5.1f} G/s)  "
                          f"stack {stack:7.2f} ms  bmm {rate:5.1f} G/s  {'dense' if dense < stack else 'stack'} wins",
                          flush=True)
    elapsed = time.perf_counter() - t_start
    if args.no_write:
        return
    from results import machine, write_section

    lines = [
        f"Machine: {machine()}; PLANTSEEK_TRAIN_THREADS={args.threads}; load average at start {load[0]:.2f} / "
        f"{load[1]:.2f} / {load[2]:.2f}. Written by `python bench/bench_crossover.py"
        f"{''.join(' ' + shlex.quote(a) for a in sys.argv[1:])}` in {elapsed:.0f} s.",
        "",
        f"M networks of the hidden layers given (2 inputs, 2 classes), one epoch of {STEPS} batches of {BATCH}, "
        "float32, Adam; milliseconds per step, best of 3 after a warm-up. \"dense G/s\": a dense step's "
        "multiply-adds (every weight, x 32 x 3) per second on the dense path; \"stack G/s\": the kept ones' on the "
        "native stack; \"bmm G/s\": torch.bmm alone on the dense shape, same run.",
        "",
        "| hidden layers | width | networks | density | dense path ms | native stack ms | faster | dense G/s | "
        "stack G/s | bmm G/s |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
        *[f"| {r['hidden']} | {r['width']} | {r['M']} | {r['density']:g} | {r['dense']:.2f} | {r['stack']:.2f} | "
          f"{'dense' if r['dense'] < r['stack'] else 'stack'} | {r['dense_rate']:.1f} | {r['stack_rate']:.1f} | "
          f"{r['bmm']:.1f} |" for r in rows],
    ]
    body = "\n".join(lines)
    print(body)
    write_section(args.heading, body)


if __name__ == "__main__":
    main()
