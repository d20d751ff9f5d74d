"""Tables the report is drawn from: rows of the results database, grouped and averaged over seeds.

Reads rows only (no training code)."""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np
import pandas as pd

PROTOCOL_ORDER = ("singleshot", "multishot", "strong")
# configuration columns that are the axes of a figure rather than what separates figures
AXIS_COLUMNS = ("task", "pruner", "pruner_options", "protocol", "density", "seed")
BOOKKEEPING = ("status", "error", "key", "version", "device", "duration_s", "batch_runs", "attempts",
               "started_at", "finished_at")
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
    """Add `label` (pruner with options), `x` (measured density, else the requested one) and `kind`."""
    df = df.copy()
    if df.empty:
        return df
    opts = df["pruner_options"] if "pruner_options" in df else pd.Series([None] * len(df), index=df.index)
    df["label"] = [pruner_label(p, o) for p, o in zip(df["pruner"], opts)]
    requested = pd.to_numeric(df["density"], errors="coerce")
    measured = pd.to_numeric(df["density_measured"], errors="coerce") if "density_measured" in df else requested
    df["x"] = measured.fillna(requested)
    df["density_key"] = df["density"].map(lambda v: "ticket" if v == "ticket" else f"{float(v):.6g}")
    for col in df.columns:
        if col.startswith(("test_", "ticket_", "dense_", "recall", "precision", "layer_density", "f1", "jaccard")):
            if df[col].dtype == object:
                df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def kind_of(frame: pd.DataFrame) -> str:
    if "test_accuracy" in frame and frame["test_accuracy"].notna().any():
        return "classification"
    return "regression"


def performance_column(frame: pd.DataFrame) -> tuple[str, str, str, str]:
    """(metric, ticket metric, dense metric, axis label) for the task kind."""
    if kind_of(frame) == "classification":
        return "test_accuracy", "ticket_test_accuracy", "dense_test_accuracy", "test accuracy"
    return "test_loss", "ticket_test_loss", "dense_test_loss", "test loss (MSE)"


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


_PANEL_NOTE_COLUMNS = ("epochs", "rounds", "round_epochs", "optimizer", "lr", "batch_size")


def _panel_notes(frame: pd.DataFrame, columns: list[str]) -> dict:
    """Per protocol, the settings that differ between the protocols of one figure (e.g. their epochs)."""
    protos = list(dict.fromkeys(frame["protocol"]))
    if len(protos) < 2:
        return {}
    notes = {p: [] for p in protos}
    for c in columns:
        values = {p: frame.loc[frame["protocol"] == p, c].iloc[0] for p in protos}
        if len({str(v) for v in values.values()}) > 1 and c in _PANEL_NOTE_COLUMNS:
            for p in protos:
                if c in ("rounds", "round_epochs") and p != "multishot":
                    continue
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


def curves(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per protocol, pruner label and requested density: mean x, mean, std, min, max and count of `metric`."""
    if metric not in frame or frame[metric].notna().sum() == 0:
        return pd.DataFrame()
    g = frame.dropna(subset=[metric]).groupby(["protocol", "label", "density_key"], sort=False)
    table = g.agg(x=("x", "mean"), mean=(metric, "mean"), std=(metric, "std"), lo=(metric, "min"),
                  hi=(metric, "max"), n=(metric, "size")).reset_index()
    table["std"] = table["std"].fillna(0.0)
    return table.sort_values(["protocol", "label", "x"])


def ticket_reference(frame: pd.DataFrame, ticket_metric: str) -> tuple[float | None, float | None]:
    """(ticket density, ticket performance): from `ticket_density` if the rows have it, else from the runs
    that asked for density "ticket"."""
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


def layer_columns(frame: pd.DataFrame) -> tuple[list[str], list[str]]:
    found = sorted((c for c in frame.columns if LAYER_RE.match(c) and frame[c].notna().any()),
                   key=lambda c: int(LAYER_RE.match(c).group(1)))
    ticket = sorted((c for c in frame.columns if TICKET_LAYER_RE.match(c) and frame[c].notna().any()),
                    key=lambda c: int(TICKET_LAYER_RE.match(c).group(1)))
    return found, ticket


def protocols_in(frame: pd.DataFrame) -> list[str]:
    present = list(dict.fromkeys(frame["protocol"]))
    return [p for p in PROTOCOL_ORDER if p in present] + [p for p in present if p not in PROTOCOL_ORDER]


def sparsest_match(df: pd.DataFrame, acc_tol: float = 0.02, loss_factor: float = 2.0,
                   config_cols: Iterable[str] | None = None) -> pd.DataFrame:
    """Per setting, protocol and pruner: the sparsest density whose mean performance over seeds still
    matches the planted ticket's (accuracy >= ticket's - acc_tol; loss <= ticket's x loss_factor)."""
    rows = []
    for s in settings(df, config_cols):
        metric, ticket_metric, _, _ = performance_column(s.frame)
        t_density, t_perf = ticket_reference(s.frame, ticket_metric)
        table = curves(s.frame, metric)
        if table.empty:
            continue
        for (protocol, label), sub in table.groupby(["protocol", "label"], sort=False):
            if t_perf is None:
                matched = sub.iloc[0:0]
            elif metric == "test_accuracy":
                matched = sub[sub["mean"] >= t_perf - acc_tol]
            else:
                matched = sub[sub["mean"] <= t_perf * loss_factor]
            best = sub.loc[sub["mean"].idxmax() if metric == "test_accuracy" else sub["mean"].idxmin()]
            row = {"setting": s.title, "task": s.task, "protocol": protocol, "pruner": label,
                   "metric": _short(metric), "ticket": t_perf, "ticket density": t_density,
                   "sparsest matching density": None, "x ticket density": None,
                   "best": float(best["mean"]), "best at density": float(best["x"]),
                   "seeds": int(sub["n"].max())}
            if len(matched):
                m = matched.loc[matched["x"].idxmin()]
                row["sparsest matching density"] = float(m["x"])
                if t_density:
                    row["x ticket density"] = float(m["x"]) / t_density
            rows.append(row)
    return pd.DataFrame(rows)


def _short(metric: str) -> str:
    return {"test_accuracy": "accuracy", "test_loss": "loss"}.get(metric, metric)
