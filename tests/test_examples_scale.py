"""The paper-scale and extreme-scale sweep files in examples/ validate, and the widest run's estimate is sane."""
from __future__ import annotations

from pathlib import Path

from plantseek import memory
from plantseek.sweep import load_sweep

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_scale_examples_validate():
    paper = load_sweep(EXAMPLES / "paper_scale.toml")
    extreme = load_sweep(EXAMPLES / "extreme_scale.toml")
    assert len(paper) > 10_000 and {r.task for r in paper.runs} == {"relu", "circle", "helix"}
    assert len(extreme) == 510
    assert {r.width for r in extreme.runs} == {1000, 4000, 10_000}
    widest = max(extreme.runs, key=lambda r: (r.width, r.density if isinstance(r.density, float) else 0))
    kw = widest.seek_kwargs("cpu")
    assert kw["dense_baseline"] is False
    est = memory.footprint_of(kw, "cpu").total
    assert 2 * 2**30 < est < 16 * 2**30  # width 10 000 (200M weights): measured 7.9 GB peak RSS at density 1e-4
