"""A digits experiment in a sweep file runs like every sweep row: parsed and refused by the same rules, run through
`plantseek.seek_batch` into the results database, read by `plantseek results` and the report."""
from __future__ import annotations

import textwrap

import pytest

from plantseek.cli import main
from plantseek.store import ResultStore
from plantseek.sweep import SweepConfigError, parse_sweep

SWEEP = textwrap.dedent("""
    [sweep]
    name = "digits-tiny"
    tasks = ["digits"]
    width = 32
    seeds = [0]
    noise = 0.0
    n_train = 160
    n_test = 80
    ticket_pruner = "magnitude"
    ticket_target_density = 0.2
    ticket_train_epochs = 2
    ticket_finetune_epochs = 1
    epochs = 1

    [[experiment]]
    protocols = ["strong"]
    pruners = ["ticket", {name = "edge-popup-annealed", epochs = 1}]
    densities = ["ticket", 0.1]

    [[experiment]]
    protocols = ["singleshot"]
    pruners = ["magnitude"]
    densities = [0.1]
""")


def test_a_digits_sweep_runs_into_the_database_results_and_report(tmp_path, capsys):
    f = tmp_path / "digits.toml"
    f.write_text(SWEEP)
    sweep = parse_sweep(SWEEP)
    assert len(sweep) == 4 and {r.depth for r in sweep.runs} == {4}  # no depth: the layout fixes it
    db = tmp_path / "r.db"
    assert main(["sweep", str(f), "--db", str(db), "--device", "cpu", "--no-progress"]) == 0
    assert "4 runs in the sweep: 0 already in the database, 4 run now (4 ok, 0 failed)" in capsys.readouterr().out
    with ResultStore(db) as store:
        recs = store.records()
    assert {r["config"]["task"] for r in recs} == {"digits"} and all(r["status"] == "ok" for r in recs)
    by = {(r["config"]["protocol"], r["config"]["pruner"], r["config"]["density"]): r["metrics"] for r in recs}
    oracle = by[("strong", "ticket", "ticket")]
    assert oracle["recall"] == 1.0 and oracle["test_accuracy"] == pytest.approx(oracle["ticket_test_accuracy"])
    assert "train_loss" in by[("singleshot", "magnitude", 0.1)]
    # one learned ticket for every row of the seed
    assert len({m["ticket_nnz"] for m in by.values()}) == 1
    assert main(["sweep", str(f), "--db", str(db), "--device", "cpu", "--no-progress"]) == 0
    assert "4 already in the database, 0 run now" in capsys.readouterr().out
    assert main(["results", str(db)]) == 0
    out = capsys.readouterr().out
    assert "digits" in out and "edge-popup-annealed" in out
    assert main(["report", str(db), "--out", str(tmp_path / "rep"), "--no-progress", "--no-svg"]) == 0
    html = (tmp_path / "rep" / "index.html").read_text()
    assert "digits" in html and "ticket mask" in html


def test_a_digits_sweep_is_refused_before_it_starts():
    with pytest.raises(SweepConfigError, match="cannot run protocol 'multishot'"):
        parse_sweep(SWEEP.replace('protocols = ["singleshot"]', 'protocols = ["multishot"]'))
    with pytest.raises(SweepConfigError, match="width must be >= 16"):
        parse_sweep(SWEEP.replace("width = 32", "width = 8"))
    with pytest.raises(SweepConfigError, match="depth=3 does not apply"):
        parse_sweep(SWEEP.replace("width = 32", "width = 32\ndepth = 3"))
    with pytest.raises(SweepConfigError, match="missing key.*'depth'"):  # an MLP task still needs its depth
        parse_sweep(SWEEP.replace('tasks = ["digits"]', 'tasks = ["digits", "circle"]'))
