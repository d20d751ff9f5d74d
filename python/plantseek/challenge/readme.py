"""The README.md of an export: what the files hold, how to submit, and the runs with their budgets."""
from __future__ import annotations

from typing import Any, Mapping

LOAD = {"safetensors": ("from safetensors.numpy import load_file, save_file",
                        'params = load_file(export / run["network"])',
                        'save_file(masks, out / (run["id"] + ".safetensors"))'),
        "npz": ("",
                'with np.load(export / run["network"]) as z:\n        params = dict(z)',
                'np.savez(out / (run["id"] + ".npz"), **masks)')}

EXAMPLE = """\
import json, pathlib
import numpy as np
{imports}
export, out = pathlib.Path("."), pathlib.Path("submission")
out.mkdir(exist_ok=True)
manifest = json.loads((export / "manifest.json").read_text())
names = [p["name"] for p in manifest["parameters"]]   # layers.0.weight, layers.0.bias, ...
for run in manifest["runs"]:
    {load}
    scores = np.concatenate([np.abs(params[n]).ravel() for n in names])
    keep = np.zeros(scores.size, dtype=bool)
    keep[np.argsort(-scores, kind="stable")[:run["keep"]]] = True   # exactly run["keep"] ones
    masks, start = {{}}, 0
    for n in names:
        masks[n] = keep[start:start + params[n].size].reshape(params[n].shape)
        start += params[n].size
    {save}
"""


def example(fmt: str) -> str:
    """A NumPy-only submission script (global magnitude) for an export in `fmt`, run from the export directory."""
    imports, load, save = LOAD[fmt]
    return EXAMPLE.format(imports=imports, load=load, save=save).replace("np\n\nexport", "np\nexport")


def readme_text(manifest: Mapping[str, Any]) -> str:
    m = manifest
    ext = ".safetensors" if m["file_format"] == "safetensors" else ".npz"
    opts = ", ".join(f"{k}={v}" for k, v in m["options"].items())
    rows = "\n".join(f"| {r['id']} | {r['seed']} | {r['density']} | {r['budget']:.6g} | {r['keep']} |"
                     for r in m["runs"])
    params = "\n".join(f"- `{p['name']}`: shape {tuple(p['shape'])}" for p in m["parameters"])
    return f"""# plantseek challenge: {m['task']}, depth {m['depth']}, width {m['width']}, protocol {m['protocol']}

Written by plantseek {m['plantseek_version']}. Each seed's planted network hides a sparse ticket that solves
the task ({m['kind']}); find it. Layer sizes {m['layer_sizes']}; {m['mask_rules']['prunable']} prunable
parameters (weights and biases).

## The files

- `seed<S>/network{ext}`: the planted network's parameters, float64, PyTorch layout: `layers.<i>.weight` is
  (out, in), the layer computes `x @ W.T + b`, a ReLU follows every layer but the last.
- `seed<S>/data{ext}`: `x_train`, `y_train`, `x_prune`, `y_prune` (the first training samples: the set
  plantseek's own pruners score on), `x_test`, `y_test` ({'labels int64' if m['kind'] == 'classification'
  else 'float64 targets'}).
- `manifest.json`: task, shape, protocol and its options, the runs, and the SHA-256 of every file.

Nothing here holds the ticket's mask, the output scale of the planted network or anything else of the
planting: the network is exactly what plantseek's own pruners are handed.

Options every run is scored with: {opts}.

## Submitting

One mask file per run, named `<run id>.safetensors` or `<run id>.npz`, all in one directory. Each file holds
one array per parameter, under the parameter's name, with its shape:

{params}

The arrays are `bool` (or `uint8` 0/1), True = keep, and together keep exactly the run's `keep` count of
parameters (weights and biases together; scope global): no more, no fewer. A missing run, an extra or missing
array, another shape or dtype, a value other than 0/1, NaN or another count is refused with the run and the
problem named, before anything is written to the database.

Under `singleshot` the scorer trains the kept weights from their planted values, exactly as plantseek
trains its own pruners' masks; under `strong` the kept weights keep their planted values and the output is
read through a scale fitted on the training data. So a mask is all a submission holds.

| run id | seed | density | budget (number) | keep |
|---|---|---|---|---|
{rows}

A NumPy-only submission (global magnitude, for illustration), run from this directory:

```python
{example(m['file_format'])}```

## Scoring

    plantseek challenge score EXPORT_DIR SUBMISSION_DIR --db results.db --name my-pruner

rebuilds each hidden ticket from its seed, runs the protocol and writes the same metrics as a native run into
the results database, with `my-pruner` as the pruner; `plantseek results results.db` and `plantseek report`
read them beside plantseek's own pruners.
"""
