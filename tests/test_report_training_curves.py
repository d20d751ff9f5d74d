"""The report and the flat exports on the during-training protocols (gradual, dynamic): list-valued (curve)
metrics, the recall-during-training figure, and dynamic named SET or RigL by its growth rule."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from plantseek.report import build_report
from plantseek.report import figures as F
from plantseek.report.data import prepare, protocol_label, settings, training_curves
from plantseek.store import ResultStore, export, summary_table, to_dataframe
from plantseek.sweep import run_sweep

SWEEP = """
[sweep]
name = "curves-test"
tasks = ["circle"]
pruners = ["random", "magnitude"]
densities = [0.1]
seeds = [0, 1]
depth = 3
width = 24
epochs = 2
n_samples = 600
update_every = 10

[[experiment]]
protocol = "gradual"

[[experiment]]
protocol = "dynamic"
grow = ["random", "gradient"]
"""
SLUG = "training_curves_circle_depth3_width24"


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    where = tmp_path_factory.mktemp("curves")
    (where / "sweep.toml").write_text(SWEEP)
    path = where / "results.db"
    report = run_sweep(where / "sweep.toml", path, progress=False, log=lambda msg: None)
    assert report.ok == 12 and report.failed == 0
    return path


@pytest.fixture(scope="module")
def records(db):
    with ResultStore(db, readonly=True) as store:
        return store.records()


@pytest.fixture(scope="module")
def report(db, tmp_path_factory):
    return build_report(db, tmp_path_factory.mktemp("out"), progress=False, formats=("png",))


def test_runs_record_curves(records):
    for rec in records:
        m = rec["metrics"]
        assert isinstance(m["recall_curve"], list) and len(m["recall_curve"]) == len(m["curve_steps"]) >= 2
        assert m["curve_steps"][0] == 0 and len(m["functional_recall_curve"]) == len(m["curve_steps"])


def test_report_draws_recall_during_training(report):
    out = report.html.parent
    png = out / f"{SLUG}.png"
    assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png in report.figures
    assert not (out / f"{SLUG}.svg").exists()  # svg off
    page = report.html.read_text()
    assert f"href='{SLUG}.png'" in page and f"{SLUG}.svg" not in page
    assert "alt='circle (depth 3, width 24): training curves'" in page
    assert "Ticket recall during training" in page
    # one setting: grow labels the protocol (SET, RigL), it does not split the figures by grow
    assert not [p for p in report.figures if "grow" in p.name]
    assert len(re.findall(r"<img ", page)) == 5  # performance, recall, layers, training curves, the ticket


def test_tables_name_dynamic_by_its_growth_rule(report, db):
    for frame in (report.table, report.verdicts):
        assert set(frame["protocol"]) == {"gradual", "SET", "RigL"}
        assert set(frame["pruner"]) == {"random", "magnitude"}
    assert (report.verdicts["n"] == 2).all()  # SET and RigL runs are not pooled as 4 seeds
    page = report.html.read_text()
    assert "<th>gradual</th><th>SET</th><th>RigL</th>" in page and "<th>dynamic</th>" not in page
    with ResultStore(db, readonly=True) as store:
        table = summary_table(store.dataframe())
    assert set(table["protocol"]) == {"gradual", "SET", "RigL"} and (table["runs"] == 2).all()


def test_protocol_label():
    assert protocol_label("dynamic", "random") == "SET"
    assert protocol_label("dynamic", "gradient") == "RigL"
    assert protocol_label("dynamic", None) == "RigL"  # the default growth rule
    assert protocol_label("dynamic", float("nan")) == "RigL"
    assert protocol_label("gradual", "random") == "gradual"
    assert protocol_label("singleshot") == "singleshot"


def test_csv_export_writes_curves_as_json(db, records, tmp_path):
    csv = tmp_path / "runs.csv"
    assert export(db, csv) == 12
    flat = pd.read_csv(csv)
    by_key = {r["key"]: r["metrics"] for r in records}
    for _, row in flat.iterrows():
        metrics = by_key[row["key"]]
        for name in ("recall_curve", "functional_recall_curve", "curve_steps"):
            assert isinstance(row[name], str)
            assert json.loads(row[name]) == pytest.approx(metrics[name])
        assert row["mask_updates"] == metrics["mask_updates"] == len(metrics["curve_steps"]) - 1
    # the report's tables read the export as they read the database: curves parsed back from their JSON
    from_db = training_curves(prepare(to_dataframe(records)))
    from_csv = training_curves(prepare(flat))
    assert len(from_db) == len(from_csv) == 6
    merged = from_db.merge(from_csv, on=["protocol", "label", "density_key"])
    assert len(merged) == 6
    for _, r in merged.iterrows():
        assert list(r["steps_x"]) == list(r["steps_y"]) and r["mean_x"] == pytest.approx(r["mean_y"])


def test_prepare_keeps_curves_and_the_seed_mean(records):
    df = prepare(to_dataframe(records))
    assert df["recall_curve"].map(lambda v: isinstance(v, list)).all()  # not coerced to NaN
    table = training_curves(df)
    assert set(table["protocol"]) == {"gradual", "SET", "RigL"} and (table["n"] == 2).all()
    row = table[(table["protocol"] == "SET") & (table["label"] == "magnitude")].iloc[0]
    runs = [r["metrics"] for r in records if r["config"]["protocol"] == "dynamic"
            and r["config"]["grow"] == "random" and r["config"]["pruner"] == "magnitude"]
    assert len(runs) == 2 and runs[0]["curve_steps"] == runs[1]["curve_steps"] == list(row["steps"])
    values = np.array([m["recall_curve"] for m in runs])
    assert row["mean"] == pytest.approx(values.mean(axis=0))
    assert row["lo"] == pytest.approx(values.min(axis=0)) and row["hi"] == pytest.approx(values.max(axis=0))
    gradual = table[table["protocol"] == "gradual"]
    assert all(r[0] == pytest.approx(1.0) for r in gradual["mean"])  # gradual starts dense: all of the ticket


def _row(protocol, seed, steps, recall, grow="gradient"):
    return {"task": "circle", "pruner": "magnitude", "protocol": protocol, "grow": grow, "density": 0.1,
            "seed": seed, "depth": 3, "width": 24, "kept_density": 0.1, "test_accuracy": 0.5, "recall": recall[-1],
            "ticket_density": 0.16, "recall_curve": json.dumps(recall), "curve_steps": json.dumps(steps),
            "status": "ok"}


def test_training_curves_align_seeds_on_their_update_steps():
    df = prepare(pd.DataFrame([_row("gradual", 0, [0, 10, 20], [1.0, 0.5, 0.2]),
                               _row("gradual", 1, [0, 15], [1.0, 0.4])]))
    (row,) = training_curves(df).itertuples()
    assert list(row.steps) == [0, 10, 15, 20]
    # each seed's value holds from one update to the next
    assert row.mean == pytest.approx([1.0, 0.75, 0.45, 0.3])
    assert row.lo == pytest.approx([1.0, 0.5, 0.4, 0.2]) and row.hi == pytest.approx([1.0, 1.0, 0.5, 0.4])


def test_no_training_curves_figure_without_during_training_runs():
    rows = [_row("singleshot", s, [0], [0.1]) for s in (0, 1)]
    for r in rows:
        del r["recall_curve"], r["curve_steps"]
    (s,) = settings(prepare(pd.DataFrame(rows)), ["depth", "width"])
    assert F.training_curves_figure(s, {}) is None
    (s,) = settings(prepare(pd.DataFrame([_row("dynamic", 0, [0, 10], [0.1, 0.2], grow="random")])),
                    ["depth", "width"])
    fig = F.training_curves_figure(s, {})
    assert fig is not None
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(l.startswith("SET") for l in labels) and "0.16" in fig._suptitle.get_text()
    import matplotlib.pyplot as plt

    plt.close(fig)
