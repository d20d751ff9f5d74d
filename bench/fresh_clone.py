"""What a new user waits for: a fresh clone of HEAD, then `make install`, `make test` and `make demo`, each timed.

Writes the section "Fresh clone" of bench/RESULTS.md (the README's set-up times point there).

    python bench/fresh_clone.py [--keep DIR]
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results import write_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STEPS = [("make install", ["make", "install"]), ("make test", ["make", "test"]), ("make demo", ["make", "demo"])]


def timed(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return time.perf_counter() - t0, p.returncode, p.stdout


def minutes(s: float) -> str:
    return f"{int(s // 60)} min {s % 60:.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", help="clone into this directory and keep it")
    args = ap.parse_args()
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(args.keep or Path(tmp) / "plantseek")
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        rows = []
        for name, cmd in STEPS:
            load = os.getloadavg()[0]
            dt, rc, out = timed(cmd, clone)
            note = ""
            if name == "make test":
                m = re.findall(r"^(\d+ passed.*?) in [\d.]+s", out, re.M)
                note = m[-1] if m else ""
            if name == "make demo":
                m = re.findall(r"(\d+) runs in the sweep: .*?\((\d+) ok, (\d+) failed\)", out)
                note = f"{m[-1][0]} runs, {m[-1][1]} ok" if m else ""
            rows.append((name, dt, rc, load, note))
            print(f"{name}: {minutes(dt)} (exit {rc}) {note}", flush=True)
            if rc != 0:
                print(out[-3000:])
                break
    import platform

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    lines = [f"Machine: {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"{time.strftime('%Y-%m-%d')}; a fresh `git clone` of {head}. Written by `python bench/fresh_clone.py`.",
             "", "| step | wall time | exit | load average before | |", "|---|---:|---:|---:|---|"]
    lines += [f"| `{n}` | {minutes(dt)} | {rc} | {load:.1f} | {note} |" for n, dt, rc, load, note in rows]
    lines += ["", "`make install` creates .venv, installs the CPU build of PyTorch from this machine's disk and "
              "builds the C++ and CUDA modules; `make test` is what `.ci/run` calls; `make demo` runs "
              "`plantseek reproduce paper --scale small` and writes the report."]
    body = "\n".join(lines)
    print(body)
    write_section("Fresh clone", body)


if __name__ == "__main__":
    main()
