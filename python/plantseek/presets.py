"""Preset sweeps: ``plantseek reproduce paper --scale small|full``.

The paper's experiments (DESIGN.md, "The paper's experiments"; Fischer & Burkholz, ICLR 2022): tasks relu,
circle and helix; width 100; the paper's depths 3, 5 and 10, which are our depths 2, 4 and 9 (we count linear
layers, the paper counts neuron layers including the input); densities 0.01, 0.1, 0.5, 1 and the planted
ticket's own; 10 000 samples with a 90/10 split and noise 0.01; 40 pruning samples.

- singleshot (weak tickets): random, magnitude, SNIP, GraSP, SynFlow (one round, as in the paper's main
  runs) and the ticket oracle; Adam, lr 1e-3, batch 32, 10 epochs; 25 seeds.
- multishot (weak tickets): the same pruners, 10 rounds of 5 epochs with rewinding, then 10 epochs; 10 seeds.
- strong (mask only): edge-popup and edge-popup with annealed density (SGD lr 0.1, momentum 0.9, weight decay
  5e-4, cosine schedule, batch 32, 10 epochs), and the pruners above scored the same way (as the paper did).
- weak protocols train after the function-preserving rescale (``rescale = "fit"``, `plantseek.rescale`);
  the paper's protocol (``rescale = "none"``) runs beside it: for every weak pruner at ``full`` scale, for the
  ticket oracle at ``small`` scale, so that both readings are in the report.
- extensions (beyond the paper; `plantseek.during_training`): gradual magnitude pruning, SET and RigL over the
  paper's densities below 1, with the ticket oracle under each; 10 seeds (``full``), one (``small``).
- extras (``full`` only): circle at depth 5 (paper depth 6) and width 1000; SynFlow with 100 rounds; label
  and target noise 0, 0.001, 0.1.

``small`` keeps the structure (every task, protocol and pruner, the paper's main depth 4 and its densities)
with fewer seeds (5), fewer epochs (edge-popup trains its scores 5 epochs, not 10) and fewer samples so that it finishes in minutes on a laptop CPU; ``make demo``
runs it. Its sweep file is written next to the report, so what ran is always on record.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["SCALES", "paper_sweep_toml", "reproduce_paper"]

TASKS = ["relu", "circle", "helix"]
DENSITIES = [0.01, 0.1, 0.5, 1.0, "ticket"]
WEAK_PRUNERS = ["random", "magnitude", "snip", "grasp", {"name": "synflow", "iterations": 1}]
STRONG_PRUNERS = ["edge-popup", "edge-popup-annealed", "random", "magnitude", "snip", "grasp",
                  {"name": "synflow", "iterations": 1}]
# the ticket oracle returns the planted mask whatever the density asked: it runs once, at the ticket's density

# what differs between the scales; every other setting is the paper's
SCALES: dict[str, dict[str, Any]] = {
    "full": {
        "depths": [2, 4, 9],
        "width": 100,
        "samples": 10_000,
        "singleshot": {"seeds": 25, "epochs": 10},
        "multishot": {"seeds": 10, "epochs": 10, "rounds": 10, "round_epochs": 5},
        "strong": {"seeds": 10, "epochs": 10, "score_epochs": 10},
        "extensions": {"seeds": 10, "epochs": 10},
        "extras": True,
    },
    "small": {
        "depths": [4],
        "width": 100,
        "samples": 5_000,
        "singleshot": {"seeds": 5, "epochs": 10},
        "multishot": {"seeds": 5, "epochs": 5, "rounds": 4, "round_epochs": 1},
        "strong": {"seeds": 5, "epochs": 10, "score_epochs": 5},
        "extensions": {"seeds": 1, "epochs": 10},
        "extras": False,
    },
}

# the paper's optimiser settings for weight training (option names of plantseek.seek); edge-popup's score
# training (SGD, lr 0.1, momentum 0.9, weight decay 5e-4, cosine) is the edge-popup pruner's default
WEAK_TRAINING = {"optimizer": "adam", "lr": 1e-3, "batch_size": 32}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {v!r} to TOML")


def _table(header: str, items: dict[str, Any], comment: str = "") -> str:
    lines = [f"# {c}" for c in comment.splitlines()] if comment else []
    lines.append(header)
    for k, v in items.items():
        if k == "seeds" and isinstance(v, int):
            v = {"start": 0, "count": v}
        lines.append(f"{k} = {_toml_value(v)}")
    return "\n".join(lines) + "\n"


def _experiment(parts: list[str], items: dict[str, Any], comment: str = "", paper_protocol: str = "") -> None:
    """An experiment, and beside it the ticket oracle under the same settings at the ticket's density.

    Weak experiments also run the paper's protocol (``rescale = "none"``): for the oracle only
    (``paper_protocol="oracle"``, the small scale) or for every pruner (``"all"``, the full scale)."""
    parts.append(_table("[[experiment]]", items, comment))
    oracle = {**items, "name": items["name"] + "-ticket", "pruners": ["ticket"], "densities": ["ticket"]}
    parts.append(_table("[[experiment]]", oracle))
    if paper_protocol == "all":
        parts.append(_table("[[experiment]]", {**items, "name": items["name"] + "-paper-protocol", "rescale": "none"},
                            "The same, under the paper's protocol (no rescale before training)."))
    if paper_protocol in ("all", "oracle"):
        parts.append(_table("[[experiment]]", {**oracle, "name": oracle["name"] + "-paper-protocol", "rescale": "none"}))


def paper_sweep_toml(scale: str = "small") -> str:
    """The sweep file of the paper's experiments at the given scale."""
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; allowed: {', '.join(SCALES)}")
    s = SCALES[scale]
    paper_depths = ", ".join(str(d + 1) for d in s["depths"])
    parts = [
        f"# plantseek reproduce paper --scale {scale}\n"
        f"# Plant 'n' Seek (Fischer & Burkholz, ICLR 2022). Depth counts linear layers here: our depths "
        f"{s['depths']} are the paper's depths {paper_depths}.\n"
        f"# Densities count weights and biases; \"ticket\" is the planted ticket's own density.\n",
        _table("[sweep]", {
            "name": f"paper-{scale}",
            "description": f"The paper's singleshot, multishot and strong-ticket experiments, and sparsity during "
                           f"training ({scale} scale)",
            "tasks": TASKS, "depth": s["depths"], "width": s["width"], "densities": DENSITIES,
            "n_samples": s["samples"], "noise": 0.01, "pruning_samples": 40,
        }),
    ]
    ss, ms, st = s["singleshot"], s["multishot"], s["strong"]
    paper = "all" if s["extras"] else "oracle"
    _experiment(parts, {
        "name": "singleshot", "protocol": "singleshot", "pruners": WEAK_PRUNERS, **ss, **WEAK_TRAINING,
    }, "Weak tickets, pruned once at initialisation, then trained (Adam) after the function-preserving rescale.",
        paper)
    _experiment(parts, {
        "name": "multishot", "protocol": "multishot", "pruners": WEAK_PRUNERS, **ms, **WEAK_TRAINING,
    }, "Weak tickets, rounds of train / prune to density^(r/R) / rewind; magnitude + multishot is IMP.", paper)
    st = dict(st)
    score_epochs = st.pop("score_epochs")
    strong_pruners = [p if not p.startswith("edge-popup") or score_epochs == 10 else {"name": p, "epochs": score_epochs}
                      for p in STRONG_PRUNERS if isinstance(p, str)] + [p for p in STRONG_PRUNERS if not isinstance(p, str)]
    _experiment(parts, {
        "name": "strong", "protocol": "strong", "pruners": strong_pruners, **st,
    }, "Strong tickets: a mask only; outputs read through a scale fitted on training data. Edge-popup trains its\n"
       "scores with the paper's SGD settings (lr 0.1, momentum 0.9, weight decay 5e-4, cosine, batch 32).")
    ext = s["extensions"]
    during = {"densities": [d for d in DENSITIES if d != 1.0], "seeds": ext["seeds"], "epochs": ext["epochs"],
              **WEAK_TRAINING}
    _experiment(parts, {"name": "gradual", "protocol": "gradual", "pruners": ["magnitude"], **during},
                "Extension (beyond the paper): sparsity during training. Gradual magnitude pruning on Zhu & Gupta's\n"
                "cubic schedule from dense, every 100 steps until 3/4 of training (plantseek.during_training).")
    _experiment(parts, {"name": "set", "protocol": "dynamic", "grow": "random", "pruners": ["random"], **during},
                "Extension: SET, sparse from a random mask; drop by magnitude, regrow at random.")
    _experiment(parts, {"name": "rigl", "protocol": "dynamic", "grow": "gradient", "pruners": ["random"], **during},
                "Extension: RigL, sparse from a random mask; drop by magnitude, regrow by dense-gradient magnitude.")
    if s["extras"]:
        wide = {"tasks": ["circle"], "depth": 5, "width": 1000, "pruners": WEAK_PRUNERS, "seeds": 5}
        _experiment(parts, {
            "name": "wide-circle-singleshot", "protocol": "singleshot", **wide, **ss | {"seeds": 5}, **WEAK_TRAINING,
        }, "Extra: circle at depth 5 (the paper's 6) and width 1000.")
        _experiment(parts, {
            "name": "wide-circle-multishot", "protocol": "multishot", **wide, **ms | {"seeds": 5}, **WEAK_TRAINING,
        })
        syn100 = {"pruners": [{"name": "synflow", "iterations": 100}], "depth": 4}
        parts.append(_table("[[experiment]]", {
            "name": "synflow-100-singleshot", "protocol": "singleshot", **syn100, **ss, **WEAK_TRAINING,
        }, "Extra: SynFlow with 100 rounds (its own paper's setting)."))
        parts.append(_table("[[experiment]]", {
            "name": "synflow-100-multishot", "protocol": "multishot", **syn100, **ms, **WEAK_TRAINING,
        }))
        _experiment(parts, {
            "name": "noise", "protocol": "singleshot", "noise": [0.0, 0.001, 0.1], "depth": 4,
            "pruners": WEAK_PRUNERS, **ss | {"seeds": 10}, **WEAK_TRAINING,
        }, "Extra: label / target noise (0.01 is in the main runs).")
    return "\n".join(parts)


def reproduce_paper(scale: str = "small", out: str | os.PathLike = "report", db: str | os.PathLike | None = None,
                    executor: str = "local", device: str | None = None, retry_failed: bool = False,
                    max_batch: int | None = None, progress: bool = True, report: bool = True,
                    batch_fn=None, single_fn=None, formats=("png", "svg"), **executor_options) -> dict[str, Any]:
    """Write ``OUT/paper_SCALE.toml``, run it into ``db`` (default ``OUT/paper_SCALE.db``; resumes), and
    write the report into ``OUT``. Returns the paths and the sweep's summary."""
    from .sweep import load_sweep, run_sweep

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sweep_file = out / f"paper_{scale}.toml"
    sweep_file.write_text(paper_sweep_toml(scale))
    db = Path(db) if db is not None else out / f"paper_{scale}.db"
    sweep = load_sweep(sweep_file)
    summary = run_sweep(sweep, db, executor=executor, device=device, retry_failed=retry_failed,
                        max_batch=max_batch, progress=progress, batch_fn=batch_fn, single_fn=single_fn,
                        **executor_options)
    result: dict[str, Any] = {"sweep_file": sweep_file, "db": db, "sweep_report": summary, "html": None}
    if report:
        from .report import build_report

        res = build_report(db, out, progress=progress, title=f"plantseek: the paper's experiments ({scale})",
                           formats=formats)
        result["html"] = res.html
        result["table"] = res.table
    return result
