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


def test_the_docs_give_the_paper_scale_files_run_count():
    import re

    n = len(load_sweep(EXAMPLES / "paper_scale.toml"))
    root = EXAMPLES.parent
    for doc in ("README.md", "docs/gpu.md"):
        counts = {int(c.replace(" ", "")) for c in re.findall(r"(\d[\d ]*\d) runs", (root / doc).read_text())
                  if c.replace(" ", "").isdigit()}
        said = {c for c in counts if 20_000 < c < 40_000}
        assert said == {n}, f"{doc} gives {sorted(said)} runs for examples/paper_scale.toml, which has {n}"
