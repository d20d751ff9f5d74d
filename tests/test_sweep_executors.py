"""The local executor with a fake seeker: grouping, resuming, failures, --retry-failed, and killing a sweep."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import plantseek
from plantseek.store import ResultStore
from plantseek.sweep import SweepConfigError, load_sweep, parse_sweep, run_sweep
from plantseek.sweep.executors import make_chunks, run_chunk
from sweep_fake import FakeSeeker, fake_metrics

SWEEP = (Path(__file__).resolve().parents[1] / "examples" / "issue_example.toml").read_text()  # the sweep


class Recorder(FakeSeeker):
    """A FakeSeeker that remembers the chunk sizes it was called with."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.batches: list[int] = []
        self.singles = 0

    def batch(self, kwargs_list):
        self.batches.append(len(kwargs_list))
        return super().batch(kwargs_list)

    def __call__(self, **kw):
        self.singles += 1
        return super().__call__(**kw)


def _sweep_file(tmp_path: Path, text: str = SWEEP) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p


def test_make_chunks_groups_by_shape_and_balances():
    sweep = parse_sweep(SWEEP.replace("depth = 3", "depth = [3, 4]"))
    chunks = make_chunks(sweep.runs, max_batch=10)
    for chunk in chunks:
        assert len({r.group_key for r in chunk}) == 1
        assert len(chunk) <= 10
    # 2 tasks x 2 depths = 4 groups of 14 runs (the ticket oracle once per seed), each 2 chunks of 7
    assert sorted(len(c) for c in chunks) == [7] * 8
    assert make_chunks(sweep.runs, 10) == chunks  # deterministic
    for chunk in chunks:  # seed-major: a seed's runs of a group share one chunk (its identical runs train once)
        assert [r.seed for r in chunk] == sorted(r.seed for r in chunk)
    seeds = {(c[0].group_key, r.seed) for c in chunks for r in c}
    assert len(seeds) == sum(len({r.seed for r in c}) for c in chunks)
    assert sum(len(c) for c in make_chunks(sweep.runs)) == len(sweep.runs)
    with pytest.raises(ValueError, match="max_batch"):
        make_chunks(sweep.runs, 0)


def test_default_chunk_size_follows_the_protocol():
    """By default a group splits into chunks of DEFAULT_MAX_BATCH runs, or its protocol's entry of
    MAX_BATCH_BY_PROTOCOL (strong: mostly edge-popup's batched search); a given max_batch overrides both."""
    from plantseek.sweep.executors import DEFAULT_MAX_BATCH, MAX_BATCH_BY_PROTOCOL

    text = SWEEP.replace("seeds = [0, 1]", "seeds = {start = 0, count = 40}")
    for protocol in ("singleshot", "strong"):
        runs = parse_sweep(text.replace('protocols = ["singleshot"]', f'protocols = ["{protocol}"]')).runs
        assert {r.protocol for r in runs} == {protocol}
        groups = {r.group_key for r in runs}
        chunks = make_chunks(runs)
        limit = MAX_BATCH_BY_PROTOCOL.get(protocol, DEFAULT_MAX_BATCH)
        assert max(len(c) for c in chunks) <= limit
        per_group = len(runs) // len(groups)
        assert len(chunks) == len(groups) * -(-per_group // limit), protocol
        assert max(len(c) for c in make_chunks(runs, 5)) <= 5
    assert MAX_BATCH_BY_PROTOCOL["strong"] > DEFAULT_MAX_BATCH
    doc = (Path(__file__).resolve().parents[1] / "docs" / "gpu.md").read_text()
    assert f"at most {DEFAULT_MAX_BATCH} runs per batch" in doc
    assert all(f"{n} under the {p} protocol" in doc for p, n in MAX_BATCH_BY_PROTOCOL.items())


def test_local_sweep_writes_every_run_and_resumes(tmp_path):
    f = Recorder()
    db = tmp_path / "r.db"
    rep = run_sweep(_sweep_file(tmp_path), db, batch_fn=f.batch, single_fn=f, progress=False, log=lambda m: None)
    assert (rep.total, rep.skipped, rep.ran, rep.ok, rep.failed) == (28, 0, 28, 28, 0)
    assert sorted(f.batches) == [14, 14] and f.singles == 0  # one batched call per task
    with ResultStore(db) as store:
        recs = store.records()
    assert len(recs) == 28
    sweep = load_sweep(_sweep_file(tmp_path))
    by_key = {r["key"]: r for r in recs}
    for run in sweep.runs:
        rec = by_key[run.key]
        assert rec["status"] == "ok" and rec["config"] == run.to_dict()
        assert rec["metrics"] == pytest.approx(fake_metrics(run.seek_kwargs()))
        assert rec["batch_runs"] == 14 and rec["version"] == plantseek.__version__
    # rerun: nothing left to do
    rep2 = run_sweep(_sweep_file(tmp_path), db, batch_fn=f.batch, single_fn=f, progress=False, log=lambda m: None)
    assert (rep2.skipped, rep2.ran) == (28, 0) and len(f.batches) == 2
    # growing the sweep runs only the new runs
    rep3 = run_sweep(_sweep_file(tmp_path, SWEEP.replace("seeds = [0, 1]", "seeds = [0, 1, 2]")), db,
                     batch_fn=f.batch, single_fn=f, progress=False, log=lambda m: None)
    assert (rep3.total, rep3.skipped, rep3.ran) == (42, 28, 14)


def test_failing_runs_are_recorded_and_retried(tmp_path):
    db = tmp_path / "r.db"
    f = Recorder(fail_seeds=[1], fail_batches=True)
    rep = run_sweep(_sweep_file(tmp_path), db, batch_fn=f.batch, single_fn=f, max_batch=6, progress=False,
                    log=lambda m: None)
    assert (rep.ok, rep.failed) == (14, 14)
    # chunks are seed-major (groups of 14 -> chunks of 5, 5, 4): the chunk of seed 0 alone trained as a batch,
    # the two holding seed 1 fell back to one-by-one (9 runs a group): only the bad runs failed
    assert f.singles == 18
    with ResultStore(db) as store:
        failed = [r for r in store.records() if r["status"] == "failed"]
    assert len(failed) == 14 and all(r["config"]["seed"] == 1 for r in failed)
    assert all(r["error"].startswith("RuntimeError: fake failure for seed 1") for r in failed)
    assert all("Traceback" in r["error"] for r in failed)
    # a plain rerun skips the failed runs; --retry-failed reruns exactly those
    good = Recorder()
    rep2 = run_sweep(_sweep_file(tmp_path), db, batch_fn=good.batch, single_fn=good, progress=False,
                     log=lambda m: None)
    assert rep2.ran == 0
    rep3 = run_sweep(_sweep_file(tmp_path), db, batch_fn=good.batch, single_fn=good, retry_failed=True,
                     progress=False, log=lambda m: None)
    assert (rep3.ran, rep3.ok, rep3.failed) == (14, 14, 0)
    with ResultStore(db) as store:
        recs = store.records()
        assert store.count() == {"ok": 28, "failed": 0}
    assert {r["attempts"] for r in recs if r["config"]["seed"] == 1} == {2}
    assert all(r["error"] is None for r in recs)


def test_per_run_exceptions_from_the_batch_and_bad_results(tmp_path):
    # a batch that returns an exception object for one run: only that run fails, no fallback needed
    f = Recorder(fail_seeds=[0], fail_batches=False)
    configs = [r.to_dict() for r in parse_sweep(SWEEP).runs[:6]]
    recs = run_chunk(configs, [str(i) for i in range(6)], batch_fn=f.batch, single_fn=f)
    assert [r.status for r in recs] == ["ok" if c["seed"] else "failed" for c in configs]
    assert f.singles == 0
    # a batch returning the wrong number of results falls back to one by one
    recs = run_chunk(configs, [str(i) for i in range(6)], batch_fn=lambda kws: [], single_fn=FakeSeeker())
    assert all(r.status == "ok" for r in recs)
    # a result without metrics is a failure with a clear message
    recs = run_chunk(configs[:1], ["k"], batch_fn=None, single_fn=lambda **kw: 42)
    assert recs[0].status == "failed" and "without a flat `metrics` dict" in recs[0].error


def test_keyboard_interrupt_keeps_finished_chunks(tmp_path):
    db = tmp_path / "r.db"
    calls = {"n": 0}
    fake = FakeSeeker()

    def batch(kws):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return fake.batch(kws)

    with pytest.raises(KeyboardInterrupt):
        run_sweep(_sweep_file(tmp_path), db, batch_fn=batch, single_fn=fake, max_batch=6, progress=False,
                  log=lambda m: None)
    with ResultStore(db) as store:
        assert store.count()["ok"] == 10  # two chunks of 5 (14 runs per task in 3 chunks) before Ctrl-C
    rep = run_sweep(_sweep_file(tmp_path), db, batch_fn=fake.batch, single_fn=fake, max_batch=6, progress=False,
                    log=lambda m: None)
    assert (rep.skipped, rep.ran, rep.ok) == (10, 18, 18)


_CHILD = textwrap.dedent("""
    import signal
    import sys
    # Ctrl-C raises KeyboardInterrupt even when this test runs in a background job (which starts children with
    # SIGINT ignored, and Python then installs no handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from plantseek.sweep import run_sweep
    from sweep_fake import FakeSeeker
    f = FakeSeeker(batch_sleep=0.25)
    run_sweep(sys.argv[1], sys.argv[2], batch_fn=f.batch, single_fn=f, max_batch=2, progress=False)
""")


def _child_env() -> dict:
    env = dict(os.environ)
    pkg_root = str(Path(plantseek.__file__).resolve().parents[1])
    tests_dir = str(Path(__file__).resolve().parent)  # the child imports sweep_fake from tests/
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, tests_dir, env.get("PYTHONPATH", "")])
    return env


def _ok_rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        con = sqlite3.connect(db, timeout=5)
        try:
            return con.execute("SELECT count(*) FROM runs WHERE status = 'ok'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.OperationalError:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_sweep_process_resumes(tmp_path, sig):
    """Kill a sweep process mid-run (SIGKILL, or Ctrl-C = SIGINT): finished runs are kept, at most the chunk
    in flight is lost, and rerunning finishes the sweep without redoing finished runs."""
    sweep_file = _sweep_file(tmp_path)
    db = tmp_path / "r.db"
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(sweep_file), str(db)], env=_child_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while _ok_rows(db) < 6 and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    assert 6 <= _ok_rows(db) < 28, "the sweep finished before the test could kill it"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    if sig == signal.SIGINT:
        assert b"interrupted" in err
    with ResultStore(db) as store:
        done_before = {r["key"]: r["finished_at"] for r in store.records()}
    assert 6 <= len(done_before) < 28
    f = Recorder()
    rep = run_sweep(sweep_file, db, batch_fn=f.batch, single_fn=f, max_batch=2, progress=False, log=lambda m: None)
    assert rep.skipped == len(done_before) and rep.ran == 28 - len(done_before)
    with ResultStore(db) as store:
        recs = store.records()
    assert len(recs) == 28 and all(r["status"] == "ok" for r in recs)
    for r in recs:  # finished runs were not redone
        if r["key"] in done_before:
            assert r["finished_at"] == done_before[r["key"]] and r["attempts"] == 1


def test_cli_dry_run_and_bad_device(tmp_path, capsys):
    from plantseek.cli import main

    f = _sweep_file(tmp_path)
    assert main(["sweep", str(f), "--db", str(tmp_path / "r.db"), "--dry-run"]) == 0
    assert "28 runs, 0 already in" in capsys.readouterr().out
    assert main(["sweep", str(f), "--db", str(tmp_path / "r.db"), "--device", "tpu:0"]) == 2
    assert "tpu" in capsys.readouterr().err
    assert main(["sweep", str(f), "--db", str(tmp_path / "r.db"), "--workers", "2"]) == 2
    assert "--workers only applies" in capsys.readouterr().err


def test_cli_dry_run_prints_each_group_with_its_memory_estimate(tmp_path, capsys):
    """One line per group (task, shape, protocol, runs, runs per batch, memory per run and per batch, free
    memory) and the total; nothing runs and no database is written."""
    import re

    from plantseek import memory
    from plantseek.cli import main
    from plantseek.sweep.executors import plan_groups

    f = tmp_path / "s.toml"
    f.write_text(TINY.replace("width = 24", "widths = [24, 40]"))
    db = tmp_path / "r.db"
    assert main(["sweep", str(f), "--db", str(db), "--dry-run", "--device", "cpu", "--max-batch", "5"]) == 0
    out = capsys.readouterr().out
    assert not db.exists()
    sweep = load_sweep(f)
    plans = plan_groups(sweep.runs, "cpu", 5)
    assert len(plans) == 2 * 2 * 2  # tasks x protocols x widths
    lines = [ln.strip() for ln in out.splitlines() if "per batch" in ln]
    assert len(lines) == len(plans)
    for plan, line in zip(plans, lines):
        # (2 pruners x 2 densities + the oracle once) x 2 seeds
        assert plan.runs == 10 and plan.per_batch == 5 and plan.batches == 2
        assert line.startswith(f"{plan.task} depth=3 width={plan.width} {plan.protocol}: 10 runs, 5 per batch")
        group = [r for r in sweep.runs if (r.task, r.width, r.protocol) == (plan.task, plan.width, plan.protocol)]
        per_run = max(memory.footprint_of(r.seek_kwargs("cpu"), "cpu").total for r in group)
        assert plan.per_run_bytes == per_run and plan.per_batch_bytes == 5 * per_run
        assert f"~{memory.format_bytes(plan.per_run_bytes)} per run" in line
        assert f"~{memory.format_bytes(plan.per_batch_bytes)} per batch" in line
        assert re.search(r"[\d.]+ [KMGT]iB free on cpu$", line), line
    assert f"total: {len(sweep.runs)} runs in 8 groups, 16 batches" in out
    # without --max-batch the batch is what fits the free memory (all of a small group)
    assert main(["sweep", str(f), "--db", str(db), "--dry-run", "--device", "cpu"]) == 0
    assert "10 runs, 10 per batch" in capsys.readouterr().out


TINY = """
[sweep]
tasks = ["relu", "circle"]
pruners = ["random", "magnitude", "ticket"]
protocols = ["singleshot", "strong"]
densities = [0.5, "ticket"]
seeds = [0, 1]
depth = 3
width = 24
epochs = 1
n_samples = 300
dtype = "float64"
"""


def test_end_to_end_with_the_real_seeker(tmp_path, capsys):
    """`plantseek sweep` with plantseek.seek_batch, then results, export and report; batched runs equal
    the same runs one by one (float64), and a Dask LocalCluster gives the same rows."""
    seek_mod = pytest.importorskip("plantseek.seek")
    from plantseek.cli import main

    f = _sweep_file(tmp_path, TINY)
    db = tmp_path / "r.db"
    assert main(["sweep", str(f), "--db", str(db), "--no-progress"]) == 0
    assert "40 runs in the sweep: 0 already in the database, 40 run now (40 ok, 0 failed)" in capsys.readouterr().out
    with ResultStore(db) as store:
        recs = {r["key"]: r for r in store.records()}
    assert all(r["batch_runs"] > 1 for r in recs.values())
    ticket = [r for r in recs.values() if r["config"]["pruner"] == "ticket"]
    assert all(r["metrics"]["recall"] == 1.0 for r in ticket)
    # one by one (plantseek.seek) gives the same metrics as the batched sweep
    run = load_sweep(f).runs[3]
    alone = seek_mod.seek(**run.seek_kwargs(), progress=False).metrics
    batched = recs[run.key]["metrics"]
    for k, v in alone.items():
        if isinstance(v, float) and k not in ("train_time_s",):
            assert batched[k] == pytest.approx(v, rel=1e-9, abs=1e-12, nan_ok=True), k
    assert main(["sweep", str(f), "--db", str(db), "--no-progress"]) == 0
    assert "40 already in the database, 0 run now" in capsys.readouterr().out
    assert main(["export", str(db), "--out", str(tmp_path / "r.csv")]) == 0
    assert main(["report", str(db), "--out", str(tmp_path / "rep"), "--no-progress", "--no-svg"]) == 0
    assert (tmp_path / "rep" / "index.html").exists()
    pytest.importorskip("distributed")
    rep = run_sweep(f, tmp_path / "d.db", executor="dask-local", workers=2, processes=False, progress=False,
                    log=lambda m: None)
    assert rep.ok == 40
    with ResultStore(tmp_path / "d.db") as store:
        drecs = {r["key"]: r for r in store.records()}
    assert drecs.keys() == recs.keys()
    for k in recs:
        a = {m: v for m, v in recs[k]["metrics"].items() if m != "train_time_s"}
        b = {m: v for m, v in drecs[k]["metrics"].items() if m != "train_time_s"}
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12, nan_ok=True)
    # every run's mask came back from the workers, the same as the local executor's
    with ResultStore(db) as local_store, ResultStore(tmp_path / "d.db") as dask_store:
        for k in recs:
            packed = dask_store.masks(k)
            assert packed is not None and packed == local_store.masks(k), k


HALFSHOT = textwrap.dedent('''
    from dataclasses import replace

    from plantseek import protocols


    @protocols.register("halfshot-sweep")
    class HalfShot(protocols.SingleShot):
        """Prune once at initialisation like singleshot, then train half the epochs."""

        def run(self, runs, dense, settings):
            super().run(runs, dense, replace(settings, epochs=settings.epochs // 2))
''')


@pytest.fixture
def halfshot_module(tmp_path, monkeypatch):
    """A user's module registering protocol ``halfshot-sweep``; the registry and sys.modules are restored after."""
    from plantseek import protocols

    (tmp_path / "my_sweep_protocols.py").write_text(HALFSHOT)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(protocols, "_PROTOCOLS", dict(protocols._PROTOCOLS))  # unregistered on teardown
    yield "my_sweep_protocols"
    sys.modules.pop("my_sweep_protocols", None)


def test_a_users_protocol_runs_through_sweep(tmp_path, halfshot_module):
    """A protocol registered in a module of `imports = [...]` is swept like a built-in one: halfshot at 2 epochs
    gives singleshot's results at 1 epoch."""
    pytest.importorskip("plantseek.seek")
    text = f"""
[sweep]
imports = ["{halfshot_module}"]
tasks = ["relu"]
pruners = ["magnitude"]
densities = [0.5]
seeds = [0, 1]
depth = 2
width = 10
n_samples = 200
dtype = "float64"

[[experiment]]
protocols = ["halfshot-sweep"]
epochs = 2

[[experiment]]
protocols = ["singleshot"]
epochs = 1
"""
    db = tmp_path / "p.db"
    rep = run_sweep(_sweep_file(tmp_path, text), db, progress=False, log=lambda m: None)
    assert (rep.total, rep.ok, rep.failed) == (4, 4, 0)
    with ResultStore(db) as store:
        recs = store.records()
    assert all(r["status"] == "ok" for r in recs)
    by = {(r["config"]["protocol"], r["config"]["seed"]): r["metrics"] for r in recs}
    assert sorted(by) == [("halfshot-sweep", 0), ("halfshot-sweep", 1), ("singleshot", 0), ("singleshot", 1)]
    for seed in (0, 1):
        assert by[("halfshot-sweep", seed)]["test_loss"] == pytest.approx(by[("singleshot", seed)]["test_loss"],
                                                                          rel=1e-9)


def test_an_unknown_protocol_is_refused_listing_the_registered_ones(halfshot_module):
    text = TINY.replace("[sweep]", f'[sweep]\nimports = ["{halfshot_module}"]').replace(
        'protocols = ["singleshot", "strong"]', 'protocols = ["singleshot", "no-such-protocol"]')
    with pytest.raises(SweepConfigError, match="no-such-protocol") as err:
        parse_sweep(text)
    for name in ("halfshot-sweep", "multishot", "singleshot", "strong"):
        assert name in str(err.value)


def test_the_users_protocol_is_unregistered_after_its_test():
    from plantseek import protocols

    assert "halfshot-sweep" not in protocols.available()


def test_a_users_pruner_runs_through_sweep_and_results(tmp_path, monkeypatch, capsys):
    """`imports = [...]` in a sweep file loads a user's module that registers a pruner; it then runs like a
    built-in one (and on Dask workers, which import the same modules), and gives magnitude's results."""
    pytest.importorskip("plantseek.seek")
    from plantseek.cli import main

    (tmp_path / "my_sweep_pruners.py").write_text(textwrap.dedent('''
        from plantseek import pruners

        if "my-magnitude-sweep" not in pruners.available():
            @pruners.register("my-magnitude-sweep")
            class MyMagnitude(pruners.ScorePruner):
                """Keep the largest |w| and |b|."""

                def scores(self, net, data, generator, mask):
                    return [(w.abs(), b.abs()) for w, b in zip(net.weights, net.biases)]
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    f = _sweep_file(tmp_path, TINY.replace('[sweep]', '[sweep]\nimports = ["my_sweep_pruners"]')
                    .replace('pruners = ["random", "magnitude", "ticket"]', 'pruners = ["magnitude", "my-magnitude-sweep"]')
                    .replace('tasks = ["relu", "circle"]', 'tasks = ["relu"]')
                    .replace('protocols = ["singleshot", "strong"]', 'protocols = ["singleshot"]'))
    db = tmp_path / "r.db"
    assert main(["sweep", str(f), "--db", str(db), "--no-progress"]) == 0
    with ResultStore(db) as store:
        recs = store.records()
    assert len(recs) == 8 and all(r["status"] == "ok" for r in recs)
    by = {}
    for r in recs:
        c = r["config"]
        by.setdefault((c["density"], c["seed"]), {})[c["pruner"]] = r["metrics"]
    for pair in by.values():
        mine, ref = pair["my-magnitude-sweep"], pair["magnitude"]
        assert mine["test_loss"] == pytest.approx(ref["test_loss"], rel=1e-9)
        assert mine["recall"] == ref["recall"]
    capsys.readouterr()
    assert main(["results", str(db)]) == 0
    assert "my-magnitude-sweep" in capsys.readouterr().out
