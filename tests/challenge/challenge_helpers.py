"""Helpers of the challenge tests: a small export's settings, the oracle's masks written as a submission, and a
NumPy-only submission script run in a subprocess."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

import plantseek
from plantseek.challenge import files as cfiles

# circle, depth 3, width 24 (772 parameters), 400 samples, 1 epoch: a run trains in well under a second
SMALL = dict(task="circle", depth=3, width=24, options={"epochs": 1, "n_samples": 400})


def oracle_masks(manifest, run) -> dict[str, np.ndarray]:
    """The planted ticket's mask of `run` under its parameter names (what the test, not the export, can see)."""
    net = plantseek.plant(manifest["task"], width=manifest["width"], depth=manifest["depth"], seed=run.seed,
                          init=manifest["options"]["init"])
    names = cfiles.parameter_names(net.depth)
    parts = [t for wm, bm in net.ticket_mask for t in (wm, bm)]
    return {n: t.numpy().astype(bool) for n, t in zip(names, parts)}


def fitted(masks: dict[str, np.ndarray], keep: int) -> dict[str, np.ndarray]:
    """`masks` made to keep exactly `keep`: the first parameters (in file order) added or dropped."""
    flat = np.concatenate([m.ravel() for m in masks.values()])
    order = np.flatnonzero(~flat) if flat.sum() < keep else np.flatnonzero(flat)[::-1]
    flat[order[:abs(int(flat.sum()) - keep)]] = flat.sum() < keep
    out, start = {}, 0
    for name, m in masks.items():
        out[name] = flat[start:start + m.size].reshape(m.shape)
        start += m.size
    return out


def write_oracle_submission(manifest, out: Path, fmt: str = "safetensors") -> Path:
    """The ticket's masks as a submission, one file per run: the ticket itself at its budget, the ticket with
    parameters added (or dropped) in file order at the other budgets."""
    out.mkdir(parents=True, exist_ok=True)
    for run in manifest.runs:
        cfiles.write_arrays(out / f"{run.id}{cfiles.EXTENSIONS[fmt]}", fitted(oracle_masks(manifest, run), run.keep))
    return out


# a participant's script: NumPy (and safetensors.numpy) only; global magnitude with exact counts, stable ties
NUMPY_SUBMISSION = r"""
import json, pathlib, sys
import numpy as np
export, out, fmt = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]), sys.argv[3]
out.mkdir(parents=True, exist_ok=True)
manifest = json.loads((export / "manifest.json").read_text())
names = [p["name"] for p in manifest["parameters"]]
for run in manifest["runs"]:
    path = export / run["network"]
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file
        params = load_file(str(path))
    else:
        with np.load(path) as z:
            params = {k: z[k] for k in z.files}
    scores = np.concatenate([np.abs(params[n]).ravel() for n in names])
    keep = np.zeros(scores.size, dtype=np.uint8)
    keep[np.argsort(-scores, kind="stable")[:run["keep"]]] = 1
    masks, start = {}, 0
    for n in names:
        size = params[n].size
        masks[n] = keep[start:start + size].reshape(params[n].shape)
        start += size
    if fmt == "safetensors":
        from safetensors.numpy import save_file
        save_file({k: v.astype(bool) for k, v in masks.items()}, str(out / (run["id"] + ".safetensors")))
    else:
        np.savez(out / (run["id"] + ".npz"), **masks)
assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "the participant imported torch"
"""


def numpy_submission(export: Path, out: Path, fmt: str = "safetensors") -> Path:
    """Run the NumPy-only script in a fresh interpreter (`python -c`); it asserts that torch never loaded."""
    proc = subprocess.run([sys.executable, "-c", NUMPY_SUBMISSION, str(export), str(out), fmt],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return out
