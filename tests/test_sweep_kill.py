"""A sweep killed with ``kill -9`` loses at most the runs in flight, on every executor; Dask chunks give every
worker work, and a worker streams each finished batch to the client before its chunk ends."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from plantseek.store import ResultStore
from plantseek.sweep import load_sweep, run_sweep
from plantseek.sweep.executors import make_chunks
from sweep_fake import FakeSeeker
from test_sweep_claims import _child_env

# one group of 8 runs; (random, seed 3) is in the last chunk
SWEEP_8 = textwrap.dedent("""
    [sweep]
    name = "kill"
    tasks = ["circle"]
    pruners = ["magnitude", "random"]
    protocols = ["singleshot"]
    densities = [0.1]
    seeds = [0, 1, 2, 3]
    depth = 3
    width = 30
    epochs = 1
""")
HANG = ("random", 3)

_CHILD = textwrap.dedent("""
    import sys
    from plantseek.sweep import run_sweep
    from sweep_fake import FakeSeeker
    f = FakeSeeker(hang=[("random", 3)])
    options = {"local": {}, "dask-threads": {"executor": "dask-local", "workers": 2, "processes": False},
               "dask-processes": {"executor": "dask-local", "workers": 2, "processes": True}}[sys.argv[3]]
    run_sweep(sys.argv[1], sys.argv[2], batch_fn=f.batch, single_fn=f, max_batch=2, progress=False, **options)
""")


def _sweep_file(tmp_path: Path) -> Path:
    p = tmp_path / "s.toml"
    p.write_text(SWEEP_8)
    return p


def _stored(db: Path) -> set[str]:
    if not db.exists():
        return set()
    with ResultStore(db, readonly=True) as store:
        return store.keys(status="ok")


def _in_flight(sweep_file: Path, workers: int | None) -> set[str]:
    """The keys of the chunk that holds the hanging run (trained together with it, so in flight with it)."""
    sweep = load_sweep(sweep_file)
    for chunk in make_chunks(sweep.runs, 2, workers=workers):
        if any((r.pruner, r.seed) == HANG for r in chunk):
            return {r.key for r in chunk}
    raise AssertionError("the hanging run is in no chunk")


@pytest.mark.parametrize("executor", ["local", "dask-threads", "dask-processes"])
def test_kill_9_loses_only_the_runs_in_flight(tmp_path, executor):
    if executor.startswith("dask"):
        pytest.importorskip("distributed")
    sweep_file, db = _sweep_file(tmp_path), tmp_path / "r.db"
    everything = {r.key for r in load_sweep(sweep_file).runs}
    # local: chunks of --max-batch 2; Dask with 2 workers: chunks of 1 (8 runs, at least 4 chunks per worker)
    in_flight = _in_flight(sweep_file, workers=2 if executor.startswith("dask") else None)
    finished = everything - in_flight
    assert len(in_flight) == (1 if executor.startswith("dask") else 2)
    ResultStore(db).close()  # created up front, so that polling it never meets a half-created file
    # its own session, so that the kill takes the Dask worker processes it started with it
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(sweep_file), str(db), executor], env=_child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 90
        while _stored(db) != finished:
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, (f"after 90 s only {len(_stored(db))} of the {len(finished)} finished "
                                            f"runs are stored")
            time.sleep(0.2)
        time.sleep(1.0)  # the hanging batch is still running: nothing else may arrive
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert _stored(db) == finished
    with ResultStore(db) as store:
        assert {c["key"] for c in store.claims()} <= in_flight  # the dead process held only what was in flight
        assert all(r["status"] == "ok" and r["attempts"] == 1 for r in store.records())
    # resuming on this machine takes the dead process's claims over at once and runs only what was lost
    f = FakeSeeker()
    rep = run_sweep(sweep_file, db, batch_fn=f.batch, single_fn=f, max_batch=2, progress=False, log=lambda m: None)
    assert (rep.skipped, rep.ran, rep.ok, rep.elsewhere) == (len(finished), len(in_flight), len(in_flight), 0)
    assert _stored(db) == everything


def test_dask_chunks_give_every_worker_work(tmp_path):
    runs = load_sweep(_sweep_file(tmp_path)).runs
    assert [len(c) for c in make_chunks(runs)] == [8]  # one shape: one chunk for the local executor
    assert [len(c) for c in make_chunks(runs, workers=2)] == [1] * 8  # at least 4 chunks per worker
    many = runs * 5  # 40 runs of one shape
    assert [len(c) for c in make_chunks(many, workers=2)] == [5] * 8
    assert [len(c) for c in make_chunks(many, workers=3)] == [4] * 10  # ceil(40 / 12) runs per chunk
    assert [len(c) for c in make_chunks(many, max_batch=3, workers=2)] == [3] * 13 + [1]  # max_batch bounds


_WORKERS: list[str] = []


class _WhereSeeker(FakeSeeker):
    """Records which Dask worker trained each batch (threads in this process share the list)."""

    @staticmethod
    def _note() -> None:
        from distributed import get_worker

        _WORKERS.append(get_worker().address)
        time.sleep(0.3)

    def __call__(self, **kw):  # a chunk of one runs through the single-run call
        self._note()
        return super().__call__(**kw)

    def batch(self, kwargs_list):
        self._note()
        return super().batch(kwargs_list)


def test_a_dask_sweep_of_one_shape_uses_both_workers(tmp_path):
    pytest.importorskip("distributed")
    _WORKERS.clear()
    f = _WhereSeeker()
    rep = run_sweep(_sweep_file(tmp_path), tmp_path / "r.db", executor="dask-local", workers=2, processes=False,
                    batch_fn=f.batch, single_fn=f, progress=False, log=lambda m: None)
    assert rep.ok == 8
    assert len(set(_WORKERS)) == 2, f"one worker trained every batch: {_WORKERS}"


class _GatedSeeker(FakeSeeker):
    """Seed 1's batch waits for the test to open the gate (the rest of a chunk still running)."""

    gate = threading.Event()

    def _wait(self, kwargs_list) -> None:
        if any(kw["seed"] == 1 for kw in kwargs_list):
            assert self.gate.wait(60), "the test never opened the gate"

    def __call__(self, **kw):  # a batch of one runs through the single-run call
        self._wait([kw])
        return super().__call__(**kw)

    def batch(self, kwargs_list):
        self._wait(kwargs_list)
        return super().batch(kwargs_list)


def test_a_worker_streams_each_finished_batch_before_its_chunk_ends(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from plantseek.sweep import executors

    monkeypatch.setattr(executors, "plan_batch_size", lambda kwargs, device=None, limit=None: (1, "one per batch"))
    sweep_file, db = _sweep_file(tmp_path), tmp_path / "r.db"
    sweep = load_sweep(sweep_file)
    first = {r.key for r in sweep.runs if (r.pruner, r.seed) == ("magnitude", 0)}
    _GatedSeeker.gate.clear()
    f = _GatedSeeker()
    result: dict = {}

    def sweep_in_background() -> None:
        try:
            result["report"] = run_sweep(sweep_file, db, executor="dask-local", workers=1, processes=False,
                                         batch_fn=f.batch, single_fn=f, progress=False, log=lambda m: None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            result["error"] = exc

    thread = threading.Thread(target=sweep_in_background, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 60
        # one worker: the 8 runs are one chunk (seed-major), trained one per batch; (magnitude, 0)'s record
        # arrives while the seed-1 batches of the same chunk still wait
        while not first <= _stored(db):
            assert thread.is_alive(), result
            assert time.time() < deadline, "the first batch's record never reached the database"
            time.sleep(0.1)
        stored = _stored(db)  # streamed: its chunk is still unfinished
        assert stored <= {r.key for r in sweep.runs if r.seed == 0} and thread.is_alive()
    finally:
        _GatedSeeker.gate.set()
    thread.join(60)
    assert "error" not in result, result.get("error")
    assert result["report"].ok == 8
    with ResultStore(db) as store:
        assert all(r["attempts"] == 1 for r in store.records())  # streamed and returned, written once
