"""The during-training findings as code: README.md's "Sparsity during training" block from one committed CSV.

>>> from plantseek.report import during_tables as D
>>> D.export_csv("during.db", D.CSV)                                    # doctest: +SKIP
>>> D.update_block("README.md", D.readme_block(D.CSV))                  # doctest: +SKIP

The rows are those of examples/during_training.toml (gradual magnitude pruning, SET and RigL on circle and relu
at depth 4, width 100, 5 seeds, at the ticket's density, 0.01 and 0.1, with the ticket oracle under each
protocol). `readme_block` writes, per task, each method's performance and recall (mean and 95% Student t
interval over seeds), its verdict against the oracle of its protocol (`plantseek.report.verdicts`: the same
non-inferiority test as the findings), and RigL's recall at the start, after the first mask update and at the
end, with the interval of its rise. tests/test_during_docs.py regenerates the block from
docs/results/during_training.csv and compares. Reads rows only (no training).

Regenerate after rerunning the sweep::

    plantseek sweep examples/during_training.toml --db during.db
    python -m plantseek.report.during_tables during.db --csv-out docs/results/during_training.csv
    python -m plantseek.report.during_tables docs/results/during_training.csv --readme README.md
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import pandas as pd

from .. import metric_schema as _schema
from . import blocks as _blocks
from . import verdicts as V
from .data import protocol_label

__all__ = ["CSV", "BEGIN", "END", "method_of", "load", "export_csv", "readme_block", "update_block",
           "current_block", "main"]

CSV = "docs/results/during_training.csv"
BEGIN = "<!-- during:begin"
END = "<!-- during:end -->"
ORACLE = "ticket"
PROTOCOLS = ("gradual", "dynamic")
CONFIG = ("task", "pruner", "protocol", "grow", "density", "seed", "depth", "width", "epochs", "update_every",
          "update_begin", "update_end", "drop_fraction")
METRICS = _schema.declared((
    "kept_density", "ticket_density", "test_accuracy", "test_loss", "recall", "functional_recall",
    "ticket_test_accuracy", "ticket_test_loss", "dense_test_accuracy", "dense_test_loss", "mask_updates",
    "regrown_into_ticket", "recall_curve", "functional_recall_curve", "curve_steps"))
CURVES = ("recall_curve", "functional_recall_curve", "curve_steps")
DENSITY_ORDER = ("ticket", "0.01", "0.1")


def method_of(row) -> str:
    """The method's name in tables: the report's protocol name (`plantseek.report.data.protocol_label`: SET,
    RigL), gradual with its pruner, or the oracle with its protocol."""
    if row["pruner"] == ORACLE:
        return f"ticket oracle ({row['protocol']})"
    if row["protocol"] == "gradual":
        return f"gradual {row['pruner']}"
    return protocol_label(row["protocol"], row.get("grow"))


def _frame(source: str | os.PathLike) -> pd.DataFrame:
    df = _blocks.frame(source)
    for c in CURVES:  # flat tables hold a curve as JSON text
        if c in df:
            df[c] = df[c].map(lambda v: json.loads(v) if isinstance(v, str) else v)
    return df


def load(source: str | os.PathLike) -> pd.DataFrame:
    """The ok rows of the during-training protocols (a results database or a CSV of `export_csv`), with a
    ``method`` column; the density as text ("ticket", "0.01", ...)."""
    df = _frame(source)
    if "status" in df:
        df = df[df["status"] == "ok"]
    df = df[df["protocol"].isin(PROTOCOLS)]
    if df.empty:
        raise ValueError(f"{source}: no ok rows of the protocols {', '.join(PROTOCOLS)}")
    if "grow" not in df:
        df = df.assign(grow="gradient")
    df = df.assign(grow=df["grow"].fillna("gradient"), density=df["density"].map(_density_text))
    return df.assign(method=df.apply(method_of, axis=1)).reset_index(drop=True)


def _density_text(v) -> str:
    if isinstance(v, str) and v == "ticket":
        return v
    return f"{float(v):g}"


def export_csv(source: str | os.PathLike, out: str | os.PathLike = CSV) -> int:
    """Write the rows with the columns the block reads (curves as JSON lists), numbers to 6 significant digits;
    returns the number of rows."""
    df = load(source)
    cols = [c for c in list(CONFIG) + list(METRICS) if c in df.columns]
    df = df[cols].copy()
    for c in CURVES:
        if c in df:
            df[c] = df[c].map(lambda v: json.dumps([float(f"{x:.6g}") for x in v]))
    df = df.sort_values(["task", "protocol", "grow", "pruner", "density", "seed"], kind="stable")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_csv(out, index=False, float_format="%.6g", lineterminator="\n")
    return len(df)


# --- the block ---------------------------------------------------------------------------------------------

def _metric(rows: pd.DataFrame) -> str:
    """Test accuracy for a classification task, test loss (geometric mean) for regression."""
    return "test_accuracy" if "test_accuracy" in rows and rows["test_accuracy"].notna().any() else "test_loss"


def _interval(values, log: bool = False, digits: int = 3) -> str:
    mean, lo, hi, n = V.t_interval(values, log=log)
    if n == 0:
        return "—"
    fmt = (lambda v: f"{v:.{digits}g}") if log else (lambda v: f"{v:.{digits}f}")
    return fmt(mean) if n == 1 else f"{fmt(mean)} [{fmt(lo)}, {fmt(hi)}]"


def _verdict(rows: pd.DataFrame, oracle: pd.DataFrame, metric: str) -> str:
    if oracle.empty:
        return "no oracle"
    c = V.compare_runs(rows, oracle, metric, V.tolerance(metric))
    return c.verdict


def _task_table(df: pd.DataFrame, task: str) -> list[str]:
    rows = df[df["task"] == task]
    metric = _metric(rows)
    log = V.log_scale(metric)
    name = "test accuracy" if metric == "test_accuracy" else "test loss"
    ticket = rows["ticket_density"].dropna()
    lines = [f"**{task}** (the ticket's density {float(ticket.iloc[0]):.3g}; {name}"
             + (", geometric mean" if log else "") + "):", "",
             f"| method | density | {name} | recall | functional recall | against the oracle of its protocol |",
             "|---|---|---:|---:|---:|---|"]
    oracles = rows[rows["pruner"] == ORACLE]
    for proto in PROTOCOLS:
        o = oracles[oracles["protocol"] == proto]
        if not o.empty:
            lines.append(f"| ticket oracle ({proto}) | ticket | {_interval(o[metric], log)} | "
                         f"{_interval(o['recall'])} | {_interval(o['functional_recall'])} | reference |")
    seekers = rows[rows["pruner"] != ORACLE]
    for method in sorted(seekers["method"].unique(), key=_method_order):
        m = seekers[seekers["method"] == method]
        for density in sorted(m["density"].unique(), key=_density_order):
            cell = m[m["density"] == density]
            o = oracles[oracles["protocol"] == cell["protocol"].iloc[0]]
            lines.append(f"| {method} | {density} | {_interval(cell[metric], log)} | {_interval(cell['recall'])} | "
                         f"{_interval(cell['functional_recall'])} | {_verdict(cell, o, metric)} |")
    return lines


def _method_order(method: str) -> tuple:
    return ({"SET": 1, "RigL": 2}.get(method, 0), method)


def _density_order(d: str) -> tuple:
    return (0, 0.0) if d == "ticket" else (1, float(d))


def _rise(df: pd.DataFrame, method: str = "RigL") -> list[str]:
    """Recall at the start, after the first update and at the end, per task and density, with the interval of
    the rise (end minus start)."""
    rows = df[(df["method"] == method) & df["recall_curve"].map(lambda c: isinstance(c, list) and len(c) > 1)]
    if rows.empty:
        return []
    lines = [f"{method}'s recall over training (mean [95% interval] over seeds; the start is the random initial "
             f"mask, whose recall is about its density):", "",
             "| task | density | at the start | after the first update | at the end | rise (end - start) |",
             "|---|---|---:|---:|---:|---:|"]
    for (task, density), cell in sorted(rows.groupby(["task", "density"]), key=lambda kv: (kv[0][0],
                                                                                         _density_order(kv[0][1]))):
        curves = list(cell["recall_curve"])
        start = [c[0] for c in curves]
        first = [c[1] for c in curves]
        end = [c[-1] for c in curves]
        rise = [b - a for a, b in zip(start, end)]
        lo = V.t_interval(rise)[1]
        word = "rises" if lo > 0 else "no clear rise"
        lines.append(f"| {task} | {density} | {_interval(start)} | {_interval(first)} | {_interval(end)} | "
                     f"{_interval(rise)} ({word}) |")
    return lines


def _setting(df: pd.DataFrame) -> str:
    def one(col, fmt=str):
        vals = sorted({fmt(v) for v in df[col].dropna()}) if col in df else []
        return ", ".join(vals) if vals else "?"

    seeds = df["seed"].dropna().astype(int)
    return (f"{one('task')}, depth {one('depth', lambda v: str(int(v)))}, width {one('width', lambda v: str(int(v)))}, "
            f"{one('epochs', lambda v: str(int(v)))} epochs, {seeds.nunique()} seeds ({seeds.min()}-{seeds.max()}), "
            f"mask updates every {one('update_every', lambda v: str(int(v)))} steps until "
            f"{one('update_end', lambda v: f'{float(v):g}')} of training")


def readme_block(source: str | os.PathLike = CSV) -> str:
    """The README block (markers included) from the rows of `source`."""
    df = load(source)
    parts = [f"{BEGIN} (generated by plantseek.report.during_tables from {CSV}) -->",
             f"Measured ({CSV}, from examples/during_training.toml: {_setting(df)}). Intervals are 95% Student t over "
             "seeds; the verdict is the non-inferiority test of the findings (within 0.02 accuracy or 2x the "
             "loss of the ticket oracle trained under the same protocol, one-sided 95% bounds, paired by seed).",
             ""]
    for task in sorted(df["task"].unique()):
        parts += _task_table(df, task) + [""]
    parts += _rise(df)
    parts.append(END)
    return "\n".join(parts).rstrip() + "\n"


def update_block(path: str | os.PathLike, block: str) -> bool:
    """Replace the during-training block of `path` (README.md); True when the file changed."""
    return _blocks.replace(path, block, BEGIN, END, "during-training")


def current_block(path: str | os.PathLike) -> str | None:
    return _blocks.current(path, BEGIN, END)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m plantseek.report.during_tables", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source", help="a results database or a CSV written by --csv-out")
    ap.add_argument("--csv-out", help="write the rows the block reads to this CSV")
    ap.add_argument("--readme", help="rewrite the block of this Markdown file")
    args = ap.parse_args(argv)
    if args.csv_out:
        print(f"{export_csv(args.source, args.csv_out)} rows written to {args.csv_out}")
    if args.readme:
        changed = update_block(args.readme, readme_block(args.csv_out or args.source))
        print(f"{args.readme}: {'updated' if changed else 'unchanged'}")
    if not (args.csv_out or args.readme):
        print(readme_block(args.source))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
