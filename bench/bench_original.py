"""The README setting against the paper's original code, measured in the same run (issue 18: at least 30x).

The setting: circle, 4 layers of width 50 (the original's ``--depth 5`` counts the input layer), SynFlow with one
scoring iteration, density 0.1, singleshot, 10 epochs of Adam (lr 1e-3, batch 32), the paper's protocol
(``rescale="none"``: the original has no rescale), one run per seed. The original code
(https://github.com/RelationalML/PlantNSeek, its Synaptic-Flow-Extended/main.py) runs one configuration per
process, so its runs go as processes: one at a time (as the issue first measured it), and `--jobs` at a time
with one thread each (on a 2-core machine two at a time is the best a user of it can do); plantseek runs them as one `plantseek.seek_batch` in one process (start-up and
import included, as for the original's processes).

Nothing of the original is copied here: pass a checkout with --original. It runs on this machine's PyTorch as it
is, except for two imports it never uses on these tasks, which are stubbed in its process at start-up
(torchvision, for the image datasets, and Experiments.theory, which its repository lacks).

    python bench/bench_original.py --original /path/to/PlantNSeek            # 16 runs, writes the RESULTS section
    python bench/bench_original.py --original /path/to/PlantNSeek --runs 4 --no-write
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
HEADING = "Against the original code"

# stubs for the two modules the original imports but never uses for the planted tasks, then its main.py
STUBS = """
import runpy, sys, types
tv = types.ModuleType("torchvision")
tv.datasets, tv.transforms = types.ModuleType("torchvision.datasets"), types.ModuleType("torchvision.transforms")
sys.modules.update({"torchvision": tv, "torchvision.datasets": tv.datasets, "torchvision.transforms": tv.transforms})
theory = types.ModuleType("Experiments.theory")
sys.modules["Experiments.theory"] = theory
for name in ("unit_conservation", "layer_conservation", "imp_conservation", "schedule_conservation"):
    mod = types.ModuleType("Experiments.theory." + name)
    setattr(theory, name, mod)
    sys.modules[mod.__name__] = mod
sys.argv = ["main.py"] + sys.argv[1:]
runpy.run_path("main.py", run_name="__main__")
"""

SETTING = dict(task="circle", depth=4, width=50, pruner="synflow", pruner_options={"iterations": 1}, density=0.1,
               protocol="singleshot", epochs=10, rescale="none")


def original_args(seed: int, out: str) -> list[str]:
    """The original's command line for the setting (its README's example at our depth 4)."""
    return ["--dataset", "circle", "--model", "planted-model", "--model-class", "lottery", "--train-batch-size", "32",
            "--test-batch-size", "512", "--pruner", "synflow", "--prune-epochs", "1", "--prune-bias", "True",
            "--no-cuda", "--post-epochs", "10", "--sparsity", "0.1", "--lr", "0.001", "--optimizer", "adam",
            "--result-dir", out, "--depth", "5", "--width", "50", "--seed", str(seed), "--exp-suffix", f"s{seed}"]


def run_original(root: Path, runs: int, jobs: int, out: str) -> tuple[float, list[float]]:
    """(wall seconds for all runs, seconds per process) of the original, `jobs` processes at a time."""
    code = root / "Synaptic-Flow-Extended"
    if not (code / "main.py").exists():
        raise SystemExit(f"{root} is not a checkout of RelationalML/PlantNSeek (no Synaptic-Flow-Extended/main.py)")
    env = dict(os.environ, PYTHONPATH=f"{root / 'plant_lottery_tickets'}{os.pathsep}{code}",
               OMP_NUM_THREADS="1" if jobs > 1 else os.environ.get("OMP_NUM_THREADS", ""))
    if not env["OMP_NUM_THREADS"]:
        env.pop("OMP_NUM_THREADS")

    def one(seed: int) -> float:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", STUBS, *original_args(seed, out)], cwd=code, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"the original failed (seed {seed}):\n{done.stderr[-2000:]}")
        return time.perf_counter() - t0

    t0 = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        each = list(pool.map(one, range(runs)))
    return time.perf_counter() - t0, each


def run_plantseek(runs: int) -> float:
    """Wall seconds of one process running the runs as one `seek_batch` (start-up included)."""
    code = ("import plantseek\n"
            f"out = plantseek.seek_batch([dict({SETTING!r}, seed=s, progress=False) for s in range({runs})])\n"
            "bad = [o for o in out if isinstance(o, BaseException)]\n"
            "assert not bad, bad[:1]\n")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--original", required=True, help="a checkout of https://github.com/RelationalML/PlantNSeek")
    ap.add_argument("--runs", type=int, default=16)
    ap.add_argument("--jobs", default="1,2",
                    help="comma-separated: original processes at a time (one thread each when > 1), a row each")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    import tempfile

    load = os.getloadavg()
    ours = run_plantseek(args.runs)
    print(f"plantseek: {args.runs} runs in {ours:.1f} s (one process)", flush=True)
    rows = []
    for jobs in [int(j) for j in args.jobs.split(",")]:
        with tempfile.TemporaryDirectory() as out:
            theirs, each = run_original(Path(args.original).resolve(), args.runs, jobs, out)
        rows.append((jobs, theirs, sum(each) / len(each)))
        print(f"original: {args.runs} runs in {theirs:.1f} s ({jobs} processes at a time, {rows[-1][2]:.1f} s a "
              f"process); plantseek {theirs / ours:.1f}x faster", flush=True)
    if args.no_write:
        return
    from results import machine, write_section

    body = "\n".join([
        f"Machine: {machine()}; load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}. Written by "
        f"`python bench/bench_original.py --original <checkout> --runs {args.runs} --jobs {args.jobs}`.",
        "",
        "The README setting (circle, depth 4, width 50, SynFlow with 1 iteration, density 0.1, singleshot, 10 "
        "epochs, the paper's protocol), one run per seed, against the paper's original code (RelationalML/"
        "PlantNSeek, Synaptic-Flow-Extended/main.py) on the same machine in the same run. The original runs one "
        "configuration per process: one at a time on every thread, or several at a time with one thread each; "
        "plantseek runs them as one `seek_batch` in one process on every thread. Both include their start-up.",
        "",
        "| runs | original processes at a time | original s (all) | original s a process | plantseek s (all) | "
        "plantseek faster |",
        "|---:|---:|---:|---:|---:|---:|",
        *[f"| {args.runs} | {jobs} | {theirs:.1f} | {per:.1f} | {ours:.1f} | {theirs / ours:.1f}x |"
          for jobs, theirs, per in rows],
    ])
    print(body)
    write_section(HEADING, body)


if __name__ == "__main__":
    main()
