"""Sweep benchmark: 64 singleshot runs (circle, depth 5, width 100, 10 epochs) trained together with
``plantseek.seek_batch`` against the same runs one by one with ``plantseek.seek``, in float64; the metrics
must agree. Goal: batched >= 8x faster. Writes the "Sweeps" section of bench/RESULTS.md.

    python bench/bench_sweep.py                 # the full benchmark (one-by-one part takes minutes)
    python bench/bench_sweep.py --one-by-one 8  # time 8 of the 64 one by one and extrapolate (rough: the
                                                # dense baselines, one per seed, are then counted twice)
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

PRUNERS = ["random", "magnitude", "snip", "synflow"]
DENSITIES = [0.01, 0.1, 0.5, "ticket"]
SEEDS = [0, 1, 2, 3]


def runs(epochs: int, dtype: str, extra: dict) -> list[dict]:
    return [dict(task="circle", depth=5, width=100, pruner=p, density=d, protocol="singleshot", epochs=epochs,
                 seed=s, dtype=dtype, device="cpu", **extra)
            for p in PRUNERS for d in DENSITIES for s in SEEDS]


def compare(a: dict, b: dict) -> float:
    """Largest relative difference over the numeric metrics both have."""
    worst = 0.0
    for k, va in a.items():
        if k.endswith("_time_s") or k == "time_s":
            continue  # wall times differ by design
        vb = b.get(k)
        if isinstance(va, bool) or not isinstance(va, (int, float)) or not isinstance(vb, (int, float)):
            continue
        if math.isnan(va) and math.isnan(vb):
            continue
        worst = max(worst, abs(va - vb) / max(abs(va), abs(vb), 1e-12))
    return worst


def measure(dtype: str, epochs: int, one_by_one: int, extra: dict) -> dict:
    """Batched and one-by-one wall times of the 64 runs in `dtype`, and how far their metrics differ."""
    import plantseek
    from plantseek.seek import clear_caches

    kws = runs(epochs, dtype, extra)
    clear_caches()
    t0 = time.perf_counter()
    batched = plantseek.seek_batch(kws)
    t_batch = time.perf_counter() - t0
    print(f"{dtype} batched: {t_batch:.1f} s", flush=True)
    n1 = max(1, min(one_by_one, len(kws)))
    pick = [round(i * (len(kws) - 1) / max(n1 - 1, 1)) for i in range(n1)] if n1 < len(kws) else list(range(len(kws)))
    # the one-by-one runs start from nothing, as the batched ones did: planting, data and the dense baselines
    # (one per seed, cached across runs as in any one process) are part of what they cost
    clear_caches()
    t0 = time.perf_counter()
    singles = {}
    for i in pick:
        singles[i] = plantseek.seek(**kws[i])
        print(f"  {dtype} one by one {len(singles)}/{n1}: {time.perf_counter() - t0:.1f} s", flush=True)
    t_single = (time.perf_counter() - t0) * len(kws) / n1
    worst = max(compare(batched[i].metrics, singles[i].metrics) for i in pick)
    acc = [r.metrics.get("test_accuracy") for r in batched]
    acc = [a for a in acc if a is not None]
    out = dict(dtype=dtype, batch=t_batch, single=t_single, n1=n1, worst=worst, n=len(kws),
               acc=sum(acc) / max(len(acc), 1), steps=len(kws) * epochs * math.ceil(0.9 * 10_000 / 32))
    print(f"{dtype}: one by one {t_single:.1f} s; speedup {t_single / t_batch:.1f}x; largest relative metric "
          f"difference {worst:.2e}", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--dtype", default="float64,float32", help="comma-separated dtypes, each measured in turn")
    ap.add_argument("--one-by-one", type=int, default=64, help="how many of the 64 runs to time one by one")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    ap.add_argument("--extra", default="", help="extra seek options, e.g. dense_baseline=false")
    args = ap.parse_args()

    import json
    import os

    import torch

    import plantseek

    extra = {}
    for item in filter(None, args.extra.split(",")):
        k, v = item.split("=", 1)
        extra[k] = json.loads(v)
    load = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}", flush=True)
    # one small run first, so that neither side pays the process's one-off costs (lazy imports, first calls)
    plantseek.seek(task="circle", depth=3, width=20, pruner="random", density=0.5, epochs=1, n_samples=200,
                   progress=False)
    results = [measure(dt.strip(), args.epochs, args.one_by_one, extra) for dt in args.dtype.split(",") if dt.strip()]
    if args.no_write:
        return
    from results import machine, write_section

    rows = []
    for r in results:
        ext = "" if r["n1"] == r["n"] else f" (one by one extrapolated from {r['n1']} runs)"
        rows.append(f"| {r['dtype']}{ext} | {r['single']:.1f} | {r['batch']:.1f} | **{r['single'] / r['batch']:.1f}x** | "
                    f"{r['steps'] / r['single']:.0f} | {r['steps'] / r['batch']:.0f} | {r['worst']:.1e} | {r['acc']:.3f} |")
    body = f"""
`bench/bench_sweep.py`: {results[0]['n']} singleshot runs (circle, depth 5, width 100, {args.epochs} epochs;
pruners {", ".join(PRUNERS)} x densities {", ".join(map(str, DENSITIES))} x seeds {SEEDS[0]}-{SEEDS[-1]}; each run
with its dense baseline, one per seed) trained together with `plantseek.seek_batch` (what the local sweep executor
calls per group) against the same runs one by one with `plantseek.seek`, in one process, caches cleared before
each side.

Machine: {machine()}; load average at the start {load[0]:.1f} (other jobs shared the 2 cores);
PLANTSEEK_TRAIN_THREADS={os.environ.get("PLANTSEEK_TRAIN_THREADS", "unset")}.

| dtype | one by one (s) | batched (s) | speedup (goal >= 8x) | one by one network-steps/s | batched network-steps/s | largest relative metric difference | mean test accuracy |
|---|---:|---:|---:|---:|---:|---:|---:|
""" + "\n".join(rows) + "\n"
    write_section("Sweeps", body + SWEEP_NOTES)
    print("wrote the Sweeps section of bench/RESULTS.md")


# what the numbers mean and where the time goes (measured with the profilers named below; update with the code)
SWEEP_NOTES = """
A network-step is one optimiser step of one of the 64 runs on a batch of 32 (the dense baselines' steps are not
counted). "Same results": in float64 the batched and one-by-one metrics agree to about 1e-10 (sums in another
order, fused multiply-adds); in float32 rounding differences grow through training, and a few metrics of the 64
runs then differ in the second digit.

Where a batched float64 step goes (torch profiler, one epoch; 9.6 ms for the 68 networks): the sparse kernels of
the 64 pruned networks (5 feature-major layers, about 310 000 kept weights) 1.4 ms forward and 4.2 ms backward;
the 4 dense baselines' batched matmuls 1.4 ms; fused Adam 0.65 ms; loss, autograd and Python the rest. One by
one, a width-100 network's step costs about 0.6 ms, most of it per-operation overhead.

Why 8x is out of reach here: 8x needs the batched side in 125.9 / 8 = 15.7 s. Its arithmetic is 422 000 kept
weights (dense baselines included) x 32 samples x 3 passes (forward, input gradient, weight gradient) = 40.5 M
multiply-adds per step, 114 G over the run; in 15.7 s that is 7.3 G multiply-adds/s sustained over the whole
step (optimiser and framework included), 35% of this core's float64 peak (2.6 GHz x 8), while the kernels alone
reach 20 to 21% (issue 4's goal for them was 25%). In float32 the same speedup needs 18% of peak overall; the run
reaches 13%. Two threads make the batched side about 1.5x faster on an idle machine but 2 to 4x slower when
another process holds a core (every parallel region waits for a descheduled thread), so training stays on one
thread for work of this size (`plantseek.train.cpu_threads_for`).

History: 1.5x when the batch trained dense; 3.2x once a stack could take the sparse kernels (one by one then
182 s without its dense baselines); now 4.8x, from fused Adam, feature-major kernels with the bias and ReLU
fused (no transposes inside a chain of sparse layers), one sparse/dense decision per stack, the dense baselines
in their own block of the same loop, the index structure validated once, and no garbage collection inside the
loop. The one-by-one side got faster with the same changes (single width-100 runs now take the sparse path).
"""


if __name__ == "__main__":
    main()
