"""`make gpu-check`: on a machine with an NVIDIA GPU, build the CUDA module, run every CUDA test and the short GPU
benchmarks, and write bench/RESULTS-cuda.md, all within TOTAL_BUDGET_S (under 10 minutes). Without a visible
CUDA device it prints "no CUDA device: gpu-check skipped" and exits 0, writing nothing.

    python3 bench/gpu_check.py             # what `make gpu-check` runs (with .venv/bin/python when it exists)
    python3 bench/gpu_check.py --plan      # print the steps and their time limits, run nothing

It uses the interpreter that runs it (on a bare GPU machine: the system python3 that holds PyTorch); when
`plantseek._C_cuda` does not load there it installs the checkout with
`python -m pip install --no-build-isolation --no-deps --no-index .` (needs scikit-build-core, pybind11, cmake
and ninja in that interpreter; no network). Every step has its own time limit and the whole run a deadline;
the results file is rewritten after each step, so a step that hangs still leaves what finished before it.
The exit status is 0 when every step passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "RESULTS-cuda.md"
SKIP_MESSAGE = "no CUDA device: gpu-check skipped"

# the whole check's deadline (seconds); each step's limit is also cut to what is left of it
TOTAL_BUDGET_S = 500
# files whose tests need (or change behaviour with) a GPU, beyond those marked `cuda`
GPU_TEST_FILES = ["tests/test_sweep_gpu_workers.py", "tests/test_device.py"]
SCALE = ["bench/scale.py", "--device", "cuda", "--no-write", "--repeat", "1", "--epochs", "5"]

# (name, time limit in seconds, what it runs); "{py}" is the interpreter running this script
STEPS: list[tuple[str, int, list[str]]] = [
    ("build", 150, ["{py}", "-m", "pip", "install", "-q", "--no-build-isolation", "--no-deps", "--no-index", "."]),
    ("info", 15, ["{py}", "-m", "plantseek", "info"]),
    ("tests: pytest -m cuda", 70, ["{py}", "-m", "pytest", "tests", "-m", "cuda", "-p", "no:cacheprovider",
                                   "-rs"]),
    ("tests: GPU files", 60, ["{py}", "-m", "pytest", *GPU_TEST_FILES, "-p", "no:cacheprovider", "-rs"]),
    # must-show: width 4000 depth 5 and width 10000 depth 4 at density 1e-4, one run each (plus one small cell)
    ("bench: scale must-show", 50, ["{py}", *SCALE, "--widths", "1000", "--densities", "1e-4", "--runs", "1000:1",
                                    "--dense-widths", "", "--timeout", "20"]),
    ("bench: scale width 1000 (auto vs dense)", 40, ["{py}", *SCALE, "--no-must-show", "--widths", "1000",
                                                      "--densities", "1e-3,1e-4", "--timeout", "12"]),
    ("bench: scale widths 4000, 10000 (auto)", 50, ["{py}", *SCALE, "--no-must-show", "--widths", "4000,10000",
                                                     "--densities", "1e-3,1e-4", "--runs", "4000:8,10000:2",
                                                     "--dense-widths", "", "--timeout", "15"]),
    ("bench: scale sparse path", 40, ["{py}", *SCALE, "--no-must-show", "--impl", "sparse", "--widths",
                                      "1000,4000", "--densities", "1e-2,1e-4", "--dense-widths", "",
                                      "--timeout", "12"]),
]


def cuda_visible() -> tuple[bool, str]:
    """(True, "") when nvidia-smi lists a GPU and torch sees it; else (False, why)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False, "nvidia-smi not found"
    try:
        p = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nvidia-smi -L failed: {exc}"
    if p.returncode != 0 or "GPU" not in p.stdout:
        return False, f"nvidia-smi -L: exit {p.returncode}"
    try:
        import torch
    except ImportError:
        return False, "torch is not installed in " + sys.executable
    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False"
    return True, ""


def _out(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (p.stdout or p.stderr).strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({exc})"


def machine() -> list[str]:
    import platform

    import torch

    smi = _out(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    nvcc = _out(["nvcc", "--version"]).splitlines()
    return [
        f"- GPU (nvidia-smi): {smi}",
        f"- torch {torch.__version__}, CUDA (torch) {torch.version.cuda}, device 0: {torch.cuda.get_device_name(0)}"
        f" (capability {'.'.join(map(str, torch.cuda.get_device_capability(0)))})",
        f"- nvcc: {nvcc[-1] if nvcc else 'not found'}",
        f"- Python {platform.python_version()} ({sys.executable}), {os.cpu_count()} CPU cores, {platform.platform()}",
    ]


def cuda_module_loads(py: str) -> tuple[bool, str]:
    """Whether plantseek._C_cuda loads in a fresh interpreter (and the error when not)."""
    code = ("import plantseek.native as n; i = n.info(); "
            "print('OK' if i['cuda'] else 'NO', i['cuda_error'] or i['cpu_error'] or '')")
    try:
        p = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    except subprocess.TimeoutExpired:
        return False, "timed out"
    err = p.stderr.strip().splitlines()
    text = p.stdout.strip() or (err[-1] if err else f"exit {p.returncode}")
    return text.startswith("OK"), text


def run_step(cmd: list[str], limit: float) -> tuple[str, float, str]:
    """Runs cmd in its own process group; returns (status, seconds, output). Status: passed, failed, timed out."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=limit)
        status = "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, _ = proc.communicate()
        status = f"timed out after {limit:.0f} s"
    return status, time.perf_counter() - t0, out or ""


def summarize(name: str, out: str) -> str:
    """The part of a step's output that goes into the results file."""
    lines = out.rstrip().splitlines()
    if name.startswith("tests"):
        counts = [l for l in lines if re.search(r"\d+ (passed|failed|skipped|error|deselected)", l)]
        return "\n".join(([f"**{counts[-1].strip(' =')}**", ""] if counts else []) + ["```"] + lines[-40:] + ["```"])
    if name.startswith("bench"):
        start = next((i for i, l in enumerate(lines) if l.startswith("`python bench/scale.py")), None)
        if start is not None:
            return "\n".join(lines[start:])
    return "\n".join(["```"] + lines[-30:] + ["```"])


def write(path: Path, header: list[str], sections: list[str], done: bool) -> None:
    state = "finished" if done else "in progress (a step that hangs or the deadline leaves the file here)"
    path.write_text("\n".join(header + [f"State: {state}.", ""] + sections) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", action="store_true", help="print the steps and their limits, run nothing")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where to write the results (bench/RESULTS-cuda.md)")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the steps (default: this one)")
    args = ap.parse_args(argv)
    if args.plan:
        for name, limit, cmd in STEPS:
            print(f"{limit:4d} s  {name}: {' '.join(c.replace('{py}', 'python') for c in cmd)}")
        print(f"{sum(l for _, l, _ in STEPS):4d} s  in all (deadline {TOTAL_BUDGET_S} s)")
        return 0
    ok, why = cuda_visible()
    if not ok:
        print(f"{SKIP_MESSAGE} ({why})", flush=True)
        return 0

    started = time.perf_counter()
    deadline = started + TOTAL_BUDGET_S
    if shutil.which("nvcc") is None and Path("/usr/local/cuda/bin/nvcc").exists():
        os.environ["PATH"] = "/usr/local/cuda/bin" + os.pathsep + os.environ.get("PATH", "")
    header = [
        "# plantseek on CUDA: `make gpu-check`",
        "",
        f"Written by `bench/gpu_check.py` on {time.strftime('%Y-%m-%d %H:%M %Z')}; deadline {TOTAL_BUDGET_S} s.",
        "",
        "## Machine",
        "",
        *machine(),
        "",
    ]
    sections: list[str] = []
    summary: list[str] = []
    failed = False
    print("\n".join(header), flush=True)
    for name, limit, cmd in STEPS:
        cmd = [args.python if c == "{py}" else c for c in cmd]
        left = deadline - time.perf_counter()
        if name == "build":
            loaded, why = cuda_module_loads(args.python)
            if loaded:
                summary.append(f"| {name} | skipped: plantseek._C_cuda already loads | 0 s |")
                sections += [f"## {name}", "", "plantseek._C_cuda already loads; nothing rebuilt.", ""]
                write(args.results, header, ["## Steps", "", "| step | outcome | time |", "|---|---|---|", *summary,
                                             "", *sections], False)
                continue
            print(f"plantseek._C_cuda does not load ({why}): installing the checkout", flush=True)
        if left < 5:
            status, secs, out = "not run: the deadline was reached", 0.0, ""
        else:
            print(f"== {name} (limit {min(limit, left):.0f} s): {' '.join(cmd)}", flush=True)
            status, secs, out = run_step(cmd, min(limit, left))
        if name == "build" and status == "passed":
            loaded, why = cuda_module_loads(args.python)
            if not loaded:
                status = f"failed: plantseek._C_cuda still does not load ({why})"
        failed |= status != "passed"
        print(out.rstrip()[-4000:], flush=True)
        print(f"== {name}: {status} in {secs:.0f} s", flush=True)
        summary.append(f"| {name} | {status} | {secs:.0f} s |")
        sections += [f"## {name}", "", f"`{' '.join(c if c else repr(c) for c in cmd)}`: {status} in {secs:.0f} s.",
                     "", summarize(name, out), ""]
        write(args.results, header, ["## Steps", "", "| step | outcome | time |", "|---|---|---|", *summary, "",
                                     *sections], False)
    total = time.perf_counter() - started
    summary.append(f"| all | {'every step passed' if not failed else 'some steps did not pass'} | {total:.0f} s |")
    write(args.results, header, ["## Steps", "", "| step | outcome | time |", "|---|---|---|", *summary, "",
                                 *sections], True)
    print(f"gpu-check: {'passed' if not failed else 'FAILED'} in {total:.0f} s; wrote {args.results}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
