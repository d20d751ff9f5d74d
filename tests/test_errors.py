"""Clear errors instead of raw tracebacks (issue 19): read-only databases, output paths, crafted planted-network
files, custom tasks whose ticket does not fit, custom pruners that return the wrong thing. Each message names
the problem and the path, argument or plugin."""
from __future__ import annotations

import os
import sqlite3

import pytest
import torch

import plantseek
from plantseek import pruners, tasks
from plantseek.cli import main
from plantseek.store import ResultStore, RunRecord, StoreError

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0  # root writes through chmod: those cases are simulated


def _rec() -> RunRecord:
    return RunRecord(key="k", config={"task": "relu"}, status="ok", metrics={"test_loss": 1.0}, version="0.1.0")


def _db(tmp_path):
    db = tmp_path / "r.db"
    with ResultStore(db):
        pass
    return db


# ------------------------------------------------------------------------------------------------ read-only --db

@pytest.mark.skipif(ROOT, reason="root writes through chmod; test_read_only_database_simulated covers it")
def test_read_only_database_file_and_directory(tmp_path):
    db = _db(tmp_path)
    os.chmod(db, 0o444)
    try:
        with pytest.raises(StoreError, match="read-only") as info:
            ResultStore(db)
        assert str(db) in str(info.value)
    finally:
        os.chmod(db, 0o644)
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o555)
    try:
        with pytest.raises(StoreError, match=r"read-only \(its directory") as info:
            ResultStore(ro / "new.db")
        assert str(ro / "new.db") in str(info.value)
    finally:
        os.chmod(ro, 0o755)


def test_read_only_database_simulated(tmp_path, monkeypatch):
    """A read-only mount as access(2) reports it (EROFS, also for root), and a connection SQLite cannot write
    through (mode=ro): both say read-only and where, not sqlite3.OperationalError."""
    db = _db(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode & os.W_OK else real_access(p, mode))
    with pytest.raises(StoreError, match="read-only") as info:
        ResultStore(db)
    assert str(db) in str(info.value)
    with pytest.raises(StoreError, match="read-only") as info:
        ResultStore(tmp_path / "new.db")
    assert "new.db" in str(info.value) and "directory" in str(info.value)
    with ResultStore(db, readonly=True) as store:  # reading needs no write access
        assert store.count() == {"ok": 0, "failed": 0}
    monkeypatch.setattr(os, "access", real_access)

    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda path, *a, **k: real_connect(f"file:{path}?mode=ro", *a,
                                                                                uri=True, **k))
    with ResultStore(db) as store:
        with pytest.raises(StoreError, match="read-only") as info:
            store.put(_rec())
    assert str(db) in str(info.value) and "attempt to write a readonly database" in str(info.value)


def test_sweep_cli_on_a_read_only_database_is_one_line(tmp_path, monkeypatch, capsys):
    db = _db(tmp_path)
    sweep = tmp_path / "s.toml"
    sweep.write_text('[sweep]\ntask="relu"\npruner="random"\nprotocol="singleshot"\ndensity=0.5\nseed=0\n'
                     'depth=2\nwidth=8\nepochs=0\n')
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if mode & os.W_OK else real_access(p, mode))
    assert main(["sweep", str(sweep), "--db", str(db), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("plantseek sweep: error:") and "read-only" in err and str(db) in err


# ------------------------------------------------------------------------------------------------ output paths

def test_plant_out_names_a_directory_or_creates_parents(tmp_path, capsys):
    assert main(["plant", "--task", "relu", "--width", "8", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "existing directory" in err and str(tmp_path) in err and "Traceback" not in err
    target = tmp_path / "missing" / "dir" / "p.pt"
    assert main(["plant", "--task", "relu", "--width", "8", "--out", str(target)]) == 0
    assert plantseek.load(target).widths == [1, 8, 1]
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["plant", "--task", "relu", "--width", "8", "--out", str(blocker / "p.pt")]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a directory" in err and str(blocker) in err


def test_save_creates_parents_and_names_a_directory(tmp_path):
    net = plantseek.plant("relu", width=8)
    net.save(tmp_path / "a" / "b.pt")
    assert plantseek.load(tmp_path / "a" / "b.pt").widths == net.widths
    with pytest.raises(ValueError, match="existing directory") as info:
        net.save(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_report_out_that_is_a_file(tmp_path, capsys):
    out = tmp_path / "report.html"
    out.write_text("")
    assert main(["report", str(_db(tmp_path)), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "existing file, not a directory" in err and str(out) in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------------ .pt files

@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("pt") / "ok.pt"
    plantseek.plant("relu", width=8, seed=0).save(path)
    return torch.load(path, weights_only=True)


def _crafted(tmp_path, saved, **changes):
    d = dict(saved)
    for k, v in changes.items():
        if v is None:
            d.pop(k)
        else:
            d[k] = v
    path = tmp_path / "crafted.pt"
    torch.save(d, path)
    return path


@pytest.mark.parametrize("changes, words", [
    (dict(weights=None), ["lacks", "'weights'"]),
    (dict(ticket=None, ticket_mask=None), ["lacks", "'ticket_mask'", "'ticket'"]),
    (dict(version=99), ["format version 99", "newer plantseek", "version 1"]),
    (dict(version="1"), ["format version '1' is not valid"]),
    ("float32", ["'weights' layer 0", "float64", "float32"]),
    ("bad-mask", ["'ticket_mask' layer 1", "shapes"]),
    (dict(output_scale=float("nan")), ["'output_scale'", "positive finite"]),
    (dict(ticket={"weights": []}), ["field 'ticket' is not a ticket"]),
])
def test_crafted_planted_network_files(tmp_path, saved, changes, words):
    if changes == "float32":
        changes = dict(weights=[w.float() for w in saved["weights"]])
    elif changes == "bad-mask":
        changes = dict(ticket_mask=[saved["ticket_mask"][0], (saved["ticket_mask"][1][0].T, saved["ticket_mask"][1][1])])
    path = _crafted(tmp_path, saved, **changes)
    with pytest.raises(ValueError) as info:
        plantseek.load(path)
    msg = str(info.value)
    assert str(path) in msg
    for w in words:
        assert w in msg, msg


def test_show_on_a_crafted_file_is_one_line(tmp_path, saved, capsys):
    path = _crafted(tmp_path, saved, version=99)
    assert main(["show", str(path)]) == 2
    err = capsys.readouterr().err
    assert "format version 99" in err and "Traceback" not in err


def test_a_float32_network_saves_as_float64_and_loads(tmp_path):
    net = plantseek.plant("relu", width=8).to("cpu", torch.float32)
    net.save(tmp_path / "f.pt")
    assert plantseek.load(tmp_path / "f.pt").dtype == torch.float64


# ------------------------------------------------------------------------------------------------ custom tasks

def test_task_whose_ticket_does_not_fit_its_input_dim(monkeypatch):
    relu = type(tasks.get("relu"))

    class Wide(relu):
        input_dim = 3

    monkeypatch.setitem(tasks.base._TASKS, "wide-relu", Wide)
    Wide.name = "wide-relu"
    with pytest.raises(ValueError, match=r"task 'wide-relu'.*input_dim is 3 but its ticket has 1 inputs"):
        plantseek.plant("wide-relu", width=8)
    with pytest.raises(ValueError, match=r"input_dim is 3 but its ticket has 1 inputs"):
        plantseek.seek(task="wide-relu", depth=2, width=8, pruner="random", density=0.5, epochs=0, n_samples=100,
                       dense_baseline=False, progress=False, device="cpu")


def test_task_registration_checks_its_attributes():
    with pytest.raises(ValueError, match=r"task 'bad-kind': kind must be"):
        @tasks.register("bad-kind")
        class BadKind(tasks.Task):
            kind = "ranking"
    with pytest.raises(ValueError, match=r"task 'bad-dim': input_dim must be an integer >= 1, got 0"):
        @tasks.register("bad-dim")
        class BadDim(tasks.Task):
            input_dim = 0
    assert "bad-kind" not in tasks.available() and "bad-dim" not in tasks.available()


def test_task_whose_inputs_do_not_fit_its_input_dim():
    class Flat(type(tasks.get("relu"))):
        def inputs(self, n, generator):
            return torch.zeros(n, 2, dtype=torch.float64)

    with pytest.raises(ValueError, match=r"inputs\(n=10\) gave shape \(10, 2\).*input_dim is 1"):
        Flat().data(n=10)


# ------------------------------------------------------------------------------------------------ custom pruners

def _seek(pruner):
    return plantseek.seek(task="relu", depth=2, width=8, pruner=pruner, density=0.5, epochs=0, n_samples=100,
                          dense_baseline=False, progress=False, device="cpu")


def _masks(net, make):
    return [make(w, b) for w, b in zip(net.weights, net.biases)]


class _Returns(pruners.Pruner):
    def __init__(self, name, make):
        super().__init__()
        self.name, self.make = name, make

    def prune(self, net, data, density, **kw):
        return self.make(net)


class _Scores(pruners.ScorePruner):
    def __init__(self, name, make):
        super().__init__()
        self.name, self.make = name, make

    def scores(self, net, data, generator):
        return self.make(net)


@pytest.mark.parametrize("kind, make, words", [
    (_Returns, lambda net: None, ["'p-none'", "is None", "(weight_mask, bias_mask) pair per layer"]),
    (_Returns, lambda net: _masks(net, lambda w, b: (w != 0, b != 0, b != 0)), ["'p-triple'", "tuple of 3"]),
    (_Returns, lambda net: list(net.weights),
     ["'p-tensors'", "layer 0 is a tensor", "not a (weight_mask, bias_mask) pair"]),
    (_Returns, lambda net: _masks(net, lambda w, b: (torch.ones(w.shape, dtype=torch.bool, device="meta"), b != 0)),
     ["'p-meta'", "returned its layer 0 mask on meta"]),
    (_Returns, lambda net: _masks(net, lambda w, b: (w != 0, None)), ["'p-nonebias'", "bias mask is None"]),
    (_Scores, lambda net: None, ["'s-none'", "scores", "is None", "(weight_scores, bias_scores) pair per layer"]),
    (_Scores, lambda net: _masks(net, lambda w, b: (w, b, b)), ["'s-triple'", "tuple of 3"]),
    (_Scores, lambda net: _masks(net, lambda w, b: (w.to(torch.complex128), b)), ["'s-complex'", "complex128", "real"]),
    (_Scores, lambda net: _masks(net, lambda w, b: (torch.ones(w.shape, device="meta"), b)), ["'s-meta'", "meta tensor"]),
    (_Scores, lambda net: _masks(net, lambda w, b: (w, None)), ["'s-nonebias'", "bias scores are None"]),
    (_Scores, lambda net: _masks(net, lambda w, b: (w > 0, b > 0)), ["'s-bool'", "bool", "real numbers"]),
])
def test_pruner_returning_bad_masks_or_scores(kind, make, words):
    """A Pruner returning bad masks, or a ScorePruner bad scores: the error names the pruner and the fault."""
    name = words[0].strip("'")
    with pytest.raises(ValueError) as info:
        _seek(kind(name, make))
    for w in words:
        assert w in str(info.value), str(info.value)


def test_pruner_without_prune_names_itself():
    class Lazy(pruners.Pruner):
        name = "lazy"

    with pytest.raises(NotImplementedError, match="pruner 'lazy' does not implement prune"):
        _seek(Lazy())
