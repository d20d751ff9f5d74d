"""`make gpu-check` (bench/gpu_check.py): skips cleanly without a CUDA device and fits in 10 minutes."""
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_skips_cleanly_without_a_cuda_device(tmp_path):
    results = tmp_path / "RESULTS-cuda.md"
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--results", str(results)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "no CUDA device: gpu-check skipped" in proc.stdout
    assert not results.exists()


def test_steps_fit_in_ten_minutes():
    mod = _module()
    limits = [limit for _, limit, _ in mod.STEPS]
    assert all(0 < limit for limit in limits)
    assert sum(limits) <= mod.TOTAL_BUDGET_S < 600
    names = [name for name, _, _ in mod.STEPS]
    assert names[0] == "build" and any(n.startswith("tests") for n in names) and any(n.startswith("bench") for n in names)
    # every benchmark runs on CUDA without touching bench/RESULTS.md, with per-cell limits inside its step's
    for name, limit, cmd in mod.STEPS:
        if "bench/scale.py" in cmd:
            assert "--no-write" in cmd and cmd[cmd.index("--device") + 1] == "cuda"
            assert float(cmd[cmd.index("--timeout") + 1]) < limit


def test_plan_lists_the_steps():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--plan"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "in all (deadline" in proc.stdout and "pytest" in proc.stdout
