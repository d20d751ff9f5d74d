"""Scale benchmark: wide hosts at extreme density, the sweep's batched sparse path against the dense path.

A grid over widths 1 000 / 4 000 / 10 000 and densities 1e-2 .. 1e-5 of singleshot runs (circle, SynFlow with
one iteration as in the paper's main runs, 5 epochs, no dense-host baseline). Each cell trains its runs
(different seeds) together with ``plantseek.seek_batch``, the way a sweep does, in a fresh subprocess that
reports its wall time and peak memory (``ru_maxrss`` of that process; on CUDA also the peak allocated device
memory). Runs per hour = runs / wall time. Where the dense path finishes in minutes (width 1 000 here) the
same runs go one by one with ``impl="dense"`` (the masked dense path; ``PLANTSEEK_SPARSE_CROSSOVER=0`` does
the same from outside) for comparison.

The must-show runs of the issue come first, at full size (10 000 samples): width 4 000, depth 5, density
1e-4, and width 10 000, depth 4 (same settings, one run each).

    python bench/scale.py                       # CPU: must-show + grid, writes "## Scale" in bench/RESULTS.md
    python bench/scale.py --device cuda         # the same on a GPU (more runs per cell, full-size data)
    python bench/scale.py --device cuda --impl sparse --no-must-show   # the GPU's sparse path, for its crossover
    python bench/scale.py --quick --no-write    # a smoke test (width 1000 only)
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

WIDTHS = [1000, 4000, 10_000]
DENSITIES = [1e-2, 1e-3, 1e-4, 1e-5]


# ------------------------------------------------------------------------------------------------ one cell

def run_cell(spec: dict) -> dict:
    """Runs one cell in this process and returns its measurements (called in the subprocess)."""
    import resource

    import torch

    import plantseek
    import plantseek.pruners

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    device = spec["device"]
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    kws = [dict(task="circle", depth=spec["depth"], width=spec["width"], density=spec["density"],
                pruner=plantseek.pruners.get("synflow", iterations=1), protocol="singleshot", epochs=spec["epochs"],
                seed=s, n_samples=spec["n_samples"], dense_baseline=False, progress=False, device=device,
                impl=spec["impl"]) for s in range(spec["runs"])]
    t0 = time.perf_counter()
    if spec["batched"]:
        results = plantseek.seek_batch(kws)
    else:
        results = []
        for kw in kws:
            results.extend(plantseek.seek_batch([kw]))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    ok = [r for r in results if not isinstance(r, BaseException)]
    out = {
        **spec, "wall_s": wall, "ok": len(ok), "errors": errors[:3],
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "base_rss": base_rss,
        "test_loss": [r.metrics["test_loss"] for r in ok], "kept": [r.metrics["kept_density"] for r in ok],
    }
    if device.startswith("cuda"):
        out["peak_device"] = torch.cuda.max_memory_allocated()
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


def measure(spec: dict, timeout: float) -> dict:
    """One cell in a fresh interpreter (so that its peak memory is its own)."""
    env = dict(os.environ)
    if importlib.util.find_spec("plantseek") is None:  # a source checkout; else the installed package (its _C)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "python"), env.get("PYTHONPATH", "")])
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, __file__, "--cell", json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**spec, "wall_s": float("nan"), "ok": 0, "errors": [f"timed out after {timeout:.0f} s"]}
    lines = [l for l in proc.stdout.splitlines() if l.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {**spec, "wall_s": time.perf_counter() - t0, "ok": 0,
                "errors": [f"exit {proc.returncode}: {' | '.join(tail)}"]}
    return json.loads(lines[-1])


def best(cells) -> dict:
    """The fastest successful measurement (the machine is shared: slower ones lost time to other jobs);
    peak memory is the largest seen."""
    cells = list(cells)
    ok = [c for c in cells if c.get("ok")]
    if not ok:
        return cells[-1]
    out = dict(min(ok, key=lambda c: c["wall_s"]))
    out["peak_rss"] = max(c.get("peak_rss", 0) for c in ok)
    out["tries"] = [round(c["wall_s"], 1) for c in ok]
    return out


# ------------------------------------------------------------------------------------------------ table

def gb(x) -> str:
    return "-" if x is None else f"{x / 1e9:.2f}"


def rate(c: dict) -> str:
    if not c.get("ok"):
        return "failed: " + "; ".join(c.get("errors", []))[:80]
    return f"{3600 * c['ok'] / c['wall_s']:,.0f}"


def load() -> str:
    try:
        return " / ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--n-samples", type=int, help="samples per run (default: 2000 on the CPU, 10000 on CUDA)")
    ap.add_argument("--runs", help="runs per cell by width, e.g. 1000:4,4000:2,10000:1 (CPU default)")
    ap.add_argument("--dense-runs", type=int, default=1, help="runs per cell timed one by one on the dense path")
    ap.add_argument("--impl", default="auto", choices=("auto", "sparse", "dense"),
                    help="training path of the batched cells (on CUDA 'auto' stays dense until a GPU crossover "
                         "is measured: run once with --impl sparse to measure it)")
    ap.add_argument("--repeat", type=int, default=2,
                    help="measure the cells of widths <= 1000 (and the dense ones) this many times, keep the best")
    ap.add_argument("--dense-widths", default="1000", help="widths also measured on the dense path")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)))
    ap.add_argument("--densities", default=",".join(map(str, DENSITIES)))
    ap.add_argument("--no-must-show", action="store_true", help="skip the two full-size must-show runs")
    ap.add_argument("--quick", action="store_true", help="width 1000 only, two densities, no must-show")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per cell")
    ap.add_argument("--no-write", action="store_true", help="do not rewrite bench/RESULTS.md")
    args = ap.parse_args()
    if args.cell:
        print(json.dumps(run_cell(json.loads(args.cell))), flush=True)
        return

    from results import machine, write_section

    cuda = args.device.startswith("cuda")
    n_samples = args.n_samples or (10_000 if cuda else 2000)
    runs_by_width = {1000: 16, 4000: 8, 10_000: 4} if cuda else {1000: 4, 4000: 2, 10_000: 1}
    if args.runs:
        runs_by_width = {int(a): int(b) for a, b in (p.split(":") for p in args.runs.split(","))}
    widths = [int(w) for w in args.widths.split(",")]
    densities = [float(d) for d in args.densities.split(",")]
    dense_widths = {int(w) for w in args.dense_widths.split(",") if w}
    if args.quick:
        widths, densities, args.no_must_show = [1000], [1e-2, 1e-4], True
    started = time.time()
    loads = [load()]

    must = []
    if not args.no_must_show:
        for width, depth in ((4000, 5), (10_000, 4)):
            spec = dict(width=width, depth=depth, density=1e-4, epochs=5, n_samples=10_000, runs=1, batched=True,
                        impl="auto", device=args.device)
            c = measure(spec, args.timeout)
            must.append(c)
            print(f"must-show width {width} depth {depth}: {c['wall_s']:.1f} s, peak RSS {gb(c.get('peak_rss'))} GB"
                  f" {c.get('errors') or ''}", flush=True)
        loads.append(load())

    cells = []
    for width in widths:
        for dens in densities:
            n = runs_by_width.get(width, 1)
            spec = dict(width=width, depth=args.depth, density=dens, epochs=args.epochs, n_samples=n_samples, runs=n,
                        batched=True, impl=args.impl, device=args.device)
            tries = args.repeat if width <= 1000 else 1
            c = best(measure(spec, args.timeout) for _ in range(tries))
            d = None
            if width in dense_widths:
                dspec = dict(spec, runs=args.dense_runs, batched=False, impl="dense")
                d = best(measure(dspec, args.timeout) for _ in range(args.repeat))
            cells.append((c, d))
            speed = ""
            if d and d.get("ok") and c.get("ok"):
                speed = f", {(c['ok'] / c['wall_s']) / (d['ok'] / d['wall_s']):.1f}x the dense path"
            print(f"width {width} density {dens:g}: {c['ok']} runs in {c['wall_s']:.1f} s ({rate(c)} runs/h), "
                  f"peak RSS {gb(c.get('peak_rss'))} GB{speed} {c.get('errors') or ''}", flush=True)
    loads.append(load())

    gpu = next((c.get("gpu") for c, _ in cells if c.get("gpu")), None)
    lines = [
        f"`python bench/scale.py{' --device ' + args.device if args.device != 'cpu' else ''}` on {machine()}"
        f"{' (' + gpu + ')' if gpu else ''}; load average (1/5/15 min) during the run: {', '.join(loads)} "
        f"(other people's jobs share this machine: timings are noisy). {time.time() - started:.0f} s in all.",
        "",
    ]
    if must:
        lines += [
            "Must-show (singleshot, circle, `pruners.get(\"synflow\", iterations=1)`, density 1e-4, 5 epochs, "
            "10 000 samples, `dense_baseline=False`; one fresh process per run; peak RSS = `ru_maxrss`, which "
            "includes the ~0.4 GB of the interpreter with PyTorch):",
            "",
            "| run | wall time | peak RSS | peak device memory | goal |",
            "|---|---|---|---|---|",
        ]
        for c, goal in zip(must, ["< 60 s, < 3 GB", "runs at all"]):
            status = "" if c.get("ok") else " (failed: " + "; ".join(c.get("errors", [])) + ")"
            lines.append(f"| width {c['width']}, depth {c['depth']} | {c['wall_s']:.1f} s{status} | "
                         f"{gb(c.get('peak_rss'))} GB | {gb(c.get('peak_device')) + ' GB' if c.get('peak_device') else '-'} "
                         f"| {goal} |")
        lines.append("")
    lines += [
        f"Grid: singleshot, circle, depth {args.depth}, SynFlow (1 iteration), {args.epochs} epochs, "
        f"{n_samples} samples per run{' (reduced from 10 000 to keep the CPU grid within ~10 minutes)' if n_samples < 10_000 else ''}, "
        f"{args.device}, float32. *Batched sparse*: the cell's runs (seeds 0..n-1) through one `seek_batch` call "
        "(`impl=\"auto\"`: the native sparse path below the measured crossover). *Dense*: the same runs one by "
        "one with `impl=\"dense\"` (masked dense training), measured where it finishes in minutes. Runs per "
        "hour = runs / wall time of the cell (planting, scoring, training, metrics); peak memory of the cell's "
        f"process. Cells of width 1 000 and the dense cells: best of {args.repeat} (the machine is shared).",
        "",
        "| width | density | runs | batched sparse: runs/h | peak RSS (GB) | peak device (GB) | dense one by one: runs/h | dense peak RSS (GB) | speed-up |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c, d in cells:
        dense_rate = rate(d) if d else "not run"
        dense_rss = gb(d.get("peak_rss")) if d and d.get("ok") else "-"
        speed = "-"
        if d and d.get("ok") and c.get("ok"):
            speed = f"{(c['ok'] / c['wall_s']) / (d['ok'] / d['wall_s']):.1f}x"
        lines.append(f"| {c['width']:,} | {c['density']:g} | {c['runs']} | {rate(c)} | {gb(c.get('peak_rss'))} | "
                     f"{gb(c.get('peak_device')) if c.get('peak_device') else '-'} | {dense_rate} | {dense_rss} | {speed} |")
    if not cuda:
        lines += ["", "GPU numbers: not measured in this session (no GPU was lent to it); on a machine with one, "
                      "`python bench/scale.py --device cuda` fills in the same table (16/8/4 runs per cell, "
                      "10 000 samples, peak device memory from `torch.cuda.max_memory_allocated`)."]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        heading = "Scale" if not cuda else "Scale (CUDA" + (f", impl={args.impl}" if args.impl != "auto" else "") + ")"
        write_section(heading, body)


if __name__ == "__main__":
    main()
