"""`plantseek challenge export` and `plantseek challenge score` from the command line."""
import pytest

from plantseek.challenge import load_manifest
from plantseek.cli import main
from plantseek.store import ResultStore

from challenge_helpers import numpy_submission


def test_export_then_score(tmp_path, capsys):
    out, db = tmp_path / "exp", tmp_path / "r.db"
    assert main(["challenge", "export", "--task", "circle", "--depth", "3", "--width", "24", "--seeds", "3-4",
                 "--densities", "0.25,ticket", "--format", "npz", "--protocol", "strong", "--out", str(out),
                 "--option", "n_samples=400", "--option", "epochs=1"]) == 0
    text = capsys.readouterr().out
    assert "wrote 4 runs (2 seeds)" in text and "seed3_d0.25: keep 193 of 772" in text
    m = load_manifest(out)
    assert (m["protocol"], m["file_format"], m["options"]["n_samples"]) == ("strong", "npz", 400)
    sub = numpy_submission(out, tmp_path / "sub", fmt="npz")
    assert main(["challenge", "score", str(out), str(sub), "--db", str(db), "--name", "np-mag", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "seed4_ticket  ok" in text and "wrote 4 runs of 'np-mag' (4 ok) and 2 reference runs" in text
    with ResultStore(db, readonly=True) as store:
        assert sorted(r["config"]["pruner"] for r in store.records()) == ["np-mag"] * 4 + ["ticket"] * 2
    # a bad submission: exit 2, one error naming the run, the database untouched
    (sub / "seed3_ticket.npz").unlink()
    assert main(["challenge", "score", str(out), str(sub), "--db", str(db), "--name", "np-mag2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("plantseek challenge: error: submission") and "run seed3_ticket: no mask file" in err
    with ResultStore(db, readonly=True) as store:
        assert len(store.records()) == 6


@pytest.mark.parametrize("argv, match", [
    (["export", "--task", "circle", "--depth", "3", "--width", "24", "--seeds", "0", "--out", "X",
      "--protocol", "multishot"], "invalid choice: 'multishot'"),
    (["export", "--task", "circle", "--depth", "3", "--width", "24", "--seeds", "2-1", "--out", "X"], "is empty"),
    (["export", "--task", "circle", "--depth", "3", "--width", "24", "--seeds", "0", "--out", "X",
      "--densities", "0.1,half"], "density must be a number"),
])
def test_bad_arguments(argv, match, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["challenge", *argv])
    assert exc.value.code == 2 and match in capsys.readouterr().err


def test_help(capsys):
    for argv in (["challenge", "--help"], ["challenge", "export", "--help"], ["challenge", "score", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 0
    assert "--densities" in capsys.readouterr().out
