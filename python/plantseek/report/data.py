"""Tables the report is drawn from: rows of the results database, grouped and averaged over seeds.

Metric names come from `plantseek.metric_schema`. Reads rows only (no training code)."""
from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

from .. import metric_schema as _schema
from ..metric_schema import BOOKKEEPING  # noqa: F401 - the bookkeeping columns of the flat tables
from . import verdicts as V

# the during-training protocols (`plantseek.during_training`); dynamic is named by its growth rule
DURING = _schema.DURING
GROW_LABELS = {"random": "SET", "gradient": "RigL"}  # dynamic's `grow` -> what the report calls the method
PROTOCOL_ORDER = ("singleshot", "multishot", "strong", "gradual", *GROW_LABELS.values())
# configuration columns that are the axes of a figure rather than what separates figures; `rescale` (the
# weak protocols' function-preserving rescale, "fit" by default) is part of a pruner's label instead, and
# `grow` part of the protocol's (`protocol_label`)
AXIS_COLUMNS = ("task", "pruner", "pruner_options", "protocol", "density", "seed", "rescale", "grow")
DEFAULT_RESCALE = "fit"
ORACLE = "ticket"  # the pruner that returns the planted mask: every protocol's reference
# what the report calls the oracle's rows and the planted ticket, the same in every figure and table: the
# oracle's "ticket" beside the "planted ticket" read as one thing, though the first is trained (weak protocols)
ORACLE_TRAINED = "ticket mask (trained)"  # the oracle under the weak protocols: the ticket's mask, trained
ORACLE_MASK = "ticket mask"  # the oracle under strong: the mask alone, read through the fitted scale
PLANTED = "planted ticket (untrained)"  # the planted ticket itself (its weights, before any training)
LAYER_RE = re.compile(r"^layer_density_(\d+)$")
TICKET_LAYER_RE = re.compile(r"^ticket_layer_density_(\d+)$")


def pruner_label(pruner: str, options: Any) -> str:
    if options is None or (isinstance(options, float) and math.isnan(options)) or options in ("", "{}"):
        return str(pruner)
    if isinstance(options, str):
        try:
            options = json.loads(options)
        except ValueError:
            return f"{pruner}[{options}]"
    if not options:
        return str(pruner)
    inner = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{pruner}[{inner}]"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def protocol_label(protocol: str, grow: Any = None) -> str:
    """What the report calls a protocol: its name, except ``dynamic``, named by its growth rule ("SET" for
    ``grow = "random"``, "RigL" for ``"gradient"``, the default when the row does not say). The one place the
    report (figures, tables, verdicts) and `plantseek results` name the protocols."""
    if protocol != "dynamic":
        return str(protocol)
    if _missing(grow):
        from ..spec import defaults

        grow = defaults()["grow"]
    return GROW_LABELS.get(str(grow), f"dynamic (grow {grow})")


def is_during(frame: pd.DataFrame) -> pd.Series:
    """Which rows ran a during-training protocol (the protocol's own name, before `protocol_label`)."""
    name = frame["protocol_name"] if "protocol_name" in frame else frame["protocol"]
    return name.isin(DURING)


def curve_values(value: Any) -> list[float] | None:
    """A curve metric of one run as a list of floats: from the list itself (the store) or its JSON text (a
    flat export); None when the run has none."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if isinstance(value, (list, tuple, np.ndarray)):
        try:
            return [float(v) for v in value]
        except (TypeError, ValueError):
            return None
    return None


def is_curve(column: str) -> bool:
    """Whether a column is a declared curve metric (a list per run: never averaged as a number)."""
    m = _schema.lookup(column)
    return m is not None and m.kind == "curve"


def oracle_name(protocol: str) -> str:
    """The name of the ticket oracle's rows under ``protocol``."""
    return ORACLE_MASK if protocol == "strong" else ORACLE_TRAINED


def display_label(pruner: str, options: Any, protocol: str, rescale: str = DEFAULT_RESCALE) -> str:
    """A pruner's label in figures and tables: its name with options, the oracle named after what it is
    (`oracle_name`), and the rescale when it is not the default."""
    oracle = pruner == ORACLE
    label = pruner_label(ORACLE_MASK if oracle else pruner, options)
    notes = (["trained"] if oracle and protocol != "strong" else []) + \
        ([] if rescale == DEFAULT_RESCALE else [f"rescale {rescale}"])
    return label + (f" ({', '.join(notes)})" if notes else "")


def is_oracle_label(label: str) -> bool:
    """Whether a `display_label` is the ticket oracle's (with any options or rescale)."""
    return str(label) == ORACLE_MASK or str(label).startswith((ORACLE_MASK + " (", ORACLE_MASK + "["))


def pivot_rows(labels: Iterable[str]) -> dict[str, str]:
    """Row names for tables with the protocols across: the oracle's names under the weak protocols and under
    strong share one row ("ticket mask (trained) / ticket mask"); every other label is its own row."""
    labels = list(dict.fromkeys(labels))
    names = [n for n in (ORACLE_TRAINED, ORACLE_MASK) if n in labels]
    return {label: " / ".join(names) if label in names else label for label in labels}


def rescale_key(value: Any) -> str:
    """The rescale option of a run as text; rows from before the option existed ran the default."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return DEFAULT_RESCALE
    return str(value).lower()


@dataclass
class Setting:
    """One figure's worth of runs: a task and the values of every other configuration column that varies."""

    task: str
    values: dict  # column -> value (depth, width, epochs, ...)
    frame: pd.DataFrame
    panel_notes: dict = None  # protocol -> "epochs 10, rounds 10" (settings that differ between protocols)

    def panel_title(self, protocol: str) -> str:
        note = (self.panel_notes or {}).get(protocol)
        return f"{protocol} ({note})" if note else protocol

    @property
    def title(self) -> str:
        parts = [f"{k} {v}" for k, v in self.values.items()]
        return f"{self.task}" + (" (" + ", ".join(parts) + ")" if parts else "")

    @property
    def slug(self) -> str:
        parts = [self.task] + [f"{k}{v}" for k, v in self.values.items()]
        return re.sub(r"[^A-Za-z0-9_.-]+", "-", "_".join(str(p) for p in parts)).strip("-")

    @property
    def depth(self) -> int | None:
        d = self.values.get("depth")
        if d is None and "depth" in self.frame:
            vals = self.frame["depth"].dropna().unique()
            d = vals[0] if len(vals) == 1 else None
        return None if d is None else int(d)


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """Add `label` (`display_label`), `x` (the kept density, else the requested one) and `density_key` (the
    requested density as text: a number, or "ticket" for the planted ticket's own); `protocol` becomes its
    `protocol_label` (dynamic: SET or RigL), the protocol's own name kept in `protocol_name`. Declared
    numeric metrics read as text (from a CSV) become numbers; curve metrics (lists) become lists of floats
    (`curve_values`), never numbers."""
    df = df.copy()
    if df.empty:
        return df
    opts = df["pruner_options"] if "pruner_options" in df else pd.Series([None] * len(df), index=df.index)
    df["rescale_key"] = df["rescale"].map(rescale_key) if "rescale" in df else DEFAULT_RESCALE
    if "protocol_name" not in df:
        df["protocol_name"] = df["protocol"]
    grow = df["grow"] if "grow" in df else pd.Series([None] * len(df), index=df.index)
    df["protocol"] = [protocol_label(p, g) for p, g in zip(df["protocol_name"], grow)]
    df["label"] = [display_label(p, o, proto, r)
                   for p, o, proto, r in zip(df["pruner"], opts, df["protocol_name"], df["rescale_key"])]
    requested = pd.to_numeric(df["density"], errors="coerce")
    kept = pd.to_numeric(df["kept_density"], errors="coerce") if "kept_density" in df else requested
    df["x"] = kept.fillna(requested)
    df["density_key"] = df["density"].map(lambda v: "ticket" if v == "ticket" else f"{float(v):.6g}")
    for col in df.columns:
        m = _schema.lookup(col)
        if m is not None and m.kind == "curve":
            df[col] = df[col].map(curve_values).astype(object)
        elif m is not None and m.kind != "flag" and df[col].dtype == object:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _performance(frame: pd.DataFrame) -> str:
    """The schema's performance metric among the columns with values (`metric_schema.performance`): the test
    accuracy of classification rows, else the test loss."""
    return _schema.performance(c for c in frame.columns if frame[c].notna().any()) or "test_loss"


def kind_of(frame: pd.DataFrame) -> str:
    return "classification" if _schema.get(_performance(frame)).kind == "accuracy" else "regression"


def performance_column(frame: pd.DataFrame) -> tuple[str, str, str, str]:
    """(metric, ticket metric, dense metric, axis label) for the task kind."""
    metric = _performance(frame)
    label = f"test {_schema.get(metric).short}" + (" (MSE)" if kind_of(frame) == "regression" else "")
    return metric, "ticket_" + metric, "dense_" + metric, label


def config_columns(records: Iterable[dict]) -> list[str]:
    """Configuration keys of the runs, in first-seen order (what separates one figure from another)."""
    cols: dict[str, None] = {}
    for rec in records:
        cols.update(dict.fromkeys(rec["config"]))
    return list(cols)


def settings(df: pd.DataFrame, config_cols: Iterable[str] | None = None) -> list[Setting]:
    """Split ok rows into settings: per task, per combination of the other configuration columns."""
    ok = df[df["status"] == "ok"] if "status" in df else df
    if ok.empty:
        return []
    if config_cols is None:
        config_cols = df.attrs.get("config_columns") or [c for c in ("depth", "width", "epochs", "dtype") if c in df]
    config_cols = [c for c in config_cols if c in ok.columns and c not in AXIS_COLUMNS]
    out = []
    for task, frame in ok.groupby("task", sort=True):
        # a setting varies within a protocol (depth, width, noise, ...); what only differs between protocols
        # (their epochs, rounds, optimiser) labels the protocol's panel instead of splitting the figure
        varying = [c for c in config_cols
                   if any(sub[c].astype(str).nunique(dropna=False) > 1 for _, sub in frame.groupby("protocol"))]
        shown = [c for c in ("depth", "width") if c in config_cols]
        shown += [c for c in varying if c not in shown]
        if not varying:
            parts = [(None, frame)]
        else:
            keyed = frame.assign(_k=frame[varying].astype(str).agg("|".join, axis=1))
            parts = [(k, sub.drop(columns="_k")) for k, sub in keyed.groupby("_k", sort=False)]
        for _, sub in parts:
            setting = Setting(task, {c: _scalar(sub[c].iloc[0]) for c in shown}, sub)
            setting.panel_notes = _panel_notes(sub, [c for c in config_cols if c not in shown])
            out.append(setting)
    out.sort(key=lambda s: (s.task, tuple(_sort_key(v) for v in s.values.values())))
    return out


_PANEL_NOTE_COLUMNS = ("epochs", "rounds", "round_epochs", "optimizer", "lr", "batch_size", "update_every",
                       "update_begin", "update_end", "drop_fraction", "gradual_initial")
# options that only some protocols read (protocol names before `protocol_label`): noted on those panels only
_NOTE_PROTOCOLS = {"rounds": ("multishot",), "round_epochs": ("multishot",), "update_every": DURING,
                   "update_begin": DURING, "update_end": DURING, "drop_fraction": ("dynamic",),
                   "gradual_initial": ("gradual",)}


def _panel_notes(frame: pd.DataFrame, columns: list[str]) -> dict:
    """Per protocol, the settings that differ between the protocols of one figure (e.g. their epochs)."""
    protos = list(dict.fromkeys(frame["protocol"]))
    if len(protos) < 2:
        return {}
    names = frame["protocol_name"] if "protocol_name" in frame else frame["protocol"]
    name_of = {p: names[frame["protocol"] == p].iloc[0] for p in protos}
    notes = {p: [] for p in protos}
    for c in columns:
        if c not in _PANEL_NOTE_COLUMNS:
            continue
        values = {p: frame.loc[frame["protocol"] == p, c].iloc[0] for p in protos}
        if len({str(v) for v in values.values()}) > 1:
            for p in protos:
                if name_of[p] in _NOTE_PROTOCOLS.get(c, (name_of[p],)):
                    notes[p].append(f"{c} {values[p]}")
    return {p: ", ".join(v) for p, v in notes.items() if v}


def _sort_key(v):
    if isinstance(v, (int, float)):
        return (0, float(v), "")
    return (1, 0.0, str(v))


def _scalar(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def curves(frame: pd.DataFrame, metric: str, log: bool = False,
           confidence: float = V.CONFIDENCE) -> pd.DataFrame:
    """Per protocol, pruner label and requested density: mean x, the mean of `metric` with its two-sided
    Student t confidence interval over seeds (`ci_lo`, `ci_hi`), std, min, max and count.

    ``log=True`` (losses on a log axis) gives the geometric mean and the t-interval of the log values."""
    if metric not in frame or frame[metric].notna().sum() == 0:
        return pd.DataFrame()
    g = frame.dropna(subset=[metric]).groupby(["protocol", "label", "density_key"], sort=False)
    table = g.agg(x=("x", "mean"), std=(metric, "std"), lo=(metric, "min"), hi=(metric, "max"),
                  n=(metric, "size")).reset_index()
    intervals = [V.t_interval(sub[metric], confidence, log=log) for _, sub in g]
    table["mean"] = [t[0] for t in intervals]
    table["ci_lo"] = [t[1] for t in intervals]
    table["ci_hi"] = [t[2] for t in intervals]
    table["std"] = table["std"].fillna(0.0)
    return table.sort_values(["protocol", "label", "x"])


def training_curves(frame: pd.DataFrame, metric: str = "recall_curve", steps: str = "curve_steps") -> pd.DataFrame:
    """Per protocol (`protocol_label`), pruner label and requested density of the during-training rows: a
    curve `metric` (recall at the start and after every mask update) against the optimiser step, over seeds:
    `steps` (the union of the seeds' update steps), `mean`, `lo` and `hi` (min and max over seeds), `n` (seeds)
    and `x` (mean kept density). Seeds of one configuration share their update steps; where they do not, each
    seed's curve holds its value from one update to the next (a mask changes only at an update). Rows
    without the curve, or whose curve and steps differ in length, are left out."""
    cols = ["protocol", "label", "density_key", "x", "steps", "mean", "lo", "hi", "n"]
    if metric not in frame or steps not in frame:
        return pd.DataFrame(columns=cols)
    rows = frame[is_during(frame)]
    out = []
    for (protocol, label, key), g in rows.groupby(["protocol", "label", "density_key"], sort=False):
        seeds = []
        for ys, xs in zip(g[metric].map(curve_values), g[steps].map(curve_values)):
            if ys and xs and len(ys) == len(xs):
                order = np.argsort(xs, kind="stable")
                seeds.append((np.asarray(xs, dtype=float)[order], np.asarray(ys, dtype=float)[order]))
        if not seeds:
            continue
        grid = np.unique(np.concatenate([xs for xs, _ in seeds]))
        values = np.stack([ys[np.clip(np.searchsorted(xs, grid, side="right") - 1, 0, len(xs) - 1)]
                           for xs, ys in seeds])
        with warnings.catch_warnings():  # a step where every seed is NaN stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            mean, lo, hi = (np.nanmean(values, axis=0), np.nanmin(values, axis=0), np.nanmax(values, axis=0))
        out.append({"protocol": protocol, "label": label, "density_key": key, "x": float(g["x"].mean()),
                    "steps": grid, "mean": mean, "lo": lo, "hi": hi, "n": len(seeds)})
    return pd.DataFrame(out, columns=cols)


def planted_ticket(frame: pd.DataFrame, ticket_metric: str) -> tuple[float | None, float | None]:
    """(ticket density, the untrained planted ticket's performance): the density from `ticket_density` if
    the rows have it, else from the runs that asked for density "ticket"."""
    density = None
    if "ticket_density" in frame and frame["ticket_density"].notna().any():
        density = float(pd.to_numeric(frame["ticket_density"], errors="coerce").mean())
    else:
        rows = frame[frame["density_key"] == "ticket"]
        if len(rows) and rows["x"].notna().any():
            density = float(rows["x"].mean())
    perf = None
    if ticket_metric in frame and frame[ticket_metric].notna().any():
        perf = float(frame[ticket_metric].mean())
    return density, perf


def oracle_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """The reference runs of one protocol's rows: the ticket oracle with the default rescale (rows of
    another rescale only when there are no others), at density "ticket" when it ran there (the oracle keeps
    the planted mask whatever the density asked, so any one density will do)."""
    rows = frame[frame["pruner"] == ORACLE]
    if "rescale_key" in rows and (rows["rescale_key"] == DEFAULT_RESCALE).any():
        rows = rows[rows["rescale_key"] == DEFAULT_RESCALE]
    elif "rescale_key" in rows and len(rows):
        rows = rows[rows["rescale_key"] == rows["rescale_key"].iloc[0]]
    if len(rows) and (rows["density_key"] == "ticket").any():
        return rows[rows["density_key"] == "ticket"]
    if len(rows):
        return rows[rows["density_key"] == sorted(set(rows["density_key"]))[0]]
    return rows


def requested_order(keys: Iterable[str]) -> list[str]:
    """Density keys (`prepare`) in the order of the requested density, sparsest first, and "ticket" (symbolic:
    the planted ticket's own density, whatever it measures) last."""
    keys = set(keys)
    return sorted((k for k in keys if k != "ticket"), key=float) + (["ticket"] if "ticket" in keys else [])


def requested_densities(frame: pd.DataFrame) -> list[float]:
    """The numeric densities the runs of ``frame`` asked for, sparsest first (not "ticket")."""
    return [float(k) for k in requested_order(frame["density_key"]) if k != "ticket"]


def layer_columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    found = sorted((c for c in frame.columns if LAYER_RE.match(c) and frame[c].notna().any()),
                   key=lambda c: int(LAYER_RE.match(c).group(1)))
    ticket = sorted((c for c in frame.columns if TICKET_LAYER_RE.match(c) and frame[c].notna().any()),
                    key=lambda c: int(TICKET_LAYER_RE.match(c).group(1)))
    return found, ticket


def protocols_in(frame: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(frame["protocol"]))
    return [p for p in PROTOCOL_ORDER if p in present] + [p for p in present if p not in PROTOCOL_ORDER]


SCALE_COLUMNS = ("depth", "width", "n_samples", "epochs", "rounds", "round_epochs")


def _values_text(series: pd.Series):
    values = list(dict.fromkeys(_scalar(v) for v in series.dropna()))
    if not values:
        return None
    return values[0] if len(values) == 1 else ", ".join(map(str, sorted(values, key=_sort_key)))


def verdicts(df: pd.DataFrame, acc_tol: float = V.ACC_TOL, loss_factor: float = V.LOSS_FACTOR,
             config_cols: Iterable[str] | None = None, confidence: float = V.CONFIDENCE) -> pd.DataFrame:
    """Per setting, protocol, pruner label and requested density: the mean with its t-interval over seeds,
    the oracle reference of that protocol, the difference ``d`` with its one-sided bounds and the verdict
    (`plantseek.report.verdicts`). Losses are geometric means. One row per cell, in density order."""
    rows = []
    for s in settings(df, config_cols):
        metric, ticket_metric, _, _ = performance_column(s.frame)
        tol = V.tolerance(metric, acc_tol, loss_factor)
        log = V.log_scale(metric)
        t_density, _ = planted_ticket(s.frame, ticket_metric)
        for protocol in protocols_in(s.frame):
            pframe = s.frame[s.frame["protocol"] == protocol].dropna(subset=[metric])
            ref = oracle_rows(pframe)
            r_mean, r_lo, r_hi, r_n = V.t_interval(ref[metric], confidence, log=log)
            _, planted = planted_ticket(pframe, ticket_metric)
            for (label, key), cell in pframe.groupby(["label", "density_key"], sort=False):
                c = V.compare_runs(cell, ref, metric, tol, confidence)
                mean, lo, hi, n = V.t_interval(cell[metric], confidence, log=log)
                row = {"setting": s.title, "task": s.task, "protocol": protocol, "pruner": label,
                       "pruner_name": str(cell["pruner"].iloc[0]),
                       "is_oracle": bool(len(ref)) and cell.index.isin(ref.index).all(),
                       "density_key": key, "kept_density": float(cell["x"].mean()),
                       "requested_density": float(cell["x"].mean()) if key == "ticket" else float(key),
                       "metric": _short(metric),
                       "n": n, "mean": mean, "ci_lo": lo, "ci_hi": hi,
                       "reference": r_mean, "reference_ci_lo": r_lo, "reference_ci_hi": r_hi, "reference_n": r_n,
                       "reference_pruner": str(ref["label"].iloc[0]) if len(ref) else None,
                       "planted_ticket": planted, "ticket_density": t_density,
                       "d": c.d, "d_lower": c.lower, "d_upper": c.upper, "test": c.test, "tolerance": tol,
                       "verdict": c.verdict, "note": _note(c, ref),
                       "layer_collapse": _rate(cell["layer_collapse"]) if "layer_collapse" in cell else math.nan}
                for col in SCALE_COLUMNS:
                    if col in cell:
                        row[col] = _values_text(cell[col])
                rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    return table.sort_values(["setting", "protocol", "pruner", "kept_density"], kind="stable").reset_index(drop=True)


def _note(c: V.Comparison, ref: pd.DataFrame) -> str:
    """Why a verdict is undecided without a test."""
    if ref.empty:
        return "no oracle rows for this protocol"
    if c.n < 2 or c.n_reference < 2:
        return "fewer than 2 seeds"
    return ""


def _rate(series: pd.Series) -> float:
    """Mean of a boolean metric (True/False, 1/0 or their text from a CSV); NaN without values."""
    v = series.dropna().map(lambda x: {"true": 1.0, "false": 0.0}.get(str(x).lower(), x))
    v = pd.to_numeric(v, errors="coerce").dropna()
    return float(v.mean()) if len(v) else math.nan


def sparsest_match(df: pd.DataFrame | None, acc_tol: float = V.ACC_TOL, loss_factor: float = V.LOSS_FACTOR,
                   config_cols: Iterable[str] | None = None, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per setting, protocol and pruner: the sparsest density whose verdict against the protocol's ticket
    oracle is "matches" (`verdicts`), the verdict one density sparser, and the verdicts at every density;
    `reference` names the oracle's rows (`oracle_name`), `reference mean` is their mean.

    ``table``: the `verdicts` table when it is already computed."""
    if table is None:
        table = verdicts(df, acc_tol, loss_factor, config_cols)
    rows = []
    if table.empty:
        return pd.DataFrame(rows)
    for (setting, protocol, label), sub in table.groupby(["setting", "protocol", "pruner"], sort=False):
        sub = sub.sort_values("kept_density", ascending=False)
        first = sub.iloc[0]
        accuracy = first["metric"] == "accuracy"
        best = sub.loc[sub["mean"].idxmax() if accuracy else sub["mean"].idxmin()]
        ref = first["reference_pruner"] if isinstance(first["reference_pruner"], str) else oracle_name(protocol)
        row = {"setting": setting, "task": first["task"], "protocol": protocol, "pruner": label,
               "metric": first["metric"], "reference": ref,
               "reference mean": first["reference"], "reference seeds": first["reference_n"],
               PLANTED: first["planted_ticket"], "ticket density": first["ticket_density"],
               "sparsest matching density": None, "x ticket density": None, "d at match": None,
               "next sparser density": None, "next sparser verdict": None, "d at next sparser": None,
               "best": float(best["mean"]), "best at density": float(best["kept_density"]),
               "seeds": int(sub["n"].max()),
               "verdicts": "; ".join(f"{r.kept_density:.3g}: {r.verdict}" for r in sub.itertuples())}
        matched = [i for i, v in enumerate(sub["verdict"]) if v == V.MATCHES]
        if matched:
            m = sub.iloc[matched[-1]]
            row["sparsest matching density"] = float(m["kept_density"])
            row["d at match"] = _d_text(m)
            if first["ticket_density"] and not pd.isna(first["ticket_density"]):
                row["x ticket density"] = float(m["kept_density"]) / float(first["ticket_density"])
            if matched[-1] + 1 < len(sub):
                nxt = sub.iloc[matched[-1] + 1]
                row["next sparser density"] = float(nxt["kept_density"])
                row["next sparser verdict"] = nxt["verdict"]
                row["d at next sparser"] = _d_text(nxt)
        rows.append(row)
    return pd.DataFrame(rows)


def _d_text(row) -> str:
    """``d`` with its one-sided 95% bounds: ``0.013 [-0.004, 0.03]`` (a log ratio for losses)."""
    return V.Comparison(row["d"], row["d_lower"], row["d_upper"], int(row["n"]), int(row["reference_n"]),
                        row["test"], row["tolerance"], row["verdict"]).interval()


def _short(metric: str) -> str:
    return _schema.get(metric).short
