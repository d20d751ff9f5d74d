"""Reports: figures, the sparsest-match table, the self-contained HTML page, and a look at it in Chromium."""
from __future__ import annotations

import ast
import base64
import math
import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from plantseek.report import build_report
from plantseek.report.data import prepare, settings, sparsest_match, verdicts
from plantseek.report.verdicts import MATCHES, NO_MATCH, UNDECIDED, compare, compare_runs, t_interval
from plantseek.store import ResultStore, to_dataframe
from sweep_helpers import fake_results_db

SWEEP = """
[sweep]
name = "report-test"
tasks = ["circle", "relu"]
pruners = ["random", "synflow", "ticket"]
densities = [0.01, 0.1, 0.5, 1.0, "ticket"]
seeds = [0, 1, 2]
depth = 3
width = 30
epochs = 1

[[experiment]]
protocol = "singleshot"

[[experiment]]
protocol = "strong"
pruners = ["random", "snip"]
seeds = [0, 1]
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return fake_results_db(tmp_path_factory.mktemp("report"), SWEEP, fail_seeds=[2])


@pytest.fixture(scope="module")
def report(db, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    return build_report(db, out, progress=False)


def test_report_writes_figures_and_a_self_contained_page(report):
    out = report.html.parent
    names = {p.name for p in report.figures}
    for task in ("circle", "relu"):
        for kind in ("performance", "recall", "layers"):
            assert f"{kind}_{task}_depth3_width30.png" in names and f"{kind}_{task}_depth3_width30.svg" in names
        assert f"ticket_{task}_depth3.png" in names
    page = report.html.read_text()
    # self-contained: every image is embedded, nothing is fetched from elsewhere
    imgs = re.findall(r"<img [^>]*src='([^']*)'", page)
    assert len(imgs) == 8 and all(src.startswith("data:image/png;base64,") for src in imgs)
    assert not re.search(r"<(script|link)[^>]+(src|href)=", page)
    png = base64.b64decode(imgs[0].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png == (out / "performance_circle_depth3_width30.png").read_bytes()
    assert "Sparsest density" in page and "Failed runs (" in page and "report-test" in page
    assert "paper's depth L is depth L−1" in page
    assert (out / "sparsest_match.csv").exists()


def test_sparsest_match_table(report):
    t = report.table
    assert set(t["protocol"]) == {"singleshot", "strong"}
    v = report.verdicts
    row = t[(t["task"] == "circle") & (t["protocol"] == "singleshot") & (t["pruner"] == "synflow")].iloc[0]
    assert row["metric"] == "accuracy" and row["planted ticket (untrained)"] == pytest.approx(0.95)
    # the reference is the singleshot oracle's own runs at density "ticket", not the untrained planted ticket
    oracle = v[(v["task"] == "circle") & (v["protocol"] == "singleshot") & v["is_oracle"]]
    assert len(oracle) == 1 and oracle.iloc[0]["density_key"] == "ticket"
    assert row["reference mean"] == pytest.approx(oracle.iloc[0]["mean"]) and row["reference mean"] != pytest.approx(0.95)
    assert row["reference"] == "ticket mask (trained)"
    assert row["reference seeds"] == 2 and row["seeds"] == 2  # seed 2 failed
    assert oracle.iloc[0]["verdict"] == "matches" and oracle.iloc[0]["d"] == 0  # paired with itself
    # the fake random stays far below the oracle: every density is a clear miss
    rand = t[(t["task"] == "circle") & (t["protocol"] == "singleshot") & (t["pruner"] == "random")].iloc[0]
    assert pd.isna(rand["sparsest matching density"]) and "matches" not in rand["verdicts"].replace("not match", "")
    # strong ran no oracle: no reference, every verdict undecided with the reason
    strong = v[v["protocol"] == "strong"]
    assert strong["reference"].isna().all() and set(strong["verdict"]) == {"undecided"}
    assert set(strong["note"]) == {"no oracle rows for this protocol"}
    relu = t[(t["task"] == "relu") & (t["pruner"] == "synflow") & (t["protocol"] == "singleshot")].iloc[0]
    assert relu["metric"] == "loss" and relu["planted ticket (untrained)"] == pytest.approx(1e-4)
    assert relu["x ticket density"] == pytest.approx(relu["sparsest matching density"] / relu["ticket density"])
    assert (report.html.parent / "verdicts.csv").exists() and (report.html.parent / "findings.csv").exists()


def _rows(cells, task="circle", protocol="singleshot", metric="test_accuracy", **extra):
    """Hand-made result rows: cells maps (pruner, density) to one value per seed (seed = position)."""
    rows = []
    for (pruner, density), values in cells.items():
        for seed, value in enumerate(values):
            if value is None:
                continue
            rows.append({"task": task, "pruner": pruner, "protocol": protocol, "density": density, "seed": seed,
                         "depth": 2, "width": 10, "kept_density": 0.004 if density == "ticket" else density,
                         metric: value, "ticket_" + metric: 0.95 if metric == "test_accuracy" else 1e-4,
                         "status": "ok", **extra})
    return rows


def test_sparsest_match_rule_on_a_handmade_table():
    oracle = [0.95, 0.96, 0.955]
    cells = {("ticket", "ticket"): oracle,
             ("p", 1.0): [0.955, 0.96, 0.956],
             ("p", 0.1): [0.945, 0.955, 0.948],  # 0.005 to 0.007 below the oracle, seed by seed
             ("p", 0.01): [0.80, 0.82, 0.81]}   # clearly worse
    df = prepare(pd.DataFrame(_rows(cells)))
    t = sparsest_match(df, acc_tol=0.02, config_cols=["depth", "width"])
    p = t[t["pruner"] == "p"].iloc[0]
    assert p["reference mean"] == pytest.approx(np.mean(oracle)) and p["planted ticket (untrained)"] == pytest.approx(0.95)
    assert p["sparsest matching density"] == pytest.approx(0.1)
    assert p["next sparser density"] == pytest.approx(0.01) and p["next sparser verdict"] == "does not match"
    assert p["verdicts"] == "1: matches; 0.1: matches; 0.01: does not match"
    assert p["x ticket density"] == pytest.approx(0.1 / 0.004) and p["seeds"] == 3
    # a tighter tolerance: at 0.1 the gap (0.0057 +- 0.002) is no longer within it
    t2 = sparsest_match(df, acc_tol=0.004, config_cols=["depth", "width"])
    assert t2[t2["pruner"] == "p"].iloc[0]["sparsest matching density"] == pytest.approx(1.0)


def test_reference_is_the_oracle_of_the_same_protocol_with_the_default_rescale():
    rows = (_rows({("ticket", "ticket"): [0.97, 0.975, 0.972], ("p", 0.1): [0.96, 0.965, 0.962]})
            + _rows({("ticket", "ticket"): [0.70, 0.72, 0.71]}, rescale="none")
            + _rows({("ticket", "ticket"): [0.80, 0.82, 0.81], ("p", 0.1): [0.79, 0.81, 0.80]}, protocol="multishot"))
    for r in rows:
        r.setdefault("rescale", "fit" if r["protocol"] == "singleshot" else None)
    df = prepare(pd.DataFrame(rows))
    assert set(df["label"]) == {"ticket mask (trained)", "p", "ticket mask (trained, rescale none)"}
    (s,) = settings(df, ["depth", "width", "rescale"])  # rescale is a label, not a setting
    v = verdicts(df, config_cols=["depth", "width", "rescale"])
    ref = v.drop_duplicates("protocol").set_index("protocol")["reference"]
    assert ref["singleshot"] == pytest.approx(0.972333, abs=1e-5)  # not the rescale="none" oracle
    assert ref["multishot"] == pytest.approx(0.81)  # old rows without rescale: the default
    none = v[v["pruner"] == "ticket mask (trained, rescale none)"].iloc[0]
    assert not none["is_oracle"] and none["verdict"] == "does not match"
    assert set(v.loc[v["pruner"] == "p", "verdict"]) == {"matches"}
    # only rescale="none" oracle rows: those are the reference
    only_none = prepare(pd.DataFrame([r for r in rows if not (r["pruner"] == "ticket" and r["rescale"] == "fit")]))
    v2 = verdicts(only_none, config_cols=["depth", "width", "rescale"])
    assert v2[v2["protocol"] == "singleshot"].iloc[0]["reference"] == pytest.approx(0.71)
    assert v2.loc[v2["pruner"] == "ticket mask (trained, rescale none)", "is_oracle"].all()


def test_verdict_clear_match_and_clear_miss():
    oracle = pd.Series([0.955, 0.958, 0.953, 0.957], index=[10, 11, 12, 13])
    hit = compare(pd.Series([0.95, 0.96, 0.955, 0.952]), oracle, metric="test_accuracy", tol=0.02)
    assert hit.test == "Welch t" and hit.verdict == MATCHES and hit.upper <= 0.02
    miss = compare(pd.Series([0.80, 0.81, 0.79]), oracle, metric="test_accuracy", tol=0.02)
    assert miss.verdict == NO_MATCH and miss.lower > 0.02 and miss.d == pytest.approx(0.95575 - 0.80)
    # losses compare as log ratios: 1.1x the oracle is within 2x, 5x is not
    ref = pd.Series([1e-4, 2e-4, 1.5e-4])
    near = compare(ref * 1.1, ref, metric="test_loss", tol=math.log(2))
    assert near.test == "paired t" and near.d == pytest.approx(math.log(1.1)) and near.verdict == MATCHES
    assert compare(ref * 5, ref, metric="test_loss", tol=math.log(2)).verdict == NO_MATCH


def test_verdict_undecided_with_two_seeds_or_fewer():
    two = compare(pd.Series([0.93, 0.96]), pd.Series([0.95, 0.955], index=[5, 6]), metric="test_accuracy", tol=0.02)
    # Welch with 2 + 2 seeds: d = 0.0075, but the one-sided bounds are wide
    assert two.verdict == UNDECIDED and two.lower < 0.02 < two.upper and two.d == pytest.approx(0.0075)
    one = compare(pd.Series([0.5]), pd.Series([0.95, 0.955]), metric="test_accuracy", tol=0.02)
    assert one.verdict == UNDECIDED and math.isnan(one.upper) and one.d == pytest.approx(0.4525)


def test_verdict_pairs_runs_by_seed():
    # seeds differ a lot (each seed is its own planted network) but the pruner is 0.01 below the oracle on
    # each: paired it matches; the same numbers on different seeds (Welch) cannot tell
    oracle = pd.Series([0.90, 0.95, 0.99])
    pruner = pd.Series([0.889, 0.941, 0.980])
    paired = compare(pruner, oracle, metric="test_accuracy", tol=0.02)
    assert paired.test == "paired t" and paired.verdict == MATCHES
    diffs = (oracle - pruner).to_numpy()
    half = 2.919985580355516 * diffs.std(ddof=1) / math.sqrt(3)  # t(0.95, 2)
    assert paired.upper == pytest.approx(diffs.mean() + half) and paired.lower == pytest.approx(diffs.mean() - half)
    welch = compare(pruner.set_axis([3, 4, 5]), oracle, metric="test_accuracy", tol=0.02)
    assert welch.test == "Welch t" and welch.verdict == UNDECIDED
    # compare_runs averages repeated runs of a seed and pairs on the seed column
    runs = pd.DataFrame({"seed": [0, 1, 2], "test_accuracy": pruner})
    ref = pd.DataFrame({"seed": [2, 1, 0], "test_accuracy": oracle[::-1].to_numpy()})
    assert compare_runs(runs, ref, "test_accuracy", 0.02).upper == pytest.approx(paired.upper)


def test_t_interval_is_students():
    mean, lo, hi, n = t_interval([1.0, 2.0, 4.0])
    assert n == 3 and mean == pytest.approx(7 / 3)
    assert hi - mean == pytest.approx(4.302652729911275 * np.std([1, 2, 4], ddof=1) / math.sqrt(3))
    g, glo, ghi, _ = t_interval([1e-4, 1e-2], log=True)
    assert g == pytest.approx(1e-3) and glo * ghi == pytest.approx(1e-6)  # symmetric on the log scale
    assert t_interval([0.3])[1:3] == (0.3, 0.3) and math.isnan(t_interval([])[0])


def test_performance_figure_draws_the_t_interval_and_the_oracle():
    from matplotlib.collections import PolyCollection

    from plantseek.report.figures import colors_for, performance_figure

    values = {1.0: [0.96, 0.95, 0.97], 0.5: [0.90, 0.80, 0.95], 0.1: [0.60, 0.62, 0.61]}
    cells = {("p", d): v for d, v in values.items()}
    cells[("ticket", "ticket")] = [0.97, 0.98, 0.975]
    df = prepare(pd.DataFrame(_rows(cells)))
    (s,) = settings(df, ["depth", "width"])
    fig = performance_figure(s, colors_for(df["label"]))
    ax = fig.axes[0]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection) and len(c.get_paths())]
    y = band.get_paths()[0].vertices[:, 1]
    spread = np.std(values[0.5], ddof=1)
    t_half = 4.302652729911275 * spread / math.sqrt(3)
    assert y.max() == pytest.approx(np.mean(values[0.5]) + t_half)  # the widest point of the band
    assert y.max() != pytest.approx(np.mean(values[0.5]) + spread)  # not +-1 std
    assert "95% Student t confidence interval" in fig._suptitle.get_text().replace("\n", " ")
    legend = [t.get_text().replace("\n", " ") for t in fig.legends[0].get_texts()]
    assert "band: 95% Student t confidence interval over seeds" in legend
    assert "ticket mask (trained): reference (oracle, this protocol)" in legend
    assert "planted ticket (untrained)" in legend
    # the oracle is the reference marker, not a curve of its own
    assert "ticket" not in legend and "ticket mask (trained)" not in legend
    dotted = [l for l in ax.get_lines() if l.get_linestyle() == ":"]
    assert any(np.allclose(l.get_ydata(), 0.975) for l in dotted)
    plt.close(fig)


def test_settings_split_on_varying_configuration(db):
    with ResultStore(db) as store:
        df = prepare(to_dataframe(store.records()))
    s = settings(df, ["depth", "width", "epochs"])
    assert [x.title for x in s] == ["circle (depth 3, width 30)", "relu (depth 3, width 30)"]
    df2 = df.copy()
    df2.loc[df2.index[::2], "epochs"] = 5
    s2 = settings(df2, ["depth", "width", "epochs"])
    assert len(s2) == 4 and "epochs" in s2[0].title


def test_empty_database_report(tmp_path):
    ResultStore(tmp_path / "e.db").close()
    res = build_report(tmp_path / "e.db", tmp_path / "out", progress=False)
    assert "no runs yet" in res.html.read_text()


def test_ticket_drawing_of_every_task(tmp_path):
    from plantseek import tasks
    from plantseek.report.figures import ticket_figure

    names = ["relu", "circle", "helix"]
    for name in names:
        task = tasks.get(name)
        fig = ticket_figure(task.ticket(task.min_depth + 2), name)
        fig.savefig(tmp_path / f"{name}.png")
    assert len(list(tmp_path.glob("*.png"))) == len(names)


def _layer_rows(cells, ticket_density=0.004, protocol="singleshot", **extra):
    """`_rows` with layer densities; the oracle's rows keep the ticket's density whatever was asked (rows of
    sweeps that ran it at every density)."""
    rows = _rows(cells, protocol=protocol, **extra)
    for r in rows:
        if r["pruner"] == "ticket" or r["density"] == "ticket":
            r["kept_density"] = ticket_density
        r.update(layer_density_0=r["kept_density"], layer_density_1=r["kept_density"] / 2,
                 ticket_layer_density_0=ticket_density, ticket_layer_density_1=ticket_density / 2)
    return rows


def test_layer_panels_follow_the_requested_density_with_the_ticket_last():
    from plantseek.report.figures import colors_for, layer_density_figure

    cells = {(pruner, d): [0.9, 0.91, 0.92] for pruner in ("p", "ticket") for d in (0.5, 0.02, "ticket", 0.1)}
    df = prepare(pd.DataFrame(_layer_rows(cells)))
    (s,) = settings(df, ["depth", "width"])
    fig = layer_density_figure(s, colors_for(df["label"]))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == [f"singleshot, density {d}" for d in ("0.02", "0.1", "0.5", "ticket")]
    plt.close(fig)


def _tick_labels(axis) -> dict[float, str]:
    axis.figure.canvas.draw()
    return {round(t.get_loc(), 12): t.label1.get_text() for t in axis.get_major_ticks()
            if t.label1.get_visible() and t.label1.get_text()}


def test_density_axes_label_every_decade_and_the_densities_tried():
    from plantseek.report.figures import colors_for, performance_figure, recall_figure

    cells = {("p", d): [0.6, 0.62, 0.61] for d in (0.02, 0.05, 0.1, 0.2, 0.5)}
    cells[("ticket", "ticket")] = [0.97, 0.98, 0.975]
    rows = _rows(cells)
    for r in rows:
        r["recall"] = 0.5
        if r["density"] == "ticket":
            r["kept_density"] = 0.03
    df = prepare(pd.DataFrame(rows))
    (s,) = settings(df, ["depth", "width"])
    for make in (performance_figure, recall_figure):
        fig = make(s, colors_for(df["label"]))
        ax = fig.axes[0]
        labels = _tick_labels(ax.xaxis)
        for d in (0.02, 0.05, 0.1, 0.2, 0.5):
            assert labels.get(d) == f"{d:g}", (make.__name__, labels)
        lo, hi = ax.get_xlim()
        decades = [10.0 ** e for e in range(-6, 1) if lo <= 10.0 ** e <= hi]
        assert decades and all(round(d, 12) in labels for d in decades)
        plt.close(fig)


def test_ticket_drawing_legend_leaves_the_layer_names_free(tmp_path):
    from plantseek import tasks
    from plantseek.report.figures import ticket_figure

    for name in ("relu", "circle", "helix"):
        task = tasks.get(name)
        fig = ticket_figure(task.ticket(task.min_depth + 1), name)
        fig.savefig(tmp_path / f"{name}.png")  # lays the figure out, as the report does
        renderer = fig.canvas.get_renderer()
        (legend,) = fig.legends + [l for l in (ax.get_legend() for ax in fig.axes) if l is not None]
        box = legend.get_window_extent(renderer)
        names = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
        assert any(t.get_text() == "layer 1" for t in names)
        for t in names:
            assert not box.overlaps(t.get_window_extent(renderer)), (name, t.get_text())
        plt.close(fig)


def test_long_pruner_labels_keep_the_layout(recwarn):
    """Labels with many options (edge-popup's) once collapsed the panels: constrained_layout gave up."""
    import io
    import warnings

    from plantseek.report.figures import colors_for, layer_density_figure, performance_figure, recall_figure

    long = ("edge-popup-annealed", '{"batch_size": 32, "epochs": 1, "lr": 0.1, "momentum": 0.9, '
            '"samples": null, "score_init": "kaiming", "weight_decay": 0.0005}')
    cells = {("p", d): [0.2, 0.21] for d in (0.1, "ticket")}
    rows = _layer_rows(cells, protocol="strong")
    for r in rows:
        r["pruner"], r["pruner_options"], r["recall"] = long[0], long[1], 0.3
    df = prepare(pd.DataFrame(rows))
    (s,) = settings(df, ["depth", "width"])
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*constrained_layout not applied")
        for make in (performance_figure, recall_figure, layer_density_figure):
            fig = make(s, colors_for(df["label"]))
            fig.savefig(io.BytesIO(), format="png", dpi=110)
            axes = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
            assert all(ax.get_position().width > 0.2 for ax in axes), make.__name__
            plt.close(fig)


def test_the_oracle_and_the_planted_ticket_are_named_apart(report):
    """The oracle's rows are "ticket mask (trained)" ("ticket mask" under strong), the star is the "planted
    ticket (untrained)", in the tables, the page and the figures; the database keeps the pruner "ticket"."""
    t, v = report.table, report.verdicts
    single = t[(t["protocol"] == "singleshot")]
    assert "ticket mask (trained)" in set(single["pruner"]) and "ticket" not in set(t["pruner"])
    assert set(single["reference"]) == {"ticket mask (trained)"}
    assert set(t.loc[t["protocol"] == "strong", "reference"]) == {"ticket mask"}
    assert "planted ticket (untrained)" in t.columns and "planted ticket" not in t.columns
    assert set(v.loc[v["is_oracle"], "pruner_name"]) == {"ticket"}
    page = report.html.read_text()
    assert "ticket mask (trained)" in page and "planted ticket (untrained)" in page
    assert "oracle (reference)" not in page and "untrained planted ticket" not in page


def test_strong_oracle_is_the_ticket_mask():
    rows = _rows({("ticket", "ticket"): [0.9, 0.91, 0.92], ("p", 0.1): [0.5, 0.52, 0.51]}, protocol="strong")
    df = prepare(pd.DataFrame(rows))
    assert set(df["label"]) == {"ticket mask", "p"}
    from plantseek.report.figures import colors_for, performance_figure

    (s,) = settings(df, ["depth", "width"])
    fig = performance_figure(s, colors_for(df["label"]))
    legend = [x.get_text().replace("\n", " ") for x in fig.legends[0].get_texts()]
    assert "ticket mask: reference (oracle, this protocol)" in legend and "planted ticket (untrained)" in legend
    plt.close(fig)


def test_store_and_report_never_import_training_code():
    """DESIGN.md: the store and the report read rows; they never import training, seeking or pruning."""
    root = Path(__file__).resolve().parents[1] / "python" / "plantseek"
    files = [root / "store.py"] + sorted((root / "report").glob("*.py"))
    forbidden = re.compile(r"(^|\.)(train|seek|seeking|pruners|nn|sweep)(\.|$)")
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                mods = [node.module or ""] + [f"{node.module or ''}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            for m in mods:
                assert not forbidden.search(m), f"{f.name} imports {m}"


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.skipif(_chromium() is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_page_renders_in_headless_chromium(report, tmp_path):
    shot = tmp_path / "page.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
           f"--screenshot={shot}", "--window-size=1400,2400", report.html.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, timeout=90)
    assert shot.exists() and shot.stat().st_size > 20_000, proc.stderr.decode()[-2000:]
    from matplotlib.image import imread

    img = imread(shot)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1300
    # the page is not blank: plenty of non-white pixels (text, tables, figures)
    nonwhite = (img[..., :3].mean(axis=-1) < 0.9).mean()
    assert nonwhite > 0.02
