"""The paper's findings as code: each finding is a function over the verdict table of a results table.

>>> from plantseek.report import findings
>>> for f in findings.evaluate("results.db"):                          # doctest: +SKIP
...     print(f.status, f.claim)

A finding function receives the table of `plantseek.report.data.verdicts` (per setting, protocol, pruner and
density: mean with its t-interval over seeds, the difference to the ticket oracle of that protocol with its
one-sided 95% bounds, and the non-inferiority verdict) and returns an `Outcome`: reproduced, not reproduced
or undecided, with the numbers behind it. Three-valued logic throughout: a claim that needs a "matches" is
reproduced by one and refuted when every candidate "does not match"; an "undecided" verdict, or rows that are
missing, leave it undecided. The rules are in docs/findings.md. Reads rows only (no training code).

Results can come from a results database or from the small CSV that `export_csv` writes (the README's
findings block is generated from docs/results/paper_small.csv; see `update_readme`).
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import pandas as pd

from .. import metric_schema as _schema
from . import blocks as _blocks
from . import data as _data
from . import verdicts as V

__all__ = ["REPRODUCED", "NOT_REPRODUCED", "UNDECIDED", "Finding", "Outcome", "finding", "available",
           "load_rows", "verdict_table", "evaluate", "evaluate_table", "export_csv", "findings_frame", "format_text",
           "readme_block", "update_readme", "current_block", "BEGIN", "END"]

REPRODUCED, NOT_REPRODUCED, UNDECIDED = "reproduced", "not reproduced", "undecided"
# metrics `export_csv` keeps besides the configuration: what the verdicts and findings read (declared names)
EXPORT_METRICS = _schema.declared(("kept_density", "ticket_density", "test_accuracy", "test_loss",
                                   "ticket_test_accuracy", "ticket_test_loss", "layer_collapse"))
BEGIN = "<!-- findings:begin"
END = "<!-- findings:end -->"
README_CSV = "docs/results/paper_small.csv"


@dataclass
class Outcome:
    """What a finding function returns: its status, the numbers behind it and the verdict rows it read."""

    status: str
    evidence: list[str]
    cells: pd.DataFrame = field(default_factory=pd.DataFrame)


@dataclass
class Finding:
    key: str
    claim: str
    status: str
    evidence: list[str]
    scale: str


@dataclass(frozen=True)
class _Spec:
    key: str
    claim: str
    fn: Callable[[pd.DataFrame], Outcome]


_REGISTRY: dict[str, _Spec] = {}


def finding(key: str, claim: str):
    """Register ``fn(verdict_table) -> Outcome`` as the finding ``key`` (the paper's claim in words)."""
    def wrap(fn):
        if key in _REGISTRY:
            raise ValueError(f"finding {key!r} registered twice")
        _REGISTRY[key] = _Spec(key, claim, fn)
        return fn
    return wrap


def available() -> list[str]:
    return list(_REGISTRY)


# --- three-valued logic over verdict rows ------------------------------------------------------------------

def _all(statuses: Iterable[str]) -> str:
    statuses = list(statuses)
    if not statuses or UNDECIDED in statuses and NOT_REPRODUCED not in statuses:
        return UNDECIDED
    return NOT_REPRODUCED if NOT_REPRODUCED in statuses else REPRODUCED


def _some_match(cells: pd.DataFrame) -> str:
    """Reproduced when some cell matches the oracle, not when every cell does not match."""
    if cells.empty:
        return UNDECIDED
    if (cells["verdict"] == V.MATCHES).any():
        return REPRODUCED
    return NOT_REPRODUCED if (cells["verdict"] == V.NO_MATCH).all() else UNDECIDED


_NEGATION = {REPRODUCED: NOT_REPRODUCED, NOT_REPRODUCED: REPRODUCED, UNDECIDED: UNDECIDED}


def _none_match(cells: pd.DataFrame) -> str:
    """Reproduced when every cell does not match the oracle, not when some cell matches: `_some_match`
    negated."""
    return _NEGATION[_some_match(cells)]


def _seekers(table: pd.DataFrame, protocol: str | tuple[str, ...], tasks: Iterable[str] | None = None,
             below: float = 1.0) -> pd.DataFrame:
    """Cells of real pruners (not the oracle) of the protocol(s) at densities below ``below`` (1: dense)."""
    protocols = (protocol,) if isinstance(protocol, str) else protocol
    t = table[table["protocol"].isin(protocols) & (table["pruner_name"] != _data.ORACLE)
              & (table["requested_density"] < below * (1 - 1e-9))]
    if tasks is not None:
        t = t[t["task"].isin(list(tasks))]
    return t


def _cell(r) -> str:
    """One verdict cell in words: ``synflow at 0.1 on circle: 0.95 [0.93, 0.97] vs ticket mask (trained) 0.97,
    d 0.02 [0.004, 0.036]: undecided`` (t-interval of the mean; one-sided 95% bounds of d; the reference named
    as in the figures, `plantseek.report.data.oracle_name`)."""
    def f(v):
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3g}"

    spread = f" [{f(r['ci_lo'])}, {f(r['ci_hi'])}]" if r["n"] > 1 else ""
    bounds = f" [{f(r['d_lower'])}, {f(r['d_upper'])}]" if not math.isnan(r["d_lower"]) else ""
    note = f" ({r['note']})" if isinstance(r.get("note"), str) and r["note"] else ""
    ref = r.get("reference_pruner")
    ref = ref if isinstance(ref, str) else _data.oracle_name(r["protocol"])
    return (f"{r['pruner']} at {f(r['kept_density'])} on {r['task']} ({r['protocol']}, {int(r['n'])} seeds): "
            f"{r['metric']} {f(r['mean'])}{spread} vs {ref} {f(r['reference'])}, d {f(r['d'])}{bounds}: "
            f"{r['verdict']}{note}")


def _summary(cells: pd.DataFrame, what: str) -> list[str]:
    """The evidence for a some/none-match part: the matching cells, or the closest miss."""
    if cells.empty:
        return [f"undecided: no rows for {what}"]
    counts = cells["verdict"].value_counts()
    head = (f"{what}: {len(cells)} cells, " + ", ".join(f"{counts.get(v, 0)} {v}"
                                                        for v in (V.MATCHES, V.UNDECIDED, V.NO_MATCH)))
    matched = cells[cells["verdict"] == V.MATCHES]
    if len(matched):
        shown = matched.sort_values("kept_density").head(2)
    else:
        shown = cells.assign(_gap=cells["d_lower"].fillna(cells["d"]) - cells["tolerance"]) \
            .sort_values("_gap").head(1)
    return [head] + [_cell(r) for _, r in shown.iterrows()]


def _sparsest(cells: pd.DataFrame, verdicts=(V.MATCHES,)) -> float | None:
    hit = cells[cells["verdict"].isin(verdicts)]
    return None if hit.empty else float(hit["kept_density"].min())


# --- the paper's findings (DESIGN.md, "The paper's experiments", "Findings to check against") -------------

@finding("singleshot-weak-tickets",
         "Singleshot finds weak tickets at density >= 0.1 on circle and relu, and none below 0.1.")
def _singleshot_weak(table: pd.DataFrame) -> Outcome:
    parts, evidence, used = [], [], []
    for task in ("circle", "relu"):
        cells = _seekers(table, "singleshot", [task])
        cells = cells[cells["requested_density"] >= 0.1 * (1 - 1e-9)]
        parts.append(_some_match(cells))
        evidence += _summary(cells, f"singleshot on {task} at density 0.1 to <1")
        used.append(cells)
    low = _seekers(table, "singleshot", below=0.1)
    parts.append(_none_match(low))
    evidence += _summary(low, "singleshot below density 0.1 (every task)")
    return Outcome(_all(parts), evidence, pd.concat(used + [low]))


@finding("helix-fails", "Singleshot finds no weak ticket on helix at any density below 1.")
def _helix_fails(table: pd.DataFrame) -> Outcome:
    cells = _seekers(table, "singleshot", ["helix"])
    status = _none_match(cells)
    return Outcome(status, _summary(cells, "singleshot on helix below density 1"), cells)


def _wilson(k: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval (95%) of a proportion k/n."""
    if n <= 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@finding("collapse-at-0.01",
         "Every singleshot pruner fails at density <= 0.01, and most of those runs have a collapsed layer.")
def _collapse(table: pd.DataFrame) -> Outcome:
    cells = _seekers(table, "singleshot", below=0.01 * (1 + 1e-6))
    fails = _none_match(cells)
    evidence = _summary(cells, "singleshot at density <= 0.01 (every task)")
    rated = cells.dropna(subset=["layer_collapse"]) if "layer_collapse" in cells else cells.iloc[0:0]
    if rated.empty:
        evidence.append("undecided: no layer_collapse values for these rows")
        return Outcome(_all([fails, UNDECIDED]), evidence, cells)
    k, n = float((rated["layer_collapse"] * rated["n"]).sum()), float(rated["n"].sum())
    lo, hi = _wilson(k, n)
    collapse = REPRODUCED if lo > 0.5 else NOT_REPRODUCED if hi < 0.5 else UNDECIDED
    evidence.append(f"layer collapse in {k:.0f} of {n:.0f} runs: {k / n:.2f} [{lo:.2f}, {hi:.2f}] "
                    f"(95% Wilson interval; a majority is needed)")
    return Outcome(_all([fails, collapse]), evidence, cells)


@finding("multishot-synflow-best",
         "Multishot SynFlow is the best pruner on circle and matches the oracle at the planted ticket's "
         "density (within 2x).")
def _multishot_synflow(table: pd.DataFrame) -> Outcome:
    cells = _seekers(table, "multishot", ["circle"])
    syn = cells[cells["pruner_name"] == "synflow"]
    if syn.empty:
        return Outcome(UNDECIDED, ["undecided: no rows for multishot synflow on circle"], cells)
    others = cells[cells["pruner_name"] != "synflow"]
    near = syn[syn["requested_density"] <= 2 * syn["ticket_density"]]
    reach = _some_match(near)
    evidence = _summary(near, "multishot synflow on circle at <= 2x the ticket's density")
    s_syn, s_other = _sparsest(syn), _sparsest(others)
    if s_syn is not None and (s_other is None or s_syn <= s_other * (1 + 1e-6)):
        best = REPRODUCED
    elif s_other is not None:
        hit = others[others["verdict"] == V.MATCHES]
        at = syn[syn["density_key"] == hit.loc[hit["kept_density"].idxmin(), "density_key"]]
        best = NOT_REPRODUCED if len(at) and (at["verdict"] == V.NO_MATCH).all() else UNDECIDED
    else:
        best = UNDECIDED
    evidence.append(f"sparsest matching density: synflow {_num(s_syn)}, best other pruner {_num(s_other)}"
                    + ("" if others.empty else f" ({_best_label(others)})"))
    return Outcome(_all([reach, best]), evidence, cells)


def _best_label(cells: pd.DataFrame) -> str:
    hit = cells[cells["verdict"] == V.MATCHES]
    return "none matches" if hit.empty else str(hit.loc[hit["kept_density"].idxmin(), "pruner"])


def _num(v) -> str:
    return "none" if v is None else f"{v:.3g}"


@finding("grasp-collapses-early",
         "Multishot GraSP collapses early: it no longer matches at the sparsest density where most other "
         "pruners still match.")
def _grasp(table: pd.DataFrame) -> Outcome:
    cells = _seekers(table, "multishot")
    statuses, evidence = [], []
    for setting, sub in cells.groupby("setting", sort=True):
        grasp = sub[sub["pruner_name"] == "grasp"]
        others = sub[sub["pruner_name"] != "grasp"]
        if grasp.empty or others.empty:
            evidence.append(f"{setting}: no rows for multishot grasp and other pruners")
            continue
        share = others.assign(_m=others["verdict"] == V.MATCHES).groupby("density_key")
        majority = [k for k, g in share if g["_m"].mean() >= 0.5]
        if not majority:
            evidence.append(f"{setting}: fewer than half of the other pruners match at any density")
            continue
        key = min(majority, key=lambda k: float(others.loc[others["density_key"] == k, "kept_density"].mean()))
        at = grasp[grasp["density_key"] == key]
        if at.empty:
            statuses.append(UNDECIDED)
            evidence.append(f"{setting}: undecided: no grasp rows at density {key}")
            continue
        statuses.append(_none_match(at))
        n_match = int(share.get_group(key)["_m"].sum())
        evidence.append(f"{setting}: {n_match} of {share.get_group(key)['pruner'].nunique()} other pruners "
                        f"match at density {key}; " + _cell(at.iloc[0]))
    if not statuses:
        evidence.insert(0, "undecided: no setting where most other pruners match")
    return Outcome(_all(statuses), evidence, cells)


@finding("strong-only-edge-popup",
         "No method finds a strong ticket except edge-popup near density 0.5 on circle (annealed edge-popup "
         "near 0.1).")
def _strong(table: pd.DataFrame) -> Outcome:
    cells = _seekers(table, "strong")
    ep = cells[cells["pruner_name"] == "edge-popup"]
    epa = cells[cells["pruner_name"] == "edge-popup-annealed"]
    a = ep[(ep["task"] == "circle") & ep["requested_density"].between(0.3, 0.7)]
    b = epa[(epa["task"] == "circle") & epa["requested_density"].between(0.05, 0.2)]
    rest = cells[~cells["pruner_name"].isin(["edge-popup", "edge-popup-annealed"])]
    ep_other = cells[cells["pruner_name"].isin(["edge-popup", "edge-popup-annealed"]) & (cells["task"] != "circle")]
    parts = [_some_match(a), _some_match(b), _none_match(rest), _none_match(ep_other)]
    evidence = (_summary(a, "strong edge-popup on circle near density 0.5")
                + _summary(b, "strong edge-popup-annealed on circle near density 0.1")
                + _summary(rest, "strong, every other pruner (every task)")
                + _summary(ep_other, "strong edge-popup on the other tasks"))
    return Outcome(_all(parts), evidence, cells)


@finding("regression-harder",
         "Regression is harder than classification: on every regression task the sparsest weak ticket found "
         "is further from the planted ticket's density than on every classification task.")
def _regression(table: pd.DataFrame) -> Outcome:
    cells = _seekers(table, ("singleshot", "multishot"))
    statuses, evidence = [], []
    # compare tasks at the same shape: the setting's title without its task
    shape = pd.Series([s[len(t):] for s, t in zip(cells["setting"], cells["task"])], index=cells.index, dtype=object)
    for key, sub in cells.groupby(shape, sort=True):
        ratios = {}
        for task, t in sub.groupby("task", sort=True):
            td = float(t["ticket_density"].mean())
            sure, maybe = _sparsest(t), _sparsest(t, (V.MATCHES, V.UNDECIDED))
            # (optimistic, pessimistic) multiple of the ticket's density; inf: no weak ticket found
            ratios[task] = (t["metric"].iloc[0], maybe / td if maybe else math.inf, sure / td if sure else math.inf)
        cls = [r for r in ratios.values() if r[0] == "accuracy"]
        reg = [r for r in ratios.values() if r[0] == "loss"]
        where = key.strip(" ()") or "all settings"
        evidence.append(f"{where}: sparsest match as a multiple of the ticket's density (weak protocols): "
                        + ", ".join(f"{task} {_range(r[1], r[2])}" for task, r in ratios.items()))
        if not cls or not reg:
            evidence.append(f"{where}: undecided: no rows for both classification and regression tasks")
            continue
        if max(c[2] for c in cls) < min(r[1] for r in reg):
            statuses.append(REPRODUCED)
        elif any(r[2] <= c[1] for r in reg for c in cls):
            statuses.append(NOT_REPRODUCED)
        else:
            statuses.append(UNDECIDED)
    if not statuses and not evidence:
        evidence.append("undecided: no rows for the weak protocols")
    return Outcome(_all(statuses), evidence, cells)


def _range(optimistic: float, pessimistic: float) -> str:
    def f(v):
        return "none" if math.isinf(v) else f"{v:.3g}x"

    return f(pessimistic) if optimistic == pessimistic else f"{f(optimistic)} to {f(pessimistic)}"


# --- evaluation and output ---------------------------------------------------------------------------------

def load_rows(source: str | os.PathLike) -> tuple[pd.DataFrame, list[str]]:
    """(prepared rows, configuration columns) from a results database or a CSV written by `export_csv` (its
    columns under the names of earlier versions read under today's, `metric_schema.upgrade_columns`)."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"no such results file: {path}")
    if path.suffix.lower() == ".csv":
        raw = pd.read_csv(path)
        raw = raw.rename(columns=_schema.upgrade_columns(raw.columns))
        config_cols = [c for c in raw.columns if not _schema.is_declared(c) and c not in _schema.BOOKKEEPING]
    else:
        from ..store import ResultStore, to_dataframe

        with ResultStore(path, readonly=True) as store:
            records = store.records()
        config_cols = _data.config_columns(records)
        raw = to_dataframe(records)
    return _data.prepare(raw), config_cols


def _scale(cells: pd.DataFrame) -> str:
    """The scale the finding was measured at, per protocol, from the rows it read."""
    if cells.empty:
        return "no rows"
    parts = []
    names = {"n_samples": "samples"}
    for protocol in _data.protocols_in(cells):
        sub = cells[cells["protocol"] == protocol]
        seeds = sorted(set(sub["n"].astype(int)))
        items = [f"seeds {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]}"]
        for col in _data.SCALE_COLUMNS:
            if col in ("rounds", "round_epochs") and protocol != "multishot":
                continue  # options of multishot only
            if col in sub and sub[col].notna().any():
                values = sorted({str(v) for v in sub[col].dropna()}, key=_natural)
                items.append(f"{names.get(col, col).replace('_', ' ')} {'/'.join(values)}")
        parts.append(f"{protocol}: " + ", ".join(items))
    return "; ".join(parts)


def _natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def evaluate_table(table: pd.DataFrame, keys: Iterable[str] | None = None) -> list[Finding]:
    """Evaluate the registered findings (or those named in ``keys``) on a `verdicts` table."""
    out = []
    for key in keys or available():
        spec = _REGISTRY[key]
        if table.empty:
            out.append(Finding(key, spec.claim, UNDECIDED, ["undecided: no rows"], "no rows"))
            continue
        o = spec.fn(table)
        out.append(Finding(key, spec.claim, o.status, o.evidence, _scale(o.cells)))
    return out


def verdict_table(source: str | os.PathLike, acc_tol: float = V.ACC_TOL,
                  loss_factor: float = V.LOSS_FACTOR) -> pd.DataFrame:
    """The `plantseek.report.data.verdicts` table of a results database or an exported CSV."""
    df, config_cols = load_rows(source)
    return _data.verdicts(df, acc_tol, loss_factor, config_cols) if len(df) else pd.DataFrame()


def evaluate(source: str | os.PathLike, acc_tol: float = V.ACC_TOL, loss_factor: float = V.LOSS_FACTOR,
             keys: Iterable[str] | None = None) -> list[Finding]:
    """Evaluate the paper's findings on a results database or an exported CSV."""
    return evaluate_table(verdict_table(source, acc_tol, loss_factor), keys)


def findings_frame(found: list[Finding]) -> pd.DataFrame:
    return pd.DataFrame([{"finding": f.key, "claim": f.claim, "result": f.status, "evidence": " | ".join(f.evidence),
                          "scale": f.scale} for f in found])


def format_text(found: list[Finding]) -> str:
    """Plain text for the terminal: per finding its result, the numbers behind it and the scale."""
    lines = []
    for i, f in enumerate(found, 1):
        lines.append(f"[{i}/{len(found)}] {f.key}: {f.status.upper()}")
        lines.append(f"    claim: {f.claim}")
        lines.extend(f"    - {e}" for e in f.evidence)
        lines.append(f"    scale: {f.scale}")
    return "\n".join(lines)


def export_csv(source: str | os.PathLike, out: str | os.PathLike) -> int:
    """Write the ok rows of a results database with only the columns the findings and the README tables read
    (configuration, densities, test metrics, layer collapse), numbers to 6 significant digits; returns the
    number of rows."""
    df, config_cols = load_rows(source)
    if "status" in df:
        df = df[df["status"] == "ok"]
    # configuration columns that take one value in every row cannot split settings: leave them out
    keep = set(_data.AXIS_COLUMNS) | set(_data.SCALE_COLUMNS)
    cols = [c for c in config_cols if c in df and (c in keep or df[c].astype(str).nunique() > 1)]
    cols += [c for c in EXPORT_METRICS if c in df]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    df[cols].to_csv(out, index=False, float_format="%.6g", lineterminator="\n")
    return len(df)


def _md_pivot(table: pd.DataFrame) -> list[str]:
    """Markdown: per setting, pruners down and protocols across, the sparsest density that matches."""
    lines = []
    for setting, sub in table.groupby("setting", sort=True):
        protos = _data.protocols_in(sub)
        first = sub.iloc[0]
        lines += ["", f"*{setting}* ({first['metric']}; planted ticket density {first['ticket density']:.3g}):", "",
                  "| pruner | " + " | ".join(protos) + " |", "|---|" + "---|" * len(protos)]
        rows = sub["pruner"].map(_data.pivot_rows(sub["pruner"]))
        for pruner in sorted(dict.fromkeys(rows), key=lambda p: (_data.is_oracle_label(p), p)):
            cells = []
            for proto in protos:
                r = sub[(rows == pruner) & (sub["protocol"] == proto)]
                cells.append("" if r.empty else _md_cell(r.iloc[0]))
            lines.append(f"| {pruner} | " + " | ".join(cells) + " |")
    return lines


def _md_cell(r) -> str:
    d = r["sparsest matching density"]
    if d is None or pd.isna(d):
        return f"— (best {r['best']:.3g} at {r['best at density']:.3g})"
    x = r["x ticket density"]
    return f"{d:.3g}" + ("" if x is None or pd.isna(x) else f" ({x:.3g}x)")


def readme_block(source: str | os.PathLike, display: str = README_CSV, acc_tol: float = V.ACC_TOL,
                 loss_factor: float = V.LOSS_FACTOR, table: pd.DataFrame | None = None) -> str:
    """The README's generated findings block (markers included) from a results file; ``display`` is the
    path the block names as its source.

    ``table``: the `verdict_table` of ``source`` when it is already computed."""
    if table is None:
        table = verdict_table(source, acc_tol, loss_factor)
    found = evaluate_table(table)
    seeds = int(table["n"].max()) if len(table) else 0
    lines = [f"{BEGIN} generated from {display} by `plantseek findings {display} --readme README.md`; regenerate "
             f"{display} after `make demo` with `plantseek findings report/paper_small.db --csv-out {display}` "
             f"(docs/findings.md). Do not edit by hand. -->",
             f"Computed from the results by `plantseek findings` ({display}, {seeds} seeds at most per cell): "
             f"a pruner matches the ticket oracle of its protocol ({_data.ORACLE_TRAINED} under the weak "
             f"protocols, {_data.ORACLE_MASK} under strong) when the one-sided 95% "
             f"upper bound of the gap is within {acc_tol:g} accuracy or {loss_factor:g}x the loss, and does not "
             f"match when the lower bound is beyond it (paired t over seeds, else Welch); in the numbers, "
             f"[a, b] after a mean is its 95% t-interval and after d its one-sided 95% bounds.", ""]
    for f in found:
        lines.append(f"- **{f.status}**: {f.claim}")
        lines.extend(f"  - {e}" for e in f.evidence)
        lines.append(f"  - scale: {f.scale}")
    if len(table):
        lines += ["", "Sparsest density at which each pruner matches the ticket oracle (in brackets: times the "
                  "planted ticket's density; — : no density matched, with the best mean):"]
        lines += _md_pivot(_data.sparsest_match(None, table=table))
    lines.append(END)
    return "\n".join(lines) + "\n"


def update_readme(readme: str | os.PathLike, block: str) -> bool:
    """Replace the block between the findings markers of ``readme``; True when the file changed."""
    return _blocks.replace(readme, block, BEGIN, END, "findings")


def current_block(readme: str | os.PathLike) -> str | None:
    """The findings block of ``readme`` as it stands (markers included), or None."""
    return _blocks.current(readme, BEGIN, END)
