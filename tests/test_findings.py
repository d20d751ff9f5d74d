"""The paper's findings as code: each finding on hand-made verdict tables, the CLI, the CSV export, and the
README block generated from the committed results."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from plantseek.report import findings as F
from sweep_helpers import fake_results_db

ROOT = Path(__file__).resolve().parents[1]


def cell(task, protocol, pruner, density, verdict, *, ticket_density=0.005, collapse=math.nan, n=3, setting=None):
    """One row of the verdict table (plantseek.report.data.verdicts) with plausible numbers for `verdict`."""
    accuracy = task == "circle"
    d = {"matches": 0.0, "does not match": 0.3, "undecided": 0.02}[verdict]
    tol = 0.02 if accuracy else math.log(2)
    key = "ticket" if density == "ticket" else f"{float(density):.6g}"
    x = ticket_density if density == "ticket" else float(density)
    return {"setting": setting or f"{task} (depth 4, width 100)", "task": task, "protocol": protocol,
            "pruner": pruner, "pruner_name": pruner.split("[")[0], "is_oracle": pruner == "ticket",
            "density_key": key, "kept_density": x, "requested_density": x, "metric": "accuracy" if accuracy else "loss",
            "n": n, "mean": 0.9 - d, "ci_lo": 0.85 - d, "ci_hi": 0.95 - d, "reference": 0.9, "reference_n": n,
            "d": d, "d_lower": d - 0.01, "d_upper": d + 0.01, "tolerance": tol, "verdict": verdict, "note": "",
            "ticket_density": ticket_density, "layer_collapse": collapse, "depth": 4, "width": 100,
            "n_samples": 5000, "epochs": 10}


def table(*cells):
    return pd.DataFrame(list(cells))


def one(key, t):
    (f,) = F.evaluate_table(t, [key])
    return f


def singleshot_cells(low_verdict="does not match"):
    return [cell("circle", "singleshot", "synflow", 0.1, "matches"),
            cell("circle", "singleshot", "synflow", 0.01, low_verdict),
            cell("relu", "singleshot", "magnitude", 0.5, "matches"),
            cell("relu", "singleshot", "magnitude", 0.1, "does not match"),
            cell("relu", "singleshot", "magnitude", 0.01, "does not match"),
            cell("relu", "singleshot", "ticket", "ticket", "matches")]


def test_singleshot_finding_reproduced_refuted_and_undecided():
    f = one("singleshot-weak-tickets", table(*singleshot_cells()))
    assert f.status == F.REPRODUCED
    assert any("synflow at 0.1 on circle" in e and "matches" in e for e in f.evidence)
    assert "seeds 3" in f.scale and "width 100" in f.scale and "epochs 10" in f.scale and "samples 5000" in f.scale
    assert one("singleshot-weak-tickets", table(*singleshot_cells("matches"))).status == F.NOT_REPRODUCED
    assert one("singleshot-weak-tickets", table(*singleshot_cells("undecided"))).status == F.UNDECIDED
    # a task without rows leaves it undecided and says so
    circle_only = table(*[c for c in singleshot_cells() if c["task"] == "circle"])
    f = one("singleshot-weak-tickets", circle_only)
    assert f.status == F.UNDECIDED and "undecided: no rows for singleshot on relu at density 0.1 to <1" in f.evidence


def test_helix_finding_and_missing_rows():
    fails = [cell("helix", "singleshot", p, d, "does not match") for p in ("snip", "synflow") for d in (0.5, 0.1)]
    assert one("helix-fails", table(*fails)).status == F.REPRODUCED
    dense = cell("helix", "singleshot", "snip", 1.0, "matches")  # the dense network is not a ticket
    assert one("helix-fails", table(*fails, dense)).status == F.REPRODUCED
    found = cell("helix", "singleshot", "snip", 0.5, "matches")
    assert one("helix-fails", table(*fails[1:], found)).status == F.NOT_REPRODUCED
    f = one("helix-fails", table(*singleshot_cells()))
    assert f.status == F.UNDECIDED and f.evidence == ["undecided: no rows for singleshot on helix below density 1"]
    assert f.scale == "no rows"
    # no rows at all: every finding is undecided
    assert {x.status for x in F.evaluate_table(pd.DataFrame())} == {F.UNDECIDED}


def test_collapse_finding_needs_failures_and_mostly_collapsed_layers():
    def low(collapse, verdict="does not match"):
        return [cell(t, "singleshot", p, 0.01, verdict, collapse=collapse, n=10)
                for t in ("circle", "relu") for p in ("snip", "grasp")]

    f = one("collapse-at-0.01", table(*low(0.9)))
    assert f.status == F.REPRODUCED and any("layer collapse in 36 of 40 runs" in e for e in f.evidence)
    assert one("collapse-at-0.01", table(*low(0.1))).status == F.NOT_REPRODUCED
    assert one("collapse-at-0.01", table(*low(0.9, "matches"))).status == F.NOT_REPRODUCED
    assert one("collapse-at-0.01", table(*low(0.5))).status == F.UNDECIDED  # 20 of 40: the interval holds 1/2
    f = one("collapse-at-0.01", table(*low(math.nan)))
    assert f.status == F.UNDECIDED and "undecided: no layer_collapse values for these rows" in f.evidence


def test_multishot_synflow_finding():
    td = 0.005
    base = [cell("circle", "multishot", "snip", 0.1, "matches"), cell("circle", "multishot", "snip", "ticket",
                                                                     "does not match")]
    syn_hit = cell("circle", "multishot", "synflow[iterations=1]", "ticket", "matches", ticket_density=td)
    assert one("multishot-synflow-best", table(*base, syn_hit)).status == F.REPRODUCED
    syn_miss = cell("circle", "multishot", "synflow[iterations=1]", "ticket", "does not match")
    syn_01 = cell("circle", "multishot", "synflow[iterations=1]", 0.1, "matches")
    f = one("multishot-synflow-best", table(*base, syn_miss, syn_01))
    assert f.status == F.NOT_REPRODUCED and "sparsest matching density: synflow 0.1" in f.evidence[-1]
    f = one("multishot-synflow-best", table(*base))
    assert f.status == F.UNDECIDED and "no rows for multishot synflow on circle" in f.evidence[0]


def test_grasp_finding():
    others = [cell("circle", "multishot", p, d, "matches") for p in ("snip", "synflow", "magnitude")
              for d in (0.5, 0.1)]
    grasp_fails = [cell("circle", "multishot", "grasp", 0.5, "matches"),
                   cell("circle", "multishot", "grasp", 0.1, "does not match")]
    assert one("grasp-collapses-early", table(*others, *grasp_fails)).status == F.REPRODUCED
    grasp_keeps = [cell("circle", "multishot", "grasp", d, "matches") for d in (0.5, 0.1)]
    assert one("grasp-collapses-early", table(*others, *grasp_keeps)).status == F.NOT_REPRODUCED
    nobody = [cell("circle", "multishot", p, 0.1, "does not match") for p in ("snip", "grasp")]
    f = one("grasp-collapses-early", table(*nobody))
    assert f.status == F.UNDECIDED and f.evidence[0] == "undecided: no setting where most other pruners match"


def test_strong_finding():
    good = [cell("circle", "strong", "edge-popup", 0.5, "matches"),
            cell("circle", "strong", "edge-popup-annealed", 0.1, "matches"),
            cell("circle", "strong", "snip", 0.5, "does not match"),
            cell("relu", "strong", "edge-popup-annealed", 0.1, "does not match"),
            cell("circle", "strong", "ticket", "ticket", "matches")]
    assert one("strong-only-edge-popup", table(*good)).status == F.REPRODUCED
    relu_found = cell("relu", "strong", "edge-popup-annealed", 0.01, "matches")  # plantseek does better
    assert one("strong-only-edge-popup", table(*good, relu_found)).status == F.NOT_REPRODUCED
    f = one("strong-only-edge-popup", table(*good[1:]))
    assert f.status == F.UNDECIDED
    assert "undecided: no rows for strong edge-popup on circle near density 0.5" in f.evidence


def test_evidence_names_the_reference_as_the_figures_do():
    """The oracle's rows are "ticket mask (trained)" under the weak protocols and "ticket mask" under strong."""
    weak = one("singleshot-weak-tickets", table(*singleshot_cells()))
    assert any("vs ticket mask (trained) 0.9" in e for e in weak.evidence)
    assert not any("vs oracle" in e for e in weak.evidence)
    strong = one("strong-only-edge-popup", table(cell("circle", "strong", "edge-popup", 0.5, "matches")))
    assert any("vs ticket mask 0.9" in e for e in strong.evidence)
    # the markdown table gives the oracle one row, named both ways
    from plantseek.report.data import prepare, sparsest_match

    rows = [{"task": "circle", "pruner": pr, "protocol": proto, "density": "ticket", "seed": s, "depth": 2,
             "width": 10, "kept_density": 0.004, "test_accuracy": 0.9 + s / 100, "ticket_test_accuracy": 0.95,
             "status": "ok"} for pr in ("ticket", "p") for proto in ("singleshot", "strong") for s in range(3)]
    md = "\n".join(F._md_pivot(sparsest_match(prepare(pd.DataFrame(rows)), config_cols=["depth", "width"])))
    assert "| ticket mask (trained) / ticket mask | 0.004 (1x) | 0.004 (1x) |" in md
    assert "| ticket |" not in md and "planted ticket density 0.004" in md


def test_regression_finding():
    cls = [cell("circle", "singleshot", "synflow", 0.1, "matches", ticket_density=0.005)]  # 20x the ticket
    reg = [cell("relu", "singleshot", "synflow", 0.1, "matches", ticket_density=0.0002)]  # 500x
    f = one("regression-harder", table(*cls, *reg))
    assert f.status == F.REPRODUCED and "circle 20x" in f.evidence[0] and "relu 500x" in f.evidence[0]
    easy = [cell("relu", "singleshot", "synflow", 0.01, "matches", ticket_density=0.002)]  # 5x
    assert one("regression-harder", table(*cls, *easy)).status == F.NOT_REPRODUCED
    maybe = [cell("relu", "singleshot", "synflow", 0.01, "undecided", ticket_density=0.002),
             cell("relu", "singleshot", "synflow", 0.5, "matches", ticket_density=0.002)]
    f = one("regression-harder", table(*cls, *maybe))
    assert f.status == F.UNDECIDED and "relu 5x to 250x" in f.evidence[0]
    f = one("regression-harder", table(*cls))
    assert f.status == F.UNDECIDED and "no rows for both classification and regression" in f.evidence[-1]


SWEEP = """
[sweep]
name = "findings-test"
tasks = ["circle", "relu"]
densities = [0.01, 0.1, 0.5, "ticket"]
seeds = [0, 1, 2]
depth = 3
width = 30
epochs = 1

[[experiment]]
protocol = "singleshot"
pruners = ["random", "synflow"]

[[experiment]]
protocol = "singleshot"
pruners = ["ticket"]
densities = ["ticket"]
"""


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    return fake_results_db(tmp_path_factory.mktemp("findings"), SWEEP)


def test_findings_from_a_database_and_from_its_csv_agree(db, tmp_path):
    found = F.evaluate(db)
    assert [f.key for f in found] == F.available() and len(found) == 7
    assert {f.status for f in found} <= {F.REPRODUCED, F.NOT_REPRODUCED, F.UNDECIDED}
    csv = tmp_path / "r.csv"
    assert F.export_csv(db, csv) == 2 * 3 * (2 * 4 + 1)
    cols = pd.read_csv(csv).columns
    assert {"task", "protocol", "pruner", "density", "seed", "test_accuracy", "layer_collapse"} <= set(cols)
    assert "recall" not in cols and "lr" not in cols  # only what the findings read; constant options dropped
    assert [(f.key, f.status, f.scale) for f in F.evaluate(csv)] == [(f.key, f.status, f.scale) for f in found]
    helix = next(f for f in found if f.key == "helix-fails")
    assert helix.status == F.UNDECIDED  # the sweep has no helix


def test_findings_cli(db, tmp_path, capsys):
    from plantseek.cli import main

    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n\n{F.BEGIN} -->\nstale\n{F.END}\n\nafter\n")
    assert main(["findings", str(db), "--csv-out", str(tmp_path / "r.csv"), "--readme", str(readme)]) == 0
    out = capsys.readouterr().out
    assert "[1/7] singleshot-weak-tickets:" in out and "scale: singleshot: seeds 3, depth 3, width 30" in out
    text = readme.read_text()
    assert "stale" not in text and text.startswith("# x\n\nbefore\n\n") and text.endswith(f"{F.END}\n\nafter\n")
    assert "Sparsest density at which each pruner matches the ticket oracle" in text
    assert F.update_readme(readme, F.readme_block(db, display=str(db))) is False  # already up to date
    assert main(["findings", str(db), "--only", "helix-fails"]) == 0
    assert "[1/1] helix-fails: UNDECIDED" in capsys.readouterr().out
    assert main(["findings", str(db), "--only", "nope"]) == 2
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="has no findings block"):
        F.update_readme(tmp_path / "bare.md", "x")


def test_readme_findings_block_is_generated_from_the_committed_results():
    """The README's findings block is what `plantseek findings docs/results/paper_small.csv --readme README.md`
    writes (docs/findings.md says how to regenerate both after `make demo`)."""
    committed = ROOT / F.README_CSV
    assert committed.exists(), f"{F.README_CSV} is missing"
    block = F.current_block(ROOT / "README.md")
    assert block is not None, "README.md has no findings block"
    expected = F.readme_block(committed, display=F.README_CSV)
    assert block == expected, ("README.md's findings block is out of date: run "
                               f"`plantseek findings {F.README_CSV} --readme README.md`")
