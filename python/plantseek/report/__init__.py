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
    table: pd.DataFrame | None = None


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

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with ResultStore(db, readonly=True) as store:
        records = store.records()
        sweeps = store.sweeps()
    config_cols = _data.config_columns(records)
    raw = to_dataframe(records)
    df = _data.prepare(raw)
    settings_list = _data.settings(df, config_cols)
    table = _data.sparsest_match(df, acc_tol=acc_tol, loss_factor=loss_factor, config_cols=config_cols) \
        if settings_list else pd.DataFrame()
    colors = F.colors_for(df["label"]) if "label" in df else {}

    figs: list[_Fig] = []
    files: list[Path] = []
    tickets = _tickets(settings_list) if draw_tickets else []
    jobs = []
    for s in settings_list:
        jobs.append(("performance", s))
        jobs.append(("recall", s))
        jobs.append(("layers", s))
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
                       "layers": F.layer_density_figure}[kind](s, colors)
                if fig is None:
                    continue
                slug = f"{kind}_{s.slug}"
                section, ftitle = s.title, kind
                caption = _CAPTIONS[kind]
            png, paths = _render(fig, out, slug, formats)
            files.extend(paths)
            figs.append(_Fig(section, ftitle, slug, png, caption))
    if not table.empty:
        table.to_csv(out / "sparsest_match.csv", index=False)
        files.append(out / "sparsest_match.csv")
    page = _html(db, df, figs, table, sweeps, notes, acc_tol, loss_factor, title, formats)
    html_path = out / "index.html"
    html_path.write_text(page, encoding="utf-8")
    return ReportResult(html=html_path, figures=files, table=table)


_CAPTIONS = {
    "performance": ("Test performance of the network each pruner found (after training, for singleshot and "
                    "multishot; mask only, output read through a scale fitted on training data, for strong), "
                    "mean over seeds with a ±1 std band. The star is the planted ticket at its own density, "
                    "the dashed line the dense network trained with the same budget. Classification shows "
                    "accuracy (higher is better), regression the MSE (log axis, lower is better)."),
    "recall": ("Fraction of the planted ticket's parameters (weights and biases) that the found mask kept. "
               "The dotted diagonal is what a uniformly random mask keeps on average."),
    "layers": ("Density of each layer of the found masks (mean over seeds, per requested density) next to the "
               "planted ticket's own layer densities (black dashed). ▼ marks a layer left empty (collapse)."),
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
    """One compact table per setting: pruners down, protocols across."""
    out = []
    order = {p: i for i, p in enumerate(_data.PROTOCOL_ORDER)}
    for setting, sub in table.groupby("setting", sort=False):
        protos = sorted(dict.fromkeys(sub["protocol"]), key=lambda p: (order.get(p, 99), p))
        pruners = sorted(dict.fromkeys(sub["pruner"]), key=lambda p: (p == "ticket", p))
        first = sub.iloc[0]
        metric = first["metric"]
        head = "".join(f"<th>{html.escape(p)}</th>" for p in protos)
        rows = []
        for pr in pruners:
            cells = []
            for proto in protos:
                r = sub[(sub["pruner"] == pr) & (sub["protocol"] == proto)]
                if r.empty:
                    cells.append("<td></td>")
                    continue
                r = r.iloc[0]
                d, x = r["sparsest matching density"], r["x ticket density"]
                if d is not None and not pd.isna(d):
                    ratio = f" ({x:.3g}×)" if x is not None and not pd.isna(x) else ""
                    cls = "ok" if (x is not None and not pd.isna(x) and x <= 2 and pr != "ticket") else ""
                    cells.append(f"<td class='{cls}'>{d:.3g}{ratio}</td>")
                else:
                    cells.append(f"<td class='miss'>— <span class='meta'>(best {_fmt(r['best'])} at "
                                 f"{_fmt(r['best at density'])})</span></td>")
            cls = " class='ref'" if pr == "ticket" else ""
            rows.append(f"<tr{cls}><td class='l'>{html.escape(pr)}</td>{''.join(cells)}</tr>")
        caption = (f"{html.escape(setting)}: planted ticket {metric} {_fmt(first['ticket'])} at density "
                   f"{_fmt(first['ticket density'])}")
        out.append(f"<table><caption>{caption}</caption><thead><tr><th class='l'>pruner</th>{head}</tr></thead>"
                   f"<tbody>{''.join(rows)}</tbody></table>")
    return "<div class='pivots'>" + "".join(out) + "</div>"


def _findings(table: pd.DataFrame) -> list[str]:
    """Plain sentences from the sparsest-match table: who reaches the ticket's performance sparsest."""
    out = []
    if table.empty:
        return out
    order = {p: i for i, p in enumerate(_data.PROTOCOL_ORDER)}
    groups = sorted(table.groupby(["setting", "protocol"], sort=False),
                    key=lambda g: (list(dict.fromkeys(table["setting"])).index(g[0][0]), order.get(g[0][1], 99)))
    for (setting, protocol), sub in groups:
        sub = sub[sub["pruner"] != "ticket"]
        if sub.empty:
            continue
        matched = sub.dropna(subset=["sparsest matching density"])
        if matched.empty:
            out.append(f"<b>{html.escape(setting)}, {protocol}</b>: no pruner matches the planted ticket's "
                       f"performance at any density tried.")
            continue
        best_d = matched["sparsest matching density"].min()
        tied = matched[matched["sparsest matching density"] <= best_d * (1 + 1e-9)]
        best = tied.iloc[0]
        ratio = best["x ticket density"]
        ratio_txt = f" ({ratio:.3g}× the ticket's density)" if ratio is not None and not pd.isna(ratio) else ""
        never = sorted(set(sub["pruner"]) - set(matched["pruner"]))
        who = ", ".join(sorted(tied["pruner"]))
        verb = "matches" if len(tied) == 1 else "match"
        s = (f"<b>{html.escape(setting)}, {protocol}</b>: {html.escape(who)} {verb} the ticket down to "
             f"density {best_d:.3g}{ratio_txt}")
        if never:
            s += f"; never within tolerance: {html.escape(', '.join(never))}"
        out.append(s + ".")
    return out


def _html(db, df, figs, table, sweeps, notes, acc_tol, loss_factor, title, formats) -> str:
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
        "and biases); the x axes show the measured density of the masks, and a requested density "
        "<code>ticket</code> is the planted ticket's own. Bands are ±1 standard deviation over seeds.</p>")
    if n == 0:
        parts.append("<p class='note'>The database has no runs yet.</p></body></html>")
        return "".join(parts)
    parts.append("<h2 id='summary'>Summary</h2>")
    if not table.empty:
        parts.append(
            f"<h3>Sparsest density at which each pruner still matches the planted ticket</h3>"
            f"<p class='meta'>Matches: mean test accuracy over seeds ≥ the ticket's − {acc_tol:g} (classification), "
            f"or mean test loss ≤ {loss_factor:g} × the ticket's (regression). Each cell gives that density and, in "
            f"brackets, how many times the planted ticket's density it is (1× = the ticket's own); — means no "
            f"density tried matched, with the pruner's best result. Green cells are within 2× of the ticket's "
            f"density. The full table is in <code>sparsest_match.csv</code>.</p>")
        parts.append(_pivot_html(table))
        findings = _findings(table)
        if findings:
            parts.append("<h3>What the runs show</h3><ul>" + "".join(f"<li>{f}</li>" for f in findings) + "</ul>")
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
