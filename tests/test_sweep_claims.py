"""Sweeps that share one database: runs are claimed per batch (`ResultStore.claim`), so two sweep processes on
one database split the runs instead of both running every run."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import plantseek
from plantseek.store import ResultStore, RunRecord
from plantseek.sweep import load_sweep, run_sweep
from sweep_fake import FakeSeeker

# 40 runs: 2 tasks x 5 pruners x 4 seeds (two groups of 20, one per task)
SWEEP_40 = textwrap.dedent("""
    [sweep]
    name = "shared"
    tasks = ["circle", "relu"]
    pruners = ["magnitude", "random", "snip", "synflow", "grasp"]
    protocols = ["singleshot"]
    densities = [0.1]
    seeds = [0, 1, 2, 3]
    depth = 3
    width = 30
    epochs = 1
""")

_CHILD = textwrap.dedent("""
    import signal
    import sys
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from plantseek.sweep import run_sweep
    from sweep_fake import FakeSeeker
    f = FakeSeeker(batch_sleep=0.15)
    rep = run_sweep(sys.argv[1], sys.argv[2], batch_fn=f.batch, single_fn=f, max_batch=2, progress=False)
    print("RAN", rep.ran, "ELSEWHERE", rep.elsewhere, flush=True)
""")


def _child_env() -> dict:
    env = dict(os.environ)
    pkg_root = str(Path(plantseek.__file__).resolve().parents[1])
    tests_dir = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join([pkg_root, tests_dir, env.get("PYTHONPATH", "")])
    return env


def _sweep_file(tmp_path: Path) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(SWEEP_40)
    return p


def _record(key: str) -> RunRecord:
    return RunRecord(key=key, config={"k": key}, status="ok", metrics={"x": 1.0}, version="t")


def test_the_sweep_has_40_runs(tmp_path):
    assert len(load_sweep(_sweep_file(tmp_path)).runs) == 40


def test_two_processes_share_one_sweep(tmp_path):
    sweep_file, db = _sweep_file(tmp_path), tmp_path / "r.db"
    ResultStore(db).close()  # created once up front, so neither child races to create it
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, str(sweep_file), str(db)], env=_child_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    ran = [int(out.split()[out.split().index("RAN") + 1]) for out, _ in outs]
    assert sum(ran) == 40
    assert all(n > 0 for n in ran), f"one process ran everything ({ran}): the claims did not split the sweep"
    with ResultStore(db) as store:
        recs = store.records()
        assert store.claims() == []  # every claim dropped when its run was stored, or released at exit
    assert len(recs) == 40
    assert all(r["status"] == "ok" and r["attempts"] == 1 for r in recs)
    # a rerun finds nothing to do
    f = FakeSeeker()
    rep = run_sweep(sweep_file, db, batch_fn=f.batch, single_fn=f, progress=False, log=lambda m: None)
    assert (rep.skipped, rep.ran) == (40, 0)


def _fake_claim(db: Path, key: str, *, expires_in: float, host: str = "some-other-host", pid: int = 1) -> None:
    with ResultStore(db) as store:
        store.conn.execute("INSERT OR REPLACE INTO claims (key, pid, host, token, claimed_at, expires_at) "
                           "VALUES (?, ?, ?, ?, ?, ?)", (key, pid, host, "deadbeef", time.time() - 1000,
                                                         time.time() + expires_in))


def test_claim_basics(tmp_path):
    db = tmp_path / "r.db"
    with ResultStore(db) as a, ResultStore(db) as b:
        assert a.claim(["k1", "k2", "k3"], 60) == ["k1", "k2", "k3"]
        assert b.claim(["k2", "k3", "k4"], 60) == ["k4"]  # a's live claims are skipped
        assert a.claim(["k1"], 60) == ["k1"]  # renewing one's own claim
        a.put(_record("k1"))  # storing a run drops its claim
        assert {c["key"] for c in a.claims()} == {"k2", "k3", "k4"}
        assert b.claim(["k1"], 60) == []  # k1 has a result now
        assert a.release(["k2"]) == 1 and a.release(["k4"]) == 0  # k4 is b's
        assert b.claim(["k2"], 60) == ["k2"]
        assert a.release() == 1  # k3
        assert sorted(c["key"] for c in a.claims()) == ["k2", "k4"]
        assert b.held_elsewhere(["k2", "k4"]) == set() and a.held_elsewhere(["k2", "k4", "k9"]) == {"k2", "k4"}
        assert a.renew(60) == 0 and b.renew(60) == 2


def test_an_expired_claim_is_taken_over(tmp_path):
    db = tmp_path / "r.db"
    _fake_claim(db, "dead", expires_in=-5)  # a process on another host that died: its lease ran out
    with ResultStore(db) as store:
        assert store.claim(["dead"], 60) == ["dead"]
        (c,) = store.claims()
        assert c["token"] == store.token and c["pid"] == os.getpid() and c["expires_at"] > time.time() + 50


def test_a_live_claim_is_skipped(tmp_path):
    db = tmp_path / "r.db"
    _fake_claim(db, "busy", expires_in=600)
    with ResultStore(db) as store:
        assert store.claim(["busy", "free"], 60) == ["free"]
        assert store.held_elsewhere(["busy", "free"]) == {"busy"}


def test_a_dead_process_on_this_host_loses_its_claims_at_once(tmp_path):
    db = tmp_path / "r.db"
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()  # its pid exists no more (reaped)
    _fake_claim(db, "orphan", expires_in=600, host=socket.gethostname(), pid=p.pid)
    with ResultStore(db) as store:
        assert store.claim(["orphan"], 60) == ["orphan"]


def test_a_sweep_skips_runs_held_by_a_live_process_and_releases_on_interrupt(tmp_path):
    sweep_file, db = _sweep_file(tmp_path), tmp_path / "r.db"
    keys = [r.key for r in load_sweep(sweep_file).runs]
    for k in keys[:5]:
        _fake_claim(db, k, expires_in=600)
    f = FakeSeeker()
    rep = run_sweep(sweep_file, db, batch_fn=f.batch, single_fn=f, max_batch=4, progress=False, log=lambda m: None)
    assert (rep.ran, rep.elsewhere) == (35, 5)
    with ResultStore(db) as store:
        assert store.keys() == set(keys[5:])
        assert {c["key"] for c in store.claims()} == set(keys[:5])  # the other process's claims are untouched
        store.conn.execute("DELETE FROM claims")
        store.conn.execute("DELETE FROM runs")
    calls = {"n": 0}

    def batch(kws):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return f.batch(kws)

    try:
        run_sweep(sweep_file, db, batch_fn=batch, single_fn=f, max_batch=4, progress=False, log=lambda m: None)
    except KeyboardInterrupt:
        pass
    else:  # pragma: no cover
        raise AssertionError("the sweep was not interrupted")
    with ResultStore(db) as store:
        assert len(store.keys()) == 4 and store.claims() == []  # the interrupted batch's claims were released


def test_the_lease_is_renewed_while_a_batch_runs(tmp_path):
    db = tmp_path / "r.db"
    with ResultStore(db) as store:
        store.claim(["long"], 0.6)
        with store.keep_alive(0.6, every=0.1):
            time.sleep(1.2)  # longer than the lease: the heartbeat keeps it
            with ResultStore(db) as other:
                assert other.claim(["long"], 60) == []
        time.sleep(0.8)
        with ResultStore(db) as other:  # no heartbeat any more: it expires and is taken over
            assert other.claim(["long"], 60) == ["long"]


def test_a_dask_sweep_claims_per_chunk_and_skips_held_runs(tmp_path):
    import pytest

    pytest.importorskip("distributed")
    sweep_file, db = _sweep_file(tmp_path), tmp_path / "r.db"
    keys = [r.key for r in load_sweep(sweep_file).runs]
    for k in keys[:3]:
        _fake_claim(db, k, expires_in=600)
    f = FakeSeeker()
    rep = run_sweep(sweep_file, db, executor="dask-local", workers=2, processes=False, batch_fn=f.batch,
                    single_fn=f, max_batch=4, progress=False, log=lambda m: None)
    assert (rep.ran, rep.ok, rep.elsewhere) == (37, 37, 3)
    with ResultStore(db) as store:
        assert store.keys() == set(keys[3:]) and {c["key"] for c in store.claims()} == set(keys[:3])
        assert all(r["attempts"] == 1 for r in store.records())


def test_the_lease_comes_from_the_command_line(tmp_path, monkeypatch, capsys):
    import pytest

    from plantseek import sweep as sweep_pkg
    from plantseek.cli import main

    seen = {}

    def fake_run_sweep(sweep, db, **kw):
        seen.update(kw)
        return sweep_pkg.SweepReport(total=40, skipped=40)

    monkeypatch.setattr(sweep_pkg, "run_sweep", fake_run_sweep)
    sweep_file = _sweep_file(tmp_path)
    assert main(["sweep", str(sweep_file), "--db", str(tmp_path / "r.db"), "--lease", "45"]) == 0
    assert seen["lease_s"] == 45.0
    for bad, why in (("0", "at least 1 seconds"), ("nan", "finite"), ("soon", "could not convert")):
        with pytest.raises(SystemExit):
            main(["sweep", str(sweep_file), "--db", str(tmp_path / "r.db"), "--lease", bad])
        assert why in capsys.readouterr().err


def test_a_bad_lease_is_refused_before_anything_runs(tmp_path):
    import pytest

    f = FakeSeeker()
    for bad in (0.5, float("inf"), "300", True):
        with pytest.raises(ValueError, match="lease must be"):
            run_sweep(_sweep_file(tmp_path), tmp_path / "r.db", batch_fn=f.batch, single_fn=f, lease_s=bad,
                      progress=False, log=lambda m: None)
    assert not (tmp_path / "r.db").exists()


def test_claims_last_the_lease_asked_for(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        store.claim(["a"], lease_s=45.0)
        (c,) = store.claims()
    assert abs((c["expires_at"] - c["claimed_at"]) - 45.0) < 1.0
