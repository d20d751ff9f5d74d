"""Speed of this checkout against another build of plantseek, on the workloads of bench_sweep.py and scale.py,
measured in the same run (issue 15: the redesign must stay within 5% of the previous layout's speed).

    git worktree add /tmp/base <commit>
    pip install --no-build-isolation --no-deps --target /tmp/base_site /tmp/base
    python bench/redesign_ab.py --base-site /tmp/base_site --base-name <commit> --repeat 3

Every measurement is a fresh process (one thread, PLANTSEEK_TRAIN_THREADS=1) that first runs one small warm-up
run, then times one workload through the public `plantseek.seek_batch`; the two builds alternate, so a change in
the machine's load hits both; each repeat also compares the two builds' metrics run by run. The ratio is new / base of the best of the repeats. Writes the "Redesign: speed
against the previous layout" section of bench/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# name -> (what it is, the seek_batch keyword arguments)
WORKLOADS = {
    "sweep float32": ("bench_sweep.py's 64 runs, batched (circle, depth 5, width 100, 10 epochs, float32)",
                      dict(kind="sweep", dtype="float32")),
    "sweep float64": ("the same in float64", dict(kind="sweep", dtype="float64")),
    "scale w1000 d0.01": ("scale.py's cell width 1000, density 0.01, 4 runs batched (depth 4, 5 epochs, 2000 "
                          "samples)", dict(kind="scale", width=1000, density=0.01, runs=4)),
    "scale w4000 d0.001": ("scale.py's cell width 4000, density 0.001, 2 runs batched",
                           dict(kind="scale", width=4000, density=0.001, runs=2)),
}

CHILD = r"""
import importlib, json, sys, time
site = sys.argv[1]
if site:
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__module__.lower()
                        and "skbc" not in repr(f)]
    sys.path.insert(0, site)
import plantseek
w = json.loads(sys.argv[2])
seek_mod = importlib.import_module("plantseek.seek")
seek_mod.seek_batch([dict(task="circle", depth=3, width=20, pruner="random", density=0.5, epochs=1, n_samples=200,
                          progress=False, device="cpu")])
if w["kind"] == "sweep":
    kws = [dict(task="circle", depth=5, width=100, pruner=p, density=d, protocol="singleshot", epochs=10, seed=s,
                dtype=w["dtype"], device="cpu", progress=False)
           for p in ["random", "magnitude", "snip", "synflow"] for d in [0.01, 0.1, 0.5, "ticket"] for s in range(4)]
else:
    syn = plantseek.pruners.get("synflow", iterations=1)
    kws = [dict(task="circle", depth=4, width=w["width"], pruner=syn, density=w["density"], protocol="singleshot",
                epochs=5, n_samples=2000, seed=s, device="cpu", progress=False, dense_baseline=False)
           for s in range(w["runs"])]
seek_mod.clear_caches()
t0 = time.perf_counter()
res = seek_mod.seek_batch(kws)
dt = time.perf_counter() - t0
bad = [r for r in res if isinstance(r, BaseException)]
if bad:
    raise bad[0]
keys = ("test_loss", "test_accuracy", "ticket_test_loss", "dense_test_loss", "recall", "precision",
        "functional_recall", "weight_density", "effective_density", "rescale_factor")
metrics = [{k: r.metrics[k] for k in keys if k in r.metrics} for r in res]
print(json.dumps({"seconds": dt, "file": plantseek.__file__, "metrics": metrics}))
"""


def run_once(site: str, workload: dict) -> tuple[float, list]:
    env = {**os.environ, "PLANTSEEK_TRAIN_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, site, json.dumps(workload)], env=env, check=True,
                         capture_output=True, text=True)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    if site and not info["file"].startswith(site):
        raise RuntimeError(f"the base build was not the one imported: {info['file']}")
    return float(info["seconds"]), info["metrics"]


def largest_difference(a: list, b: list) -> float:
    """Largest relative difference of the metrics both builds report (NaN equal to NaN)."""
    worst = 0.0
    for ra, rb in zip(a, b):
        for k in set(ra) & set(rb):
            x, y = ra[k], rb[k]
            if x is None or y is None or (x != x and y != y):
                continue
            worst = max(worst, abs(x - y) / max(abs(x), abs(y), 1e-300))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-site", required=True, help="a directory holding the other build (pip install --target)")
    ap.add_argument("--base-name", default="base", help="what the other build is (a commit)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", help="comma-separated workload names")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(WORKLOADS)
    load = os.getloadavg()
    rows = []
    for name in names:
        doc, w = WORKLOADS[name]
        base, new, diffs = [], [], []
        for i in range(args.repeat):
            order = [("base", args.base_site), ("new", "")] if i % 2 == 0 else [("new", ""), ("base", args.base_site)]
            got = {}
            for which, site in order:
                got[which] = run_once(site, w)
            base.append(got["base"][0])
            new.append(got["new"][0])
            diffs.append(largest_difference(got["base"][1], got["new"][1]))
        ratio = min(new) / min(base)
        rows.append((name, doc, base, new, ratio, max(diffs)))
        print(f"{name}: base {min(base):.2f} s, new {min(new):.2f} s, new/base {ratio:.3f}, metrics within "
              f"{max(diffs):.1e} "
              f"(base {', '.join(f'{t:.2f}' for t in base)}; new {', '.join(f'{t:.2f}' for t in new)})", flush=True)
    if args.no_write:
        return
    import subprocess as sp

    from results import machine, write_section

    head = sp.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = sp.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
    lines = [f"`python bench/redesign_ab.py --base-site ... --base-name {args.base_name} --repeat {args.repeat}` "
             f"on {machine()}; load average at the start {load[0]:.1f} (other jobs may share the cores). This "
             f"checkout: {head}{' with uncommitted changes' if dirty else ''}; base: {args.base_name}. Each time is a "
             f"fresh process on one thread; the two builds alternate; the ratio compares the best of {args.repeat}.",
             "", "| workload | what | base best (s) | new best (s) | new / base | metrics: largest relative "
             "difference | all base (s) | all new (s) |", "|---|---|---:|---:|---:|---:|---|---|"]
    for name, doc, base, new, ratio, diff in rows:
        lines.append(f"| {name} | {doc} | {min(base):.2f} | {min(new):.2f} | **{ratio:.3f}** | {diff:.1e} | "
                     f"{', '.join(f'{t:.2f}' for t in base)} | {', '.join(f'{t:.2f}' for t in new)} |")
    lines += ["", "Metrics compared: test and ticket losses and accuracies, the dense baseline's loss, recall, precision, "
              "functional recall, weight and effective density and the rescale factor of every run, base against new "
              "in each repeat (0 means bitwise equal)."]
    write_section("Redesign: speed against the previous layout", "\n".join(lines))
    print("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
