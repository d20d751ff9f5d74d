"""The run specification (`plantseek.spec`): one owner of defaults, checks, keys and groups (issue 15)."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from plantseek import spec
from plantseek.spec import DataSpec, ExecSpec, PrunerSpec, RunSpec, TrainSpec

FIXTURES = Path(__file__).parent / "fixtures"

# literal keys: a change here invalidates every stored result, so it must be deliberate
LITERAL_KEYS = [
    ({}, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"),
    ({"task": "relu", "depth": 2, "width": 10, "pruner": "random", "density": 0.5},
     "82a2be83ccf6a09d7bd94019e586979f049925f62b039b5f37971bc2e2386b64"),
    ({"pruner": "synflow", "pruner_options": {"iterations": 1}, "density": "ticket", "seed": 3},
     "d5845a845053311a59094cde580c550538b16ceb7db857d1257473d9451bb81d"),
    ({"protocol": "multishot", "lr": 0.01, "width": [40, 20], "rescale": "none"},
     "f35c754673bbc3084c89e90b212e1021b208f6ded8a161f364050557bcac5322"),
]


@pytest.mark.parametrize("flat, key", LITERAL_KEYS)
def test_literal_keys(flat, key):
    assert spec.run_key(flat) == key
    assert RunSpec.from_flat(flat).key == key


def test_key_hashes_only_the_options_that_differ_from_their_defaults():
    assert spec.identity({}) == {}
    assert spec.run_key({}) == hashlib.sha256(b"{}").hexdigest()
    # spelling out a default, or an option added later with its default, keeps the key
    assert spec.run_key(spec.defaults()) == spec.run_key({})
    assert spec.run_key({"lr": 1e-3, "rescale": "fit", "device": "cuda", "progress": False}) == spec.run_key({})
    # 1 and 1.0, "TICKET" and "ticket" are the same run; every identity option changes the key
    assert spec.run_key({"density": 1}) == spec.run_key({"density": 1.0})
    assert spec.run_key({"density": " TICKET "}) == spec.run_key({"density": "ticket"})
    base = spec.run_key({})
    for key, value in [("epochs", 2), ("width", 31), ("density", 0.2), ("seed", 5), ("lr", 0.01), ("noise", 0.0),
                       ("rescale", "none"), ("pruner_options", {"iterations": 2}), ("scope", "layer")]:
        assert spec.run_key({key: value}) != base, key


def test_flat_and_nested_forms_round_trip():
    flat = {"task": "relu", "depth": 3, "width": [8, 6], "pruner": "synflow", "pruner_options": {"iterations": 2},
            "density": "ticket", "seed": 7, "optimizer": "sgd", "n_samples": 500, "prune_bias": False}
    s = RunSpec.from_flat(flat)
    assert s.width == (8, 6) and s.pruner == PrunerSpec("synflow", {"iterations": 2})
    assert s.train.optimizer == "sgd" and s.data.n_samples == 500 and s.prune_bias is False
    assert RunSpec.from_flat(s.flat()) == s
    assert RunSpec.from_dict(s.to_dict()) == s
    assert list(s.flat()) == list(spec.FLAT)
    assert set(spec.defaults()) == set(spec.FLAT) | set(spec.EXEC_KEYS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.seed = 3  # type: ignore[misc]
    with pytest.raises(TypeError, match="wdith"):
        RunSpec.from_flat({"wdith": 3})


@pytest.mark.parametrize("flat, message", [
    ({"prune_bias": "no"}, r"prune_bias must be True or False, got 'no'"),
    ({"dense_baseline": 1}, r"dense_baseline must be True or False"),
    ({"epochs": 2.0}, r"epochs must be an integer >= 0, got 2.0"),
    ({"lr": True}, r"lr must be a finite number, got True"),
    ({"lr": -1.0}, r"lr must be a positive number"),
    ({"optimizer": "adamw"}, r"unknown optimizer 'adamw'; available: adam, sgd"),
    ({"impl": "fast"}, r"unknown impl 'fast'"),
    ({"dtype": "float16"}, r"unknown dtype 'float16'"),
    ({"rescale": "yes"}, r"rescale must be one of 'fit', 'fit-even', 'none'"),
    ({"scope": "local"}, r"scope must be 'global', 'layer' or None"),
    ({"seed": -1}, r"seed must be an integer"),
    ({"width": [10, 0]}, r"width must be an integer >= 1, or a list of them"),
    ({"density": 1.5}, r"density must lie in \(0, 1\]"),
    ({"pruner_options": [1]}, r"pruner_options must be a mapping"),
])
def test_bad_values_are_refused_with_the_option_named(flat, message):
    with pytest.raises(ValueError, match=message):
        RunSpec.from_flat(flat)


def test_registry_checks():
    assert RunSpec(task="relu", depth=2).checked().task == "relu"
    for flat, message in [({"task": "spiral"}, "unknown task"), ({"protocol": "weak"}, "unknown protocol"),
                          ({"pruner": "nope"}, r"unknown pruner 'nope'"), ({"init": "zeros"}, "unknown init"),
                          ({"task": "circle", "noise": 1.5}, r"task 'circle': noise must be")]:
        with pytest.raises(ValueError, match=message):
            RunSpec.from_flat(flat).checked()


def test_group_key_ignores_what_may_differ_within_a_batch():
    a = RunSpec.from_flat({"pruner": "random", "density": 0.5, "seed": 1})
    b = RunSpec.from_flat({"pruner": "magnitude", "density": 0.1, "seed": 2, "noise": 0.0, "scope": "layer"})
    assert a.group_key() == b.group_key()
    for key, value in [("lr", 0.01), ("epochs", 3), ("width", 50), ("protocol", "multishot"), ("dtype", "float64")]:
        assert RunSpec.from_flat({key: value}).group_key() != a.group_key(), key


def test_execution_is_not_identity():
    run, exe = spec.split({"task": "relu", "depth": 2, "device": "cpu", "progress": False})
    assert exe == ExecSpec(device="cpu", progress=False) and run == RunSpec(task="relu", depth=2)
    with pytest.raises(ValueError, match="progress must be True or False"):
        ExecSpec(progress="no")


def test_every_field_has_a_doc_and_sub_specs_are_specs():
    for key, f in spec.fields():
        assert isinstance(f.metadata.get("doc"), str) and f.metadata["doc"], key
    assert spec.choices("optimizer") == ("adam", "sgd") and "singleshot" in spec.choices("protocol")
    with pytest.raises(TypeError, match="RunSpec.train must be a TrainSpec"):
        RunSpec(train={"lr": 0.1})  # type: ignore[arg-type]
    assert TrainSpec().lr == 1e-3 and DataSpec().pruning_samples == 40


def test_database_written_by_c1d78e9_resolves(tmp_path):
    """A results file written by plantseek at c1d78e9 (before rescaling existed) is migrated on open: the same
    sweep with the protocol those runs had (rescale = "none") finds all 9 runs; with today's default
    (rescale = "fit", a different protocol) it reruns them."""
    from plantseek.store import SCHEMA_VERSION, ResultStore
    from plantseek.sweep import parse_sweep, plan_sweep

    db = tmp_path / "old.db"
    shutil.copy(FIXTURES / "c1d78e9.db", db)
    text = (FIXTURES / "c1d78e9.toml").read_text()
    before = {r[0] for r in sqlite3.connect(db).execute("SELECT key FROM runs")}
    with ResultStore(db) as store:
        assert store.count() == {"ok": 9, "failed": 0} or sum(store.count().values()) == 9
        paper = parse_sweep(text.replace('[sweep]\n', '[sweep]\nrescale = "none"\n'))
        runs, keys, skipped = plan_sweep(paper, store)
        assert (len(runs), skipped) == (0, 9)
        default = parse_sweep(text)
        runs, keys, skipped = plan_sweep(default, store)
        assert (len(runs), skipped) == (9, 0)
        assert all(r["config"]["rescale"] == "none" for r in store.records())
    con = sqlite3.connect(db)
    after = {r[0] for r in con.execute("SELECT key FROM runs")}
    assert not before & after and len(after) == 9
    assert max(v for (v,) in con.execute("SELECT version FROM schema_version")) == SCHEMA_VERSION
    with ResultStore(db) as store:  # a second open changes nothing
        assert set(store.keys()) == after
