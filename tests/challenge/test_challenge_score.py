"""`plantseek.challenge.score`: submitted masks run through the ordinary path; the oracle's masks score the
ticket's numbers; a NumPy-only submission scores what the native pruner does; rows never collide with native
runs."""
import pytest

import plantseek
from plantseek.challenge import ChallengeError, score
from plantseek.challenge import manifest as cmanifest
from plantseek.store import ResultStore, format_summary

from challenge_helpers import numpy_submission, write_oracle_submission

SAME = ("test_loss", "test_accuracy", "ticket_test_loss", "ticket_test_accuracy", "recall", "functional_recall",
        "kept_params", "dense_test_loss", "test_loss_planted_scale")


def _records(db):
    with ResultStore(db, readonly=True) as store:
        return {r["key"]: r for r in store.records()}


@pytest.mark.parametrize("fixture", ["singleshot_export", "strong_export"])
def test_the_oracles_masks_score_the_ticket(fixture, request, tmp_path):
    m = request.getfixturevalue(fixture)
    sub = write_oracle_submission(m, tmp_path / "oracle", fmt="npz" if fixture == "strong_export" else "safetensors")
    rep = score(m.directory, sub, db=tmp_path / "r.db", name="oracle-masks")
    rows = _records(tmp_path / "r.db")
    assert rep.ok == len(m.runs) and rep.reference_runs == len({r.seed for r in m.runs})
    refs = {r["config"]["seed"]: r["metrics"] for r in rows.values() if r["config"]["pruner"] == "ticket"}
    ticket_runs = [r for r in rep.runs if r["id"].endswith("_ticket")]
    assert ticket_runs
    for r in ticket_runs:  # at the ticket's budget the submitted ticket is the oracle's row, number for number
        got, ref = r["metrics"], refs[int(r["id"][4:].split("_")[0])]
        assert got["recall"] == 1 and got["functional_recall"] == 1 and got["ticket_survived"]
        for key in SAME:
            if key in ref:
                assert got[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-9), key
        if m["protocol"] == "strong":  # the mask alone, read out untrained: exactly the planted ticket
            assert got["test_loss_planted_scale"] == pytest.approx(got["ticket_test_loss"], rel=1e-4)
            assert got["test_accuracy"] == got["ticket_test_accuracy"]


def test_a_numpy_only_submission_scores_what_the_native_pruner_does(singleshot_export, tmp_path):
    m = singleshot_export
    sub = numpy_submission(m.directory, tmp_path / "np")  # python -c, numpy and safetensors.numpy only
    rep = score(m.directory, sub, db=tmp_path / "r.db", name="np-magnitude", reference=False)
    assert rep.ok == len(m.runs) and rep.reference_runs == 0
    run = m.runs[0]
    native = plantseek.seek(task="circle", depth=3, width=24, pruner="magnitude", density=run.density,
                            protocol="singleshot", seed=run.seed, epochs=1, n_samples=400, progress=False)
    got = rep.runs[0]["metrics"]
    for key in SAME:
        if key in native.metrics:
            assert got[key] == pytest.approx(native.metrics[key], rel=1e-6, abs=1e-9), key
    rows = _records(tmp_path / "r.db")
    assert {r["config"]["pruner"] for r in rows.values()} == {"np-magnitude"}
    assert all(k.startswith("challenge:") for k in rows)
    assert rows[rep.runs[0]["key"]]["config"] == {"task": "circle", "pruner": "np-magnitude", "protocol": "singleshot",
                                                  "density": 0.2, "seed": 0, "depth": 3, "width": 24, "epochs": 1,
                                                  "n_samples": 400}
    assert "np-magnitude" in format_summary(tmp_path / "r.db")  # `plantseek results` reads the rows


def test_an_npz_uint8_submission_scores_under_strong(strong_export, tmp_path):
    sub = numpy_submission(strong_export.directory, tmp_path / "np", fmt="npz")
    rep = score(strong_export.directory, sub, db=tmp_path / "r.db", name="np-magnitude", reference=False)
    assert rep.ok == 2
    assert {"output_scale_fitted", "test_loss_planted_scale"} <= set(rep.runs[0]["metrics"])


def test_keys_never_collide_with_native_runs(singleshot_export, tmp_path):
    from plantseek.challenge.score import _config, challenge_key
    from plantseek.sweep.config import RunConfig

    config = _config(singleshot_export, "my-pruner", 0, 0.2)
    assert challenge_key(config).startswith("challenge:") and challenge_key(config) != RunConfig.from_dict(config).key
    with pytest.raises(ChallengeError, match="registered plantseek pruner"):
        cmanifest.check_name("magnitude")
    for bad in ("", "a b", "x[1]", "-lead", "é"):
        with pytest.raises(ChallengeError, match="--name"):
            cmanifest.check_name(bad)


def test_scoring_a_name_again_needs_replace(singleshot_export, tmp_path):
    m, db = singleshot_export, tmp_path / "r.db"
    sub = write_oracle_submission(m, tmp_path / "oracle")
    score(m.directory, sub, db=db, name="twice", reference=False)
    before = _records(db)
    with pytest.raises(ChallengeError, match="--replace"):
        score(m.directory, sub, db=db, name="twice")
    assert _records(db) == before
    score(m.directory, sub, db=db, name="twice", replace=True, reference=False)
    after = _records(db)
    assert set(after) == set(before) and all(after[k]["attempts"] == 2 for k in after)


def test_a_network_planted_differently_is_refused(singleshot_export, tmp_path):
    """An export whose networks this plantseek no longer plants (another version) is not scored against others."""
    import json
    import shutil

    export = tmp_path / "export"
    shutil.copytree(singleshot_export.directory, export)
    raw = json.loads((export / "manifest.json").read_text())
    raw["files"]["seed1/network.safetensors"]["arrays_sha256"] = "0" * 64
    (export / "manifest.json").write_text(json.dumps(raw))
    sub = write_oracle_submission(singleshot_export, tmp_path / "oracle")
    with pytest.raises(ChallengeError, match="planting seed 1 again does not give the exported network"):
        score(export, sub, db=tmp_path / "r.db", name="x")
    assert not (tmp_path / "r.db").exists()


def test_the_submitted_mask_is_stored_with_its_row(singleshot_export, tmp_path):
    """Every run's found mask is stored with its result (`plantseek.mask_io`): a submission's is its own."""
    mask_io = pytest.importorskip("plantseek.mask_io")
    from plantseek.challenge import files as cfiles

    m = singleshot_export
    sub = numpy_submission(m.directory, tmp_path / "np")
    rep = score(m.directory, sub, db=tmp_path / "r.db", name="np-magnitude", reference=False)
    with ResultStore(tmp_path / "r.db", readonly=True) as store:
        for run, row in zip(m.runs, rep.runs):
            stored = mask_io.named(store.masks(row["key"]))
            submitted = cfiles.read_arrays(sub / f"{run.id}.safetensors")
            assert stored.keys() == submitted.keys()
            assert all((stored[k] == submitted[k]).all() for k in stored)
