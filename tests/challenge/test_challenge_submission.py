"""Bad submissions: every problem of every run named (run id, file, array, what is wrong) before anything runs,
and nothing already in the database lost or changed."""
import shutil

import numpy as np
import pytest

from plantseek.challenge import ChallengeError, score
from plantseek.challenge import files as cfiles
from plantseek.challenge import submission as csub
from plantseek.store import ResultStore

from challenge_helpers import write_oracle_submission


@pytest.fixture(scope="module")
def scored(singleshot_export, tmp_path_factory):
    """A good submission and a database that already holds its rows."""
    root = tmp_path_factory.mktemp("bad")
    good = write_oracle_submission(singleshot_export, root / "good")
    score(singleshot_export.directory, good, db=root / "r.db", name="good")
    return good, root / "r.db"


def _snapshot(db):
    with ResultStore(db, readonly=True) as store:
        return store.records(), store.sweeps()


def _edit(path, fn):
    arrays = cfiles.read_arrays(path)
    fn(arrays)
    path.unlink()
    cfiles.write_arrays(path, arrays)


def _flip(name, where=0):
    def fn(a):
        a[name] = a[name].copy()
        a[name].flat[where] = ~a[name].flat[where]
    return fn


CASES = {
    "shape": (lambda d: _edit(d / "seed0_d0.2.safetensors", lambda a: a.update(
        {"layers.1.weight": np.zeros((24, 23), dtype=bool)})),
        ["run seed0_d0.2 (seed0_d0.2.safetensors): layers.1.weight has shape (24, 23), expected (24, 24)"]),
    "float dtype with NaN": (lambda d: _edit(d / "seed1_ticket.safetensors", lambda a: a.update(
        {"layers.2.bias": np.array([1.0, np.nan, 0.0, 1.0])})),
        ["run seed1_ticket", "layers.2.bias is float64 with 1 NaN; masks must be bool, or uint8"]),
    "not 0/1": (lambda d: _edit(d / "seed0_ticket.safetensors", lambda a: a.update(
        {"layers.0.bias": np.full(24, 2, dtype=np.uint8)})),
        ["run seed0_ticket", "layers.0.bias is uint8 with 24 value(s) other than 0 and 1"]),
    "int64": (lambda d: _edit(d / "seed0_ticket.safetensors", lambda a: a.update(
        {"layers.0.bias": np.zeros(24, dtype=np.int64)})), ["layers.0.bias is int64"]),
    "count": (lambda d: _edit(d / "seed1_d0.2.safetensors", _flip("layers.1.weight")),
              ["run seed1_d0.2", "keeps 15", "of 772 parameters; the run's budget is exactly 154"]),
    "missing run": (lambda d: (d / "seed1_ticket.safetensors").unlink(),
                    ["run seed1_ticket: no mask file (expected seed1_ticket.safetensors or seed1_ticket.npz"]),
    "missing array": (lambda d: _edit(d / "seed0_d0.2.safetensors", lambda a: a.pop("layers.2.weight")),
                      ["run seed0_d0.2", "missing array(s) layers.2.weight"]),
    "extra array": (lambda d: _edit(d / "seed0_d0.2.safetensors", lambda a: a.update({"w": np.ones(3, bool)})),
                    ["unexpected array(s) w"]),
    "two files": (lambda d: shutil.copy(d / "seed0_d0.2.safetensors", d / "seed0_d0.2.npz"),
                  ["run seed0_d0.2: two mask files (seed0_d0.2.safetensors, seed0_d0.2.npz)"]),
    "garbage": (lambda d: (d / "seed0_ticket.safetensors").write_bytes(b"not a mask"),
                ["run seed0_ticket (seed0_ticket.safetensors): cannot be read", "not a readable safetensors file"]),
    "stray": (lambda d: shutil.copy(d / "seed0_d0.2.safetensors", d / "seed7_d0.2.safetensors"),
              ["mask file(s) for no run of the export: seed7_d0.2.safetensors"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_submission_is_named_and_writes_nothing(case, scored, singleshot_export, tmp_path):
    good, db = scored
    sub = tmp_path / "sub"
    shutil.copytree(good, sub)
    mutate, expected = CASES[case]
    mutate(sub)
    before = _snapshot(db)
    for name in ("good", "other"):  # over a scored name (even with replace) and a new one alike
        with pytest.raises(ChallengeError) as exc:
            score(singleshot_export.directory, sub, db=db, name=name, replace=True)
        msg = str(exc.value)
        assert "nothing was written" in msg and all(e in msg for e in expected), msg
    assert _snapshot(db) == before


def test_every_problem_of_every_run_is_listed(scored, singleshot_export, tmp_path):
    good, _ = scored
    sub = tmp_path / "sub"
    shutil.copytree(good, sub)
    (sub / "seed0_ticket.safetensors").unlink()
    _edit(sub / "seed1_d0.2.safetensors", _flip("layers.0.weight"))
    _edit(sub / "seed1_ticket.safetensors", lambda a: a.update({"layers.2.bias": a["layers.2.bias"].astype(np.float32)}))
    with pytest.raises(ChallengeError, match="3 problems") as exc:
        csub.read(sub, singleshot_export)
    lines = str(exc.value).splitlines()[1:]
    assert [l.split()[1] for l in lines] == ["seed0_ticket:", "seed1_d0.2", "seed1_ticket"]


def test_a_missing_or_wrong_directory_is_named(scored, singleshot_export, tmp_path):
    good, db = scored
    with pytest.raises(ChallengeError, match="does not exist"):
        score(singleshot_export.directory, tmp_path / "nope", db=db, name="x")
    with pytest.raises(ChallengeError, match="not a directory"):
        score(singleshot_export.directory, good / "seed0_ticket.safetensors", db=db, name="x")
    with pytest.raises(ChallengeError, match="no manifest.json"):
        score(good, good, db=db, name="x")


def test_uint8_and_npz_masks_are_accepted(singleshot_export, tmp_path):
    good = write_oracle_submission(singleshot_export, tmp_path / "npz", fmt="npz")
    for path in good.iterdir():
        _edit(path, lambda a: a.update({k: v.astype(np.uint8) for k, v in a.items()}))
    masks = csub.read(good, singleshot_export)
    assert set(masks) == {r.id for r in singleshot_export.runs}
    assert all(v.dtype == np.bool_ for m in masks.values() for v in m.values())


def test_reading_a_submission_needs_no_torch(scored, singleshot_export):
    """The challenge package and its reading side are NumPy only: torch comes with planting and training."""
    import subprocess
    import sys

    good, _ = scored
    code = ("import sys\nfrom plantseek.challenge import load_manifest, submission\n"
            f"masks = submission.read({str(good)!r}, load_manifest({str(singleshot_export.directory)!r}))\n"
            "assert len(masks) == 4\nprint('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]
