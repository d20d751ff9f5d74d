"""`reproduce paper`: the preset sweeps cover the paper's experiments in our depth counting."""
from __future__ import annotations

import pytest

from plantseek.presets import SCALES, paper_sweep_toml, reproduce_paper
from plantseek.sweep import parse_sweep


def _need_all_pruners():
    from plantseek import pruners

    missing = {"edge-popup", "edge-popup-annealed", "random", "magnitude", "snip", "grasp", "synflow",
               "ticket"} - set(pruners.available())
    if missing:
        pytest.skip(f"pruners not registered yet: {sorted(missing)}")


def test_full_scale_is_the_papers_grid():
    _need_all_pruners()
    sweep = parse_sweep(paper_sweep_toml("full"))
    main = [r for r in sweep.runs if r.width == 100 and r.options.get("noise") == 0.01
            and r.pruner_options.get("iterations", 1) == 1]
    assert {r.task for r in main} == {"relu", "circle", "helix"}
    assert {r.depth for r in main} == {2, 4, 9}  # the paper's depths 3, 5, 10
    assert {r.density for r in main} == {0.01, 0.1, 0.5, 1.0, "ticket"}
    by_protocol = {p: [r for r in main if r.protocol == p] for p in ("singleshot", "multishot", "strong")}
    assert {r.seed for r in by_protocol["singleshot"]} == set(range(25))
    assert {r.seed for r in by_protocol["multishot"]} == set(range(10))
    assert {r.pruner for r in by_protocol["strong"]} >= {"edge-popup", "edge-popup-annealed"}
    weak = {"random", "magnitude", "snip", "grasp", "synflow", "ticket"}
    assert {r.pruner for r in by_protocol["singleshot"]} == weak == {r.pruner for r in by_protocol["multishot"]}
    ss = by_protocol["singleshot"][0]
    assert (ss.epochs, ss.options["lr"], ss.options["batch_size"]) == (10, 1e-3, 32)
    ms = by_protocol["multishot"][0]
    assert (ms.epochs, ms.options["rounds"], ms.options["round_epochs"]) == (10, 10, 5)
    assert {r.epochs for r in by_protocol["strong"]} == {10}
    assert {r.options["n_samples"] for r in main} == {10_000} and {r.options["pruning_samples"] for r in main} == {40}
    # extras: wide circle, SynFlow with 100 rounds, noise levels
    assert any(r.width == 1000 and r.depth == 5 and r.task == "circle" for r in sweep.runs)
    assert any(r.pruner_options.get("iterations") == 100 for r in sweep.runs)
    assert {r.options.get("noise") for r in sweep.runs} == {0.0, 0.001, 0.01, 0.1}
    assert len({r.key for r in sweep.runs}) == len(sweep.runs)
    # extensions: gradual, SET and RigL over the paper's densities below 1, 10 seeds, the oracle under each
    during = [r for r in sweep.runs if r.protocol in ("gradual", "dynamic")]
    assert {r.seed for r in during} == set(range(10)) and {r.density for r in during} == {0.01, 0.1, 0.5, "ticket"}
    assert {r.depth for r in during} == {2, 4, 9}


def test_small_scale_keeps_the_structure():
    _need_all_pruners()
    small = parse_sweep(paper_sweep_toml("small"))
    assert {r.protocol for r in small.runs} == {"singleshot", "multishot", "strong", "gradual", "dynamic"}
    assert {r.task for r in small.runs} == {"relu", "circle", "helix"}
    during = [r for r in small.runs if r.protocol in ("gradual", "dynamic")]
    assert {r.seed for r in during} == {0}  # one seed of the extensions
    assert {(r.protocol, r.options.get("grow", "gradient"), r.pruner) for r in during} == {
        ("gradual", "gradient", "magnitude"), ("gradual", "gradient", "ticket"), ("dynamic", "random", "random"),
        ("dynamic", "random", "ticket"), ("dynamic", "gradient", "random"), ("dynamic", "gradient", "ticket")}
    assert {r.depth for r in small.runs} == set(SCALES["small"]["depths"])
    assert len(small) < len(parse_sweep(paper_sweep_toml("full"))) / 10


def test_unknown_scale():
    with pytest.raises(ValueError, match="small, full|full, small"):
        paper_sweep_toml("medium")


def test_reproduce_small_with_a_fake_seeker(tmp_path):
    """The whole `reproduce paper` path (sweep file, database, report) with a fake seeker; rerunning resumes."""
    _need_all_pruners()
    from sweep_fake import FakeSeeker

    f = FakeSeeker()
    res = reproduce_paper("small", out=tmp_path, batch_fn=f.batch, single_fn=f, progress=False, formats=("png",))
    n = len(parse_sweep(paper_sweep_toml("small")))
    assert res["sweep_report"].ran == n and res["sweep_report"].failed == 0
    assert (tmp_path / "paper_small.toml").exists() and (tmp_path / "paper_small.db").exists()
    page = res["html"].read_text()
    for task in ("relu", "circle", "helix"):
        assert f"{task} (depth 4, width 100)" in page
    again = reproduce_paper("small", out=tmp_path, batch_fn=f.batch, single_fn=f, progress=False, report=False)
    assert again["sweep_report"].ran == 0 and again["sweep_report"].skipped == n


def test_example_file_is_the_small_preset():
    from pathlib import Path

    example = Path(__file__).resolve().parents[1] / "examples" / "paper_small.toml"
    assert example.read_text() == paper_sweep_toml("small"), \
        "examples/paper_small.toml is out of date: rewrite it from plantseek.presets.paper_sweep_toml('small')"
