"""README.md's and docs/image.md's image blocks are what `plantseek.report.image_tables` writes from the committed
rows of the digits experiment (docs/results/image_digits.csv); no training."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from plantseek.report import image_tables as I

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / I.CSV
REGENERATE = (f"run `python -m plantseek.report.image_tables {I.CSV} --readme README.md --doc docs/image.md` "
              "(docs/image.md, 'Measured on the development machine', says how to rerun the experiment)")


@pytest.mark.parametrize("doc, build", [("README.md", I.readme_block), ("docs/image.md", I.doc_block)],
                         ids=["README.md", "docs/image.md"])
def test_image_block_is_generated_from_the_committed_results(doc, build):
    assert COMMITTED.exists(), f"{I.CSV} is missing"
    block = I.current_block(ROOT / doc)
    assert block is not None, f"{doc} has no image block ({I.BEGIN} ... {I.END})"
    assert block == build(COMMITTED, display=I.CSV), f"{doc}'s image block is out of date: {REGENERATE}"


def test_blocks_state_their_scale_and_read_the_rows():
    readme, doc = I.readme_block(COMMITTED, display=I.CSV), I.doc_block(COMMITTED, display=I.CSV)
    for block in (readme, doc):
        assert block.startswith(I.BEGIN) and block.endswith(I.END + "\n")
        assert "one seed (0), so no interval" in block and "host width 4 (`width` 64)" in block
        assert "digits" in block and I.CSV in block
    rows = I.load(COMMITTED)
    seeker = rows[(rows["pruner"] != "ticket") & (rows["density"] == "ticket")].iloc[0]
    assert f"accuracy {seeker['test_accuracy']:.3f} and recall {seeker['recall']:.2g} at the ticket's density" in readme
    assert f"| the ticket's, {seeker['kept_density']:.3g} | **{seeker['test_accuracy']:.3f}** |" in doc
    # one row per seeker density in the table, the oracle first
    table = [line for line in doc.splitlines() if line.startswith("| ") and " | " in line]
    assert sum(line.startswith("| `ticket` oracle") for line in table) == 1
    assert len([line for line in table if line.split(" | ")[0][2:] in {"0.01", "0.05", "0.1", "0.5"}]) == 4


def test_export_keeps_only_what_the_blocks_read(tmp_path):
    out = tmp_path / "image.csv"
    assert I.export_csv(COMMITTED, out) == 6
    assert out.read_text() == COMMITTED.read_text()  # exporting the export changes nothing
    assert I.readme_block(out, display=I.CSV) == I.readme_block(COMMITTED, display=I.CSV)
    cols = set(pd.read_csv(out).columns)
    assert {"test_accuracy", "recall", "precision", "ticket_layer_density_0", "duration_s"} <= cols
    assert not {"key", "started_at", "recall_layer_0", "f1"} & cols


def test_update_block_and_refusals(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(f"# x\n\nbefore\n\n{I.BEGIN} -->\nstale\n{I.END}\n\nafter\n")
    block = I.readme_block(COMMITTED, display=I.CSV)
    assert I.update_block(page, block) is True and I.update_block(page, block) is False
    text = page.read_text()
    assert "stale" not in text and text.startswith("# x\n\nbefore\n\n") and text.endswith(f"{I.END}\n\nafter\n")
    assert I.current_block(page) == block
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="has no image block"):
        I.update_block(tmp_path / "bare.md", block)
    two_seeds = pd.concat([pd.read_csv(COMMITTED), pd.read_csv(COMMITTED).assign(seed=1)])
    two_seeds.to_csv(tmp_path / "two.csv", index=False)
    with pytest.raises(ValueError, match="one seed"):
        I.readme_block(tmp_path / "two.csv")


def test_cli_writes_both_blocks(tmp_path, capsys):
    readme, doc = tmp_path / "README.md", tmp_path / "image.md"
    for p in (readme, doc):
        p.write_text(f"{I.BEGIN} -->\n{I.END}\n")
    assert I.main([str(COMMITTED), "--readme", str(readme), "--doc", str(doc)]) == 0
    assert "README.md updated" in capsys.readouterr().out
    assert I.current_block(readme) == I.readme_block(COMMITTED, display=str(COMMITTED))
    assert I.current_block(doc) == I.doc_block(COMMITTED, display=str(COMMITTED))
