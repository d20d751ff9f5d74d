"""Reports from a results database: figures (PNG and SVG files) and one self-contained HTML page.

>>> from plantseek.report import build_report
>>> build_report("results.db", "report/")                              # doctest: +SKIP

The report reads rows of the database only; it never imports training code. Ticket drawings build the
tickets from the task registry (tasks know nothing of pruning).
"""
from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..store import ResultStore, to_dataframe
from . import data as _data

__all__ = ["build_report", "ReportResult"]


@dataclass
class ReportResult:
    html: Path
    figures: list[Path] = field(default_factory=list)
    table: pd.DataFrame | None = None  # sparsest matching density per setting, protocol and pruner
    verdicts: pd.DataFrame | None = None  # the verdict of every cell (setting, protocol, pruner, density)
    findings: list = field(default_factory=list)  # plantseek.report.findings.Finding, one per paper finding


@dataclass
class _Fig:
    section: str
    title: str
    slug: str
    png: bytes
    caption: str = ""


def _render(fig, out_dir: Path, slug: str, formats) -> tuple[bytes, list[Path]]:
    import matplotlib.pyplot as plt

    paths = []
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    png = buf.getvalue()
    fig.set_layout_engine("none")  # the layout is done; do not compute it again for the other formats
    for fmt in formats:
        p = out_dir / f"{slug}.{fmt}"
        if fmt == "png":
            p.write_bytes(png)
        else:
            fig.savefig(p, format=fmt)
        paths.append(p)
    plt.close(fig)
    return png, paths


def _tickets(settings_list) -> list[tuple[str, int, Any]]:
    """(task, depth, ticket) for every task and depth in the results; tasks that cannot build a ticket
    (a user's task not importable here) are skipped with a note."""
    seen = {}
    for s in settings_list:
        d = s.depth
        if d is None:
            continue
        seen.setdefault((s.task, d), None)
    out = []
    for task, depth in sorted(seen):
        try:
            from .. import tasks

            ticket = tasks.get(task).ticket(depth)
        except Exception as exc:  # noqa: BLE001 - report what we could not draw
            out.append((task, depth, exc))
            continue
        out.append((task, depth, ticket))
    return out


def build_report(db: str | os.PathLike, out: str | os.PathLike, *, acc_tol: float = 0.02, loss_factor: float = 2.0,
                 formats=("png", "svg"), progress: bool = True, title: str | None = None,
                 draw_tickets: bool = True) -> ReportResult:
    """Write the figures and ``index.html`` for the results database ``db`` into directory ``out``."""
    from tqdm.auto import tqdm

    from . import figures as F
    from . import findings as _findings

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ResultStore(db, readonly=True) as store:
        records = store.records()
        sweeps = store.sweeps()
    config_cols = _data.config_columns(records)
    raw = to_dataframe(records)
    df = _data.prepare(raw)
    settings_list = _data.settings(df, config_cols)
    verdicts, table, found = pd.DataFrame(), pd.DataFrame(), []
    if settings_list:
        verdicts = _data.verdicts(df, acc_tol, loss_factor, config_cols)
        table = _data.sparsest_match(df, table=verdicts)
        found = _findings.evaluate_table(verdicts)
    colors = F.colors_for(df["label"]) if "label" in df else {}

    figs: list[_Fig] = []
    files: list[Path] = []
    tickets = _tickets(settings_list) if draw_tickets else []
    jobs = []
    for s in settings_list:
        jobs.append(("performance", s))
        jobs.append(("recall", s))
        jobs.append(("layers", s))
        jobs.append(("training_curves", s))  # drawn only for settings with gradual or dynamic runs
    jobs.extend(("ticket", t) for t in tickets)
    notes: list[str] = []
    with tqdm(total=len(jobs), desc="report", unit="fig", disable=not progress) as bar:
        for kind, item in jobs:
            bar.update(1)
            if kind == "ticket":
                task, depth, ticket = item
                if isinstance(ticket, Exception):
                    notes.append(f"No drawing of the {task} ticket at depth {depth}: {ticket}")
                    continue
                fig = F.ticket_figure(ticket, f"{task} ticket, depth {depth}")
                slug = f"ticket_{task}_depth{depth}"
                section, ftitle = "tickets", f"{task}, depth {depth}"
                caption = ("Each line is a nonzero weight of the planted ticket; its width grows with |weight| "
                           "(relative to the ticket's largest); red is positive, blue negative. Node fill "
                           "shows the sign of the neuron's bias.")
            else:
                s = item
                fig = {"performance": F.performance_figure, "recall": F.recall_figure,
                       "layers": F.layer_density_figure,
                       "training_curves": F.training_curves_figure}[kind](s, colors)
                if fig is None:
                    continue
                slug = f"{kind}_{s.slug}"
                section, ftitle = s.title, kind.replace("_", " ")
                caption = _CAPTIONS[kind]
            png, paths = _render(fig, out, slug, formats)
            files.extend(paths)
            figs.append(_Fig(section, ftitle, slug, png, caption))
    for name, frame in (("sparsest_match", table), ("verdicts", verdicts),
                        ("findings", _findings.findings_frame(found))):
        if not frame.empty:
            frame.to_csv(out / f"{name}.csv", index=False)
            files.append(out / f"{name}.csv")
    page = _html(db, df, figs, table, found, sweeps, notes, acc_tol, loss_factor, title, formats)
    html_path = out / "index.html"
    html_path.write_text(page, encoding="utf-8")
    return ReportResult(html=html_path, figures=files, table=table, verdicts=verdicts, findings=found)


_CAPTIONS = {
    "performance": ("Test performance of the network each pruner found (after training, for singleshot and "
                    "multishot; mask only, output read through a scale fitted on training data, for strong), "
                    "mean over seeds with a band for its 95% Student t confidence interval (regression: "
                    "geometric mean, interval of the log MSE). The black diamond (with its interval) and "
                    f"dotted line are the ticket oracle run under the same protocol, the reference of every "
                    f"verdict: '{_data.ORACLE_TRAINED}' under the weak protocols, '{_data.ORACLE_MASK}' (the "
                    f"mask alone) under strong; the star is the '{_data.PLANTED}' at its own density, the "
                    "dashed line the dense network trained with the same budget. Classification shows accuracy (higher is "
                    "better), regression the MSE (log axis, lower is better)."),
    "recall": ("Fraction of the planted ticket's parameters (weights and biases) that the found mask kept, "
               "mean over seeds with a band for its 95% Student t confidence interval. "
               "The dotted diagonal is what a uniformly random mask keeps on average."),
    "training_curves": ("Ticket recall during training, for the during-training protocols: gradual (Zhu & Gupta's "
                        "gradual pruning by the run's pruner), SET (dynamic sparse training, grow = 'random') and "
                        "RigL (grow = 'gradient'). Left: the fraction of the planted ticket's parameters the mask "
                        "keeps; right: functional recall (ticket neurons the network computes up to a positive "
                        "factor); at the start of training and after every mask update, against the optimiser "
                        "step, a value holding until the next update. Mean over seeds with a band from the "
                        "smallest to the largest seed; one row per requested density, the planted ticket's "
                        "density in the title; the dotted line is a random mask's expected recall (its density)."),
    "layers": ("Density of each layer of the found masks (mean over seeds, one panel per requested density, "
               f"sparsest first, the ticket's own density last) next to the layer densities of the '{_data.PLANTED}' "
               "(black dashed). ▼ marks a layer left empty (collapse)."),
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1400px;padding:1.5em 2em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
h3{margin-bottom:.3em}
table{border-collapse:collapse;font-size:.85em;margin:.8em 0} th,td{border:1px solid #ccc;padding:.25em .6em;
text-align:right} th{background:#f2f2f2} td.l,th.l{text-align:left}
tr.ok td,td.ok{background:#dff3df} tr.ref td{background:#f7f7f7;color:#555} td.miss{color:#777}
caption{text-align:left;font-weight:600;padding:.3em 0;font-size:1.05em}
.pivots{display:flex;flex-wrap:wrap;gap:0 2em}
figure{margin:1em 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85em;color:#555;max-width:1100px}
.meta{color:#555;font-size:.9em} .note{background:#fff7e0;border-left:4px solid #f0c040;padding:.5em 1em}
nav a{margin-right:1em} pre{background:#f6f6f6;padding:.8em;overflow:auto;font-size:.8em}
"""


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and pd.isna(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.3g}"
    return html.escape(str(v))


def _table_html(table: pd.DataFrame, highlight=None) -> str:
    cols = list(table.columns)
    text = {c: not pd.api.types.is_numeric_dtype(table[c]) for c in cols}
    head = "".join(f"<th class='l'>{html.escape(str(c))}</th>" if text[c] else
                   f"<th>{html.escape(str(c))}</th>" for c in cols)
    body = []
    for _, row in table.iterrows():
        cls = highlight(row) if highlight else ""
        cells = "".join(f"<td class='l'>{_fmt(row[c])}</td>" if text[c] and not isinstance(row[c], float)
                        else f"<td>{_fmt(row[c])}</td>" for c in cols)
        body.append(f"<tr class='{cls}'>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _pivot_html(table: pd.DataFrame) -> str:
    """One compact table per setting: pruners down, protocols across; each cell the sparsest density whose
    verdict against the protocol's oracle is "matches", and the verdict one density sparser."""
    out = []
    for setting, sub in table.groupby("setting", sort=False):
        protos = _data.protocols_in(sub)
        row_of = sub["pruner"].map(_data.pivot_rows(sub["pruner"]))
        pruners = sorted(dict.fromkeys(row_of), key=lambda p: (_data.is_oracle_label(p), p))
        first = sub.iloc[0]
        metric = first["metric"]
        head = "".join(f"<th>{html.escape(p)}</th>" for p in protos)
        names = " / ".join(dict.fromkeys(sub.set_index("protocol").loc[protos, "reference"]))
        rows = [f"<tr class='ref'><td class='l'>reference: {html.escape(names)}</td>"
                + "".join(_oracle_cell(sub[sub["protocol"] == proto]) for proto in protos) + "</tr>"]
        for pr in pruners:
            cells = []
            for proto in protos:
                r = sub[(row_of == pr) & (sub["protocol"] == proto)]
                cells.append("<td></td>" if r.empty else _pivot_cell(r.iloc[0], _data.is_oracle_label(pr)))
            cls = " class='ref'" if _data.is_oracle_label(pr) else ""
            rows.append(f"<tr{cls}><td class='l'>{html.escape(pr)}</td>{''.join(cells)}</tr>")
        caption = (f"{html.escape(setting)}: {metric}; {_data.PLANTED} {_fmt(first[_data.PLANTED])} at "
                   f"density {_fmt(first['ticket density'])}")
        out.append(f"<table><caption>{caption}</caption><thead><tr><th class='l'>pruner</th>{head}</tr></thead>"
                   f"<tbody>{''.join(rows)}</tbody></table>")
    return "<div class='pivots'>" + "".join(out) + "</div>"


def _oracle_cell(sub: pd.DataFrame) -> str:
    if sub.empty or pd.isna(sub.iloc[0]["reference mean"]):
        return "<td class='miss'>no oracle rows</td>"
    r = sub.iloc[0]
    return f"<td>{_fmt(r['reference mean'])} <span class='meta'>({int(r['reference seeds'])} seeds)</span></td>"


def _pivot_cell(r, oracle: bool) -> str:
    d, x = r["sparsest matching density"], r["x ticket density"]
    nxt = ""
    if r["next sparser density"] is not None and not pd.isna(r["next sparser density"]):
        nxt = (f"<br><span class='meta'>{_fmt(r['next sparser density'])}: {html.escape(r['next sparser verdict'])} "
               f"(d {html.escape(r['d at next sparser'])})</span>")
    if d is not None and not pd.isna(d):
        ratio = f" ({x:.3g}×)" if x is not None and not pd.isna(x) else ""
        cls = "ok" if (x is not None and not pd.isna(x) and x <= 2 and not oracle) else ""
        return f"<td class='{cls}' title='{html.escape(r['verdicts'])}'>{d:.3g}{ratio}{nxt}</td>"
    return (f"<td class='miss' title='{html.escape(r['verdicts'])}'>— <span class='meta'>(best "
            f"{_fmt(r['best'])} at {_fmt(r['best at density'])})</span></td>")


_STATUS_CLASS = {"reproduced": "ok", "not reproduced": "miss", "undecided": ""}


def _findings_html(found) -> str:
    """The paper's findings as evaluated by `plantseek.report.findings`: result, numbers, scale."""
    rows = []
    for f in found:
        evidence = "<br>".join(html.escape(e) for e in f.evidence)
        rows.append(f"<tr><td class='l'>{html.escape(f.claim)}</td>"
                    f"<td class='l {_STATUS_CLASS.get(f.status, '')}'><b>{html.escape(f.status)}</b></td>"
                    f"<td class='l'>{evidence}</td><td class='l meta'>{html.escape(f.scale)}</td></tr>")
    return ("<table><thead><tr><th class='l'>finding (paper)</th><th class='l'>result</th>"
            "<th class='l'>numbers</th><th class='l'>scale</th></tr></thead><tbody>" + "".join(rows)
            + "</tbody></table>")


def _html(db, df, figs, table, found, sweeps, notes, acc_tol, loss_factor, title, formats) -> str:
    n = len(df)
    ok = int((df["status"] == "ok").sum()) if n else 0
    failed = n - ok
    title = title or (f"plantseek report: {sweeps[-1]['name']}" if sweeps else "plantseek report")
    versions = ", ".join(sorted(set(map(str, df["version"].dropna())))) if n else "—"
    devices = (", ".join(sorted(set(map(str, df["device"].dropna())))) if n and "device" in df else "") or "default"
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='meta'>Database <code>{html.escape(str(db))}</code>: {n} runs ({ok} ok, {failed} failed); "
        f"plantseek {html.escape(versions)}; devices {html.escape(devices)}; written {when}.</p>",
    ]
    sections = list(dict.fromkeys(f.section for f in figs if f.section != "tickets"))
    nav = ["<a href='#summary'>Summary</a>"] + [f"<a href='#{_anchor(s)}'>{html.escape(s)}</a>" for s in sections]
    if any(f.section == "tickets" for f in figs):
        nav.append("<a href='#tickets'>Tickets</a>")
    if failed:
        nav.append("<a href='#failed'>Failed runs</a>")
    parts.append("<nav>" + "".join(nav) + "</nav>")
    parts.append(
        "<p class='meta'>Depth counts linear (weight) layers; the paper counts neuron layers including the input, "
        "so the paper's depth L is depth L−1 here. Density is the fraction of prunable parameters kept (weights "
        "and biases); the x axes show the kept density of the masks (<code>kept_density</code>), and a "
        "requested density <code>ticket</code> is the planted ticket's own. Bands and error bars are 95% Student t confidence "
        "intervals of the mean over seeds (regression: of the log MSE, around the geometric mean).</p>")
    if n == 0:
        parts.append("<p class='note'>The database has no runs yet.</p></body></html>")
        return "".join(parts)
    parts.append("<h2 id='summary'>Summary</h2>")
    if not table.empty:
        parts.append(
            f"<h3>Sparsest density at which each pruner still matches the ticket oracle</h3>"
            f"<p class='meta'>The reference of each protocol is the ticket oracle run under that protocol: "
            f"<b>{_data.ORACLE_TRAINED}</b> under the weak protocols (the planted ticket's mask, trained), "
            f"<b>{_data.ORACLE_MASK}</b> under strong (the mask alone, read through the fitted scale); the "
            f"<b>{_data.PLANTED}</b> is the ticket itself, before any training. With d = oracle accuracy − the "
            f"pruner's (classification) or log(pruner's loss / oracle's) (regression), paired by seed when both "
            f"have the same seeds and by Welch's t otherwise: <b>matches</b> when the one-sided 95% upper bound of "
            f"d is ≤ {acc_tol:g} (accuracy) or log {loss_factor:g} (loss), <b>does not match</b> when the lower "
            f"bound exceeds it, <b>undecided</b> otherwise or with fewer than 2 seeds. Each cell gives the "
            f"sparsest matching density and, in brackets, how many times the planted ticket's density it is (1× = "
            f"the ticket's own), with the verdict one density sparser and its d [lower, upper bound]; — means no "
            f"density tried matched, with the pruner's best mean. Green cells are within 2× of the ticket's "
            f"density; hover a cell for the verdict at every density. Full tables: <code>sparsest_match.csv</code>, "
            f"<code>verdicts.csv</code>.</p>")
        parts.append(_pivot_html(table))
    if found:
        parts.append("<h3>The paper's findings, computed from these runs</h3><p class='meta'>Each finding is a "
                     "function over the verdicts (<code>plantseek findings DB</code>; rules in "
                     "docs/findings.md). In the numbers, [a, b] after a mean is its 95% t-interval and after d "
                     "its one-sided 95% bounds.</p>")
        parts.append(_findings_html(found))
    for note in notes:
        parts.append(f"<p class='note'>{html.escape(note)}</p>")
    for section in sections:
        parts.append(f"<h2 id='{_anchor(section)}'>{html.escape(section)}</h2>")
        for f in figs:
            if f.section == section:
                parts.append(_figure_html(f, formats))
    tickets = [f for f in figs if f.section == "tickets"]
    if tickets:
        parts.append("<h2 id='tickets'>The planted tickets</h2>")
        for f in tickets:
            parts.append(f"<h3>{html.escape(f.title)}</h3>" + _figure_html(f, formats))
    if failed:
        parts.append(f"<h2 id='failed'>Failed runs ({failed})</h2><p class='meta'>Rerun them with "
                     f"<code>plantseek sweep FILE --db DB --retry-failed</code>.</p>")
        bad = df[df["status"] != "ok"].head(50)
        rows = pd.DataFrame({
            "task": bad["task"], "pruner": bad["label"], "protocol": bad["protocol"],
            "density": bad["density"].astype(str), "seed": bad["seed"],
            "error": bad["error"].map(lambda e: (e or "").strip().splitlines()[0] if (e or "").strip() else ""),
        })
        parts.append(_table_html(rows))
    if sweeps:
        parts.append("<h2>Sweep files</h2>")
        unique = list({(s["name"], s["source"]): s for s in sweeps}.values())
        for s in unique[-5:]:
            parts.append(f"<details><summary>{html.escape(s['name'])} ({s['n_runs']} runs)</summary>"
                         f"<pre>{html.escape(s['source'] or '')}</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _anchor(s: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-").lower()


def _figure_html(f: _Fig, formats) -> str:
    b64 = base64.b64encode(f.png).decode("ascii")
    links = " ".join(f"<a href='{html.escape(f.slug)}.{fmt}'>{fmt.upper()}</a>" for fmt in formats)
    return (f"<figure><img alt='{html.escape(f.section)}: {html.escape(f.title)}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{html.escape(f.caption)} <span class='meta'>({links})</span></figcaption></figure>")
