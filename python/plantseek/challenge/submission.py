"""Reading a submission: one mask file per run of the manifest, every problem of every run collected before
anything is scored (so a bad submission writes nothing).

A mask file is ``<run id>.safetensors`` or ``<run id>.npz`` holding one bool (or uint8 0/1) array per
parameter, under the parameter's name (`plantseek.mask_io.parameter_names`), with its shape, keeping
exactly the run's ``keep`` count of parameters in all. This module imports NumPy only."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import files as _files
from .manifest import ChallengeError, Manifest


def _describe(a: np.ndarray) -> str:
    text = str(a.dtype)
    if a.dtype.kind in "fc":
        nan = int(np.isnan(a).sum())
        if nan:
            text += f" with {nan} NaN"
    return text


def check_mask(arrays: dict, manifest: Manifest, keep: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """The run's masks as bool arrays, and the problems found (empty when the masks are good)."""
    problems: list[str] = []
    expected = manifest.parameters
    names = [n for n, _ in expected]
    missing = [n for n in names if n not in arrays]
    extra = sorted(set(arrays) - set(names))
    if missing:
        problems.append(f"missing array(s) {', '.join(missing)}")
    if extra:
        problems.append(f"unexpected array(s) {', '.join(extra)} (the arrays are named {names[0]}, {names[1]}, ...)")
    out: dict[str, np.ndarray] = {}
    for name, shape in expected:
        if name not in arrays:
            continue
        a = arrays[name]
        if tuple(a.shape) != shape:
            problems.append(f"{name} has shape {tuple(a.shape)}, expected {shape}")
            continue
        if a.dtype == np.bool_:
            out[name] = a.astype(bool, copy=False)
        elif a.dtype == np.uint8:
            bad = int(((a != 0) & (a != 1)).sum())
            if bad:
                problems.append(f"{name} is uint8 with {bad} value(s) other than 0 and 1 (e.g. {int(a[(a > 1)].flat[0])})")
                continue
            out[name] = a.astype(bool)
        else:
            problems.append(f"{name} is {_describe(a)}; masks must be bool, or uint8 holding 0 and 1")
    if not problems:
        kept = int(sum(int(m.sum()) for m in out.values()))
        if kept != keep:
            total = int(sum(m.size for m in out.values()))
            budget = keep / total if total else float("nan")
            problems.append(f"keeps {kept} of {total} parameters; the run's budget is exactly {keep} "
                            f"(density {budget:.6g}, weights and biases together)")
    return out, problems


def _file_of(directory: Path, run_id: str) -> tuple[Path | None, str | None]:
    found = [directory / f"{run_id}{ext}" for ext in _files.EXTENSIONS.values()
             if (directory / f"{run_id}{ext}").is_file()]
    if not found:
        return None, f"no mask file (expected {run_id}.safetensors or {run_id}.npz in {str(directory)!r})"
    if len(found) > 1:
        return None, f"two mask files ({', '.join(p.name for p in found)}); keep one"
    return found[0], None


def read(submission: str | os.PathLike, manifest: Manifest) -> dict[str, dict[str, np.ndarray]]:
    """run id -> {parameter name -> bool array} for every run of `manifest`; a `ChallengeError` listing every
    problem (``run <id> (<file>): <problem>``, one per line) when any run is missing or bad."""
    directory = Path(submission)
    if not directory.is_dir():
        raise ChallengeError(f"submission {str(directory)!r} is not a directory (it holds one mask file per run)"
                             if directory.exists() else f"submission directory {str(directory)!r} does not exist")
    problems: list[str] = []
    masks: dict[str, dict[str, np.ndarray]] = {}
    runs = manifest.runs
    for run in runs:
        path, why = _file_of(directory, run.id)
        if path is None:
            problems.append(f"run {run.id}: {why}")
            continue
        try:
            arrays = _files.read_arrays(path)
        except (OSError, ValueError) as exc:
            problems.append(f"run {run.id} ({path.name}): cannot be read: {exc}")
            continue
        good, bad = check_mask(arrays, manifest, run.keep)
        problems += [f"run {run.id} ({path.name}): {p}" for p in bad]
        if not bad:
            masks[run.id] = good
    known = {r.id for r in runs}
    strays = sorted(p.name for p in directory.iterdir()
                    if p.suffix.lower() in _files.EXTENSIONS.values() and p.stem not in known)
    if strays:
        problems.append(f"mask file(s) for no run of the export: {', '.join(strays)} (its runs: "
                        f"{', '.join(r.id for r in runs)})")
    if problems:
        raise ChallengeError(f"submission {str(directory)!r} cannot be scored ({len(problems)} problem"
                             f"{'s' if len(problems) > 1 else ''}; nothing was written):\n  " + "\n  ".join(problems))
    return masks
