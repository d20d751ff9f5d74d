"""The image task's measured numbers as code: README.md's and docs/image.md's image blocks from one committed CSV.

>>> from plantseek.report import image_tables as I
>>> I.export_csv("/tmp/image.db", I.CSV)                               # doctest: +SKIP
>>> I.update_block("README.md", I.readme_block(I.CSV))                  # doctest: +SKIP

The rows are those of one `plantseek image-ticket` experiment (docs/image.md): the ``ticket`` oracle and the seeker
at the ticket's own density and a grid above it, one seed. `export_csv` keeps only the columns the blocks read;
`readme_block` writes the README paragraph's numbers (the ticket's accuracy at its density against the small dense
network, its density in the host, the seeker's accuracy and recall at the ticket's density and at 0.05 and 0.5);
`doc_block` the two tables of docs/image.md's measured section (the ticket's story, the seeker by density).
Each block sits between the markers `BEGIN` ... `END`; tests/image/test_image_docs.py regenerates both from
docs/results/image_digits.csv and compares. Reads rows only (no training).

Regenerate after rerunning the experiment::

    plantseek image-ticket --task digits --ticket-pruner synflow --ticket-density 0.05 --host-width 4 \\
        --seeker edge-popup-annealed --db /tmp/image.db
    python -m plantseek.report.image_tables /tmp/image.db --csv-out docs/results/image_digits.csv
    python -m plantseek.report.image_tables docs/results/image_digits.csv --readme README.md --doc docs/image.md
"""
from __future__ import annotations

import argparse
import math
import os
import re
from pathlib import Path
from typing import Sequence

import pandas as pd

from .. import metric_schema as _schema
from . import blocks as _blocks

__all__ = ["CSV", "BEGIN", "END", "README_DENSITIES", "load", "export_csv", "readme_block", "doc_block",
           "update_block", "current_block", "main"]

CSV = "docs/results/image_digits.csv"
BEGIN = "<!-- image:begin"
END = "<!-- image:end -->"
README_DENSITIES = (0.05, 0.5)  # the grid densities the README paragraph quotes besides the ticket's own
ORACLE = "ticket"

CONFIG = ("task", "pruner", "protocol", "density", "seed", "width", "layout", "epochs", "scope", "pruner_options",
          "ticket_width", "ticket_pruner", "ticket_pruner_options", "ticket_target_density", "ticket_scope",
          "ticket_train_epochs", "ticket_finetune_epochs")
METRICS = _schema.declared((
    "kept_density", "weight_density", "ticket_density", "ticket_weight_density", "test_accuracy", "recall",
    "precision", "ticket_test_accuracy", "dense_test_accuracy", "dense_epochs", "small_dense_test_accuracy",
    "ticket_pruned_test_accuracy", "ticket_small_test_accuracy", "ticket_small_density", "ticket_nnz", "host_params",
    "planting_exactness", "hiding_median_percentile", "train_time_s"))
LAYER_METRICS = ("layer_density_{i}", "ticket_layer_density_{i}")
TIMES = ("duration_s", "batch_runs")  # bookkeeping: the batch's wall time and its runs


# --- rows --------------------------------------------------------------------------------------------------

def _frame(source: str | os.PathLike) -> pd.DataFrame:
    return _blocks.frame(source)


def _columns(df: pd.DataFrame) -> list[str]:
    layers = sorted({int(m.group(1)) for c in df.columns if (m := re.fullmatch(r"ticket_layer_density_(\d+)", c))})
    wanted = list(CONFIG) + list(METRICS) + [t.format(i=i) for t in LAYER_METRICS for i in layers] + list(TIMES)
    return [c for c in wanted if c in df.columns]


def load(source: str | os.PathLike) -> pd.DataFrame:
    """The ok rows of one image-ticket experiment (a results database or a CSV of `export_csv`), checked: one
    task, one seed, one ``ticket`` oracle row and one row per seeker density."""
    df = _frame(source)
    if "status" in df:
        df = df[df["status"] == "ok"]
    if df.empty:
        raise ValueError(f"{source}: no ok rows")
    for col, what in (("task", "task"), ("seed", "seed"), ("width", "host width")):
        values = df[col].dropna().unique()
        if len(values) != 1:
            raise ValueError(f"{source}: the image tables read one experiment, one {what}; found "
                             f"{', '.join(map(str, values))} (one seed: no interval is shown)")
    df = df.assign(density=df["density"].astype(str))
    seekers = df[df["pruner"] != ORACLE]
    if seekers["pruner"].nunique() != 1 or (df["pruner"] == ORACLE).sum() != 1:
        raise ValueError(f"{source}: expected the ticket oracle and one seeker, found pruners "
                         f"{', '.join(df['pruner'].astype(str).unique())}")
    if seekers["density"].duplicated().any():
        raise ValueError(f"{source}: several seeker rows at one density")
    return df.reset_index(drop=True)


def export_csv(source: str | os.PathLike, out: str | os.PathLike = CSV) -> int:
    """Write the ok rows of an image-ticket experiment with only the columns the blocks read (configuration,
    the image family's metrics they quote, per-layer densities, the batch's wall time), numbers to 6
    significant digits; returns the number of rows."""
    df = load(source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df[_columns(df)].to_csv(out, index=False, float_format="%.6g", lineterminator="\n")
    return len(df)


# --- formatting --------------------------------------------------------------------------------------------

def _acc(v) -> str:
    return f"{float(v):.3f}"


def _g(v, digits: int = 2) -> str:
    return f"{float(v):.{digits}g}"


def _count(v) -> str:
    return f"{int(round(float(v))):,}".replace(",", " ")


def _first(df: pd.DataFrame, col: str):
    values = df[col].dropna()
    if values.empty:
        raise ValueError(f"the rows have no {col}")
    return values.iloc[0]


def _at(df: pd.DataFrame, density) -> pd.Series:
    """The seeker's row at ``density`` ("ticket" or a number)."""
    seekers = df[df["pruner"] != ORACLE]
    if density == "ticket":
        hit = seekers[seekers["density"] == "ticket"]
    else:
        numeric = pd.to_numeric(seekers["density"], errors="coerce")
        hit = seekers[(numeric - float(density)).abs() <= 1e-9 * float(density)]
    if hit.empty:
        raise ValueError(f"no {_first(seekers, 'pruner')} row at density {density}")
    return hit.iloc[0]


def _oracle(df: pd.DataFrame) -> pd.Series:
    return df[df["pruner"] == ORACLE].iloc[0]


def _seeker_rows(df: pd.DataFrame) -> pd.DataFrame:
    seekers = df[df["pruner"] != ORACLE]
    order = pd.to_numeric(seekers["density"], errors="coerce").fillna(-1.0)
    return seekers.assign(_order=order).sort_values("_order")


def _options(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("", "{}"):
        return "default options"
    return f"`{v}`"


def _scope(df: pd.DataFrame, pruner: str) -> str:
    """The seeker's scope as its rows record it (the report reads rows; it never asks the pruner registry)."""
    seekers = df[df["pruner"] == pruner]
    if "scope" in seekers and seekers["scope"].notna().any():
        scope = str(seekers["scope"].dropna().iloc[0])
        return "per layer" if scope == "layer" else f"{scope} scope"
    return "its own default scope"


def _layout(df: pd.DataFrame) -> str | None:
    if "layout" in df and df["layout"].notna().any():
        return str(df["layout"].dropna().iloc[0])
    try:
        from .. import tasks

        return getattr(tasks.get(str(_first(df, "task"))), "default_layout", None)
    except Exception:  # noqa: BLE001
        return None


def _host_multiplier(df: pd.DataFrame) -> str:
    """The host's width multiplier (`width` over the layout's first-layer channels), e.g. "4"."""
    width = float(_first(df, "width"))
    layout = _layout(df)
    try:
        from ..image import models

        first = next(i for i in models.LAYOUTS[layout] if isinstance(i, int))
    except Exception:  # noqa: BLE001  (a custom layout: name the width only)
        return f"`width` {width:g}"
    return f"{width / first:g}"


def _layer_names(df: pd.DataFrame, n: int) -> list[str]:
    """conv1 ... convK, the hidden linear layer(s), output: from the layout when it has ``n`` layers."""
    layout = _layout(df)
    try:
        from ..image import models

        convs = sum(isinstance(i, int) for i in models.LAYOUTS[layout])
        heads = len(models.HEADS[layout])
    except Exception:  # noqa: BLE001
        return [f"layer {i}" for i in range(n)]
    if convs + heads + 1 != n:
        return [f"layer {i}" for i in range(n)]
    linear = ["linear"] if heads == 1 else [f"linear{i + 1}" for i in range(heads)]
    return [f"conv{i + 1}" for i in range(convs)] + linear + ["output"]


def _scale(df: pd.DataFrame, display: str) -> str:
    """The scale the numbers were measured at, from the rows."""
    seeker = str(_first(df[df["pruner"] != ORACLE], "pruner"))
    return (f"{display}: {_first(df, 'task')}, one seed ({int(_first(df, 'seed'))}), so no interval: each number "
            f"is one run; small network {int(_first(df, 'ticket_train_epochs'))} epochs, "
            f"`{_first(df, 'ticket_pruner')}` ({_options(_first(df, 'ticket_pruner_options'))}) to density "
            f"{_g(_first(df, 'ticket_target_density'), 3)}, {int(_first(df, 'ticket_finetune_epochs'))} fine-tuning "
            f"epochs, host width {_host_multiplier(df)} (`width` {float(_first(df, 'width')):g}), `{seeker}` "
            f"({_options(_first(df[df['pruner'] == seeker], 'pruner_options'))}, {_scope(df, seeker)}) under the "
            f"{_first(df, 'protocol')} protocol")


def _header(display: str, which: str) -> str:
    return (f"{BEGIN} generated from {display} by `python -m plantseek.report.image_tables {display} --{which} "
            f"{'README.md' if which == 'readme' else 'docs/image.md'}`; regenerate {display} after rerunning the "
            f"experiment (the command at the top of docs/image.md, with `--db /tmp/image.db`) with "
            f"`python -m plantseek.report.image_tables /tmp/image.db --csv-out {display}`. Do not edit by hand. -->")


# --- the blocks --------------------------------------------------------------------------------------------

def readme_block(source: str | os.PathLike = CSV, display: str = CSV,
                 densities: Sequence[float] = README_DENSITIES) -> str:
    """README.md's image block (markers included): the ticket, its density in the host and the seeker at the
    ticket's density and at ``densities``."""
    df = load(source)
    seeker = str(_first(df[df["pruner"] != ORACLE], "pruner"))
    at_ticket = _at(df, "ticket")
    grid = [_at(df, d) for d in densities]
    found = float(at_ticket["recall"]) >= 0.5
    verdict = "finds most of it" if found else "does **not** find it"
    accs = " and ".join(f"{_acc(r['test_accuracy'])} at density {_g(r['kept_density'], 3)}" for r in grid)
    recalls = " and ".join(_g(r["recall"]) for r in grid)
    other = "" if found or any(float(r["recall"]) >= 0.9 for r in grid) else \
        ", i.e. it finds other good masks, not the planted one"
    text = (f"Measured ({_scale(df, display)}): the planting is exact ({_g(_first(df, 'planting_exactness'))} "
            f"relative error); the ticket reaches test accuracy {_acc(_first(df, 'ticket_small_test_accuracy'))} "
            f"at density {_g(_first(df, 'ticket_small_density'), 2)} (the small dense network: "
            f"{_acc(_first(df, 'small_dense_test_accuracy'))}); in the host its density is "
            f"{_g(_first(df, 'ticket_density'), 3)}. `{seeker}` {verdict}: accuracy {_acc(at_ticket['test_accuracy'])} "
            f"and recall {_g(at_ticket['recall'])} at the ticket's density; {accs}, with recall {recalls} (a random "
            f"mask's recall is its density){other}.")
    return "\n".join([_header(display, "readme"), text, END]) + "\n"


def doc_block(source: str | os.PathLike = CSV, display: str = CSV) -> str:
    """docs/image.md's measured block (markers included): the ticket's story table, the seeker-by-density table,
    the ticket's layer densities and the rows' times."""
    df = load(source)
    oracle = _oracle(df)
    seeker = str(_first(df[df["pruner"] != ORACLE], "pruner"))
    small_params = float(_first(df, "ticket_nnz")) / float(_first(df, "ticket_small_density"))
    mult = _host_multiplier(df)
    lines = [_header(display, "doc"), f"From {_scale(df, display)}.", "",
             "| | value |", "|---|---|",
             f"| small dense network (width {_g(_first(df, 'ticket_width'), 3)}, {_count(small_params)} parameters), "
             f"test accuracy | {_acc(_first(df, 'small_dense_test_accuracy'))} |",
             f"| `{_first(df, 'ticket_pruner')}` ticket at density {_g(_first(df, 'ticket_small_density'), 2)} "
             f"({_count(_first(df, 'ticket_nnz'))} parameters): right after pruning / after fine-tuning | "
             f"{_acc(_first(df, 'ticket_pruned_test_accuracy'))} / **{_acc(_first(df, 'ticket_small_test_accuracy'))}** |",
             f"| planted into the width-{mult} host ({_count(_first(df, 'host_params'))} parameters): ticket density "
             f"there | {_g(_first(df, 'ticket_density'), 3)} (weights: {_g(_first(df, 'ticket_weight_density'), 3)}) |",
             f"| planting exactness (max relative error of the masked host vs `output_scale` x ticket) | "
             f"{_g(_first(df, 'planting_exactness'))} |",
             f"| hiding: median magnitude percentile of the ticket weights | "
             f"{float(_first(df, 'hiding_median_percentile')):.2f} |",
             f"| dense host trained {int(_first(df, 'dense_epochs'))} epochs (after the rescale of the weak "
             f"protocols) | {_acc(_first(df, 'dense_test_accuracy'))} |",
             "",
             f"| seeker (`{seeker}`, {_scope(df, seeker)}, {_options(_first(df[df['pruner'] == seeker], 'pruner_options'))}) "
             f"at density | test accuracy | recall | precision |", "|---|---|---|---|",
             f"| `ticket` oracle (reference row) | {_acc(oracle['test_accuracy'])} | {_g(oracle['recall'])} | "
             f"{_g(oracle['precision'])} |"]
    for _, r in _seeker_rows(df).iterrows():
        if r["density"] == "ticket":
            lines.append(f"| the ticket's, {_g(r['kept_density'], 3)} | **{_acc(r['test_accuracy'])}** | "
                         f"**{_g(r['recall'])}** | {_g(r['precision'])} |")
        else:
            lines.append(f"| {_g(r['kept_density'], 3)} | {_acc(r['test_accuracy'])} | {_g(r['recall'])} | "
                         f"{_g(r['precision'])} |")
    layers = sorted(int(m.group(1)) for c in df.columns if (m := re.fullmatch(r"ticket_layer_density_(\d+)", c)))
    if layers:
        names = _layer_names(df, len(layers))
        own = [_g(oracle[f"ticket_layer_density_{i}"]) for i in layers]
        at = _at(df, "ticket")
        lines += ["", f"The ticket's own layer densities in the host are {', '.join(own[:-1])} and {own[-1]} "
                  f"({', '.join(names)}); at the ticket's density the seeker's budget keeps "
                  f"{_g(at[f'layer_density_{layers[0]}'])} of {names[0]}, where the ticket keeps {own[0]}."]
    if "train_time_s" in df and "duration_s" in df:
        t = _seeker_rows(df)["train_time_s"].astype(float)
        d = df["duration_s"].astype(float)
        one_batch = d.nunique() == 1 and "batch_runs" in df and (df["batch_runs"] == len(df)).all()
        rows = (f"the {len(df)} rows ran as one batch of {d.iloc[0]:.0f} s" if one_batch else
                f"the {len(df)} rows took {d.sum():.0f} s in all")
        lines += ["", f"Times (the rows' `train_time_s` and `duration_s`): the seeker's search {t.min():.1f} to "
                  f"{t.max():.1f} s per density; {rows} (the dense host baseline and the measurements included)."]
    lines.append(END)
    return "\n".join(lines) + "\n"


# --- markers -----------------------------------------------------------------------------------------------

def update_block(path: str | os.PathLike, block: str) -> bool:
    """Replace the image block of ``path`` (between `BEGIN` and `END`); True when the file changed."""
    return _blocks.replace(path, block, BEGIN, END, "image")


def current_block(path: str | os.PathLike) -> str | None:
    """The image block of ``path`` as it stands (markers included), or None."""
    return _blocks.current(path, BEGIN, END)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plantseek.report.image_tables",
                                     description="the image task's blocks of README.md and docs/image.md from "
                                                 "one image-ticket experiment (a results database or its CSV)")
    parser.add_argument("source", metavar="RESULTS", help=f"results database or CSV (e.g. {CSV})")
    parser.add_argument("--csv-out", metavar="CSV", help=f"write the rows the blocks read (e.g. {CSV})")
    parser.add_argument("--readme", metavar="README", help="rewrite the image block of this README")
    parser.add_argument("--doc", metavar="MD", help="rewrite the image block of this page (docs/image.md)")
    args = parser.parse_args(argv)
    display = str(args.source)
    if args.csv_out:
        print(f"image tables: wrote {export_csv(args.source, args.csv_out)} rows to {args.csv_out}")
    for path, build in ((args.readme, readme_block), (args.doc, doc_block)):
        if path:
            changed = update_block(path, build(args.source, display=display))
            print(f"image tables: {path} {'updated' if changed else 'already up to date'}")
    if not (args.csv_out or args.readme or args.doc):
        print(readme_block(args.source, display=display) + "\n" + doc_block(args.source, display=display))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
