"""README.md's "Sparsity during training" block is what `plantseek.report.during_tables` writes from the
committed rows of examples/during_training.toml (docs/results/during_training.csv); no training."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from plantseek.report import during_tables as D

ROOT = Path(__file__).resolve().parents[1]
REGENERATE = (f"run `python -m plantseek.report.during_tables {D.CSV} --readme README.md` (after rerunning "
              "examples/during_training.toml if the protocols changed)")


def test_the_readme_block_is_generated_from_the_committed_rows():
    block = D.readme_block(ROOT / D.CSV)
    assert D.current_block(ROOT / "README.md") == block.replace(str(ROOT / D.CSV), D.CSV), REGENERATE


def test_the_committed_rows_are_the_sweep_file():
    from plantseek.sweep import load_sweep

    df = pd.read_csv(ROOT / D.CSV)
    sweep = load_sweep(ROOT / "examples" / "during_training.toml")
    assert len(df) == len(sweep.runs) == 110
    assert set(df["seed"]) == {0, 1, 2, 3, 4} and set(df["task"]) == {"circle", "relu"}
    curves = df["recall_curve"].map(json.loads)
    assert all(isinstance(c, list) and c for c in curves)
    # the last point of a curve is the run's final recall
    assert all(abs(c[-1] - r) < 1e-5 for c, r in zip(curves, df["recall"]))


def test_the_block_says_each_methods_verdict_and_rigls_rise():
    block = D.readme_block(ROOT / D.CSV)
    for method in ("gradual magnitude", "SET", "RigL", "ticket oracle (dynamic)"):
        assert f"| {method} |" in block
    assert "RigL's recall over training" in block
    assert block.count("| circle |") == 3 and block.count("| relu |") == 3


def test_a_file_without_during_training_rows_is_refused(tmp_path):
    p = tmp_path / "x.csv"
    pd.DataFrame({"protocol": ["singleshot"], "status": ["ok"], "pruner": ["random"]}).to_csv(p, index=False)
    with pytest.raises(ValueError, match="no ok rows of the protocols gradual, dynamic"):
        D.load(p)
