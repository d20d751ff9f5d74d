"""The SQLite results database: schema, upserts, corrupt and foreign files, concurrent writers, export."""
from __future__ import annotations

import math
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

import plantseek
from plantseek.store import (SCHEMA_VERSION, ResultStore, RunRecord, StoreError, export, format_summary,
                             to_dataframe)


def _rec(key: str, status: str = "ok", **metrics) -> RunRecord:
    cfg = {"task": "circle", "pruner": "random", "protocol": "singleshot", "density": 0.1, "seed": int(key[-1:] or 0)
           if key[-1:].isdigit() else 0, "depth": 3, "width": 30, "epochs": 1}
    return RunRecord(key=key, config=cfg, status=status, metrics=metrics or ({"test_accuracy": 0.5, "density": 0.1}
                     if status == "ok" else None), error=None if status == "ok" else "RuntimeError: boom",
                     started_at=time.time(), finished_at=time.time(), duration_s=0.0, version="0.1.0")


def test_new_database_has_schema_wal_and_version(tmp_path):
    db = tmp_path / "sub" / "r.db"
    with ResultStore(db) as store:
        assert store.count() == {"ok": 0, "failed": 0}
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert con.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    cols = {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    assert {"key", "config", "metrics", "status", "error", "started_at", "finished_at", "version"} <= cols
    con.close()
    with ResultStore(db) as store:  # reopening an existing database works
        assert store.keys() == set()


def test_upsert_rules(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        store.put([_rec("a1"), _rec("b2", "failed")])
        assert store.keys("ok") == {"a1"} and store.keys("failed") == {"b2"}
        store.put(_rec("a1", "failed"))  # a failure never replaces a success
        store.put(_rec("b2", test_accuracy=0.9))  # a success replaces a failure
        recs = {r["key"]: r for r in store.records()}
        assert recs["a1"]["status"] == "ok" and recs["a1"]["attempts"] == 1
        assert recs["b2"]["status"] == "ok" and recs["b2"]["error"] is None and recs["b2"]["attempts"] == 2
        assert recs["b2"]["metrics"] == {"test_accuracy": 0.9}
        with pytest.raises(ValueError, match="status"):
            store.put(_rec("c3", "running"))


def test_metric_values_are_stored_as_json_numbers(tmp_path):
    import numpy as np
    import torch

    with ResultStore(tmp_path / "r.db") as store:
        store.put(_rec("a1", acc=np.float32(0.5), n=np.int64(3), t=torch.tensor(0.25), nan=float("nan"),
                       flag=True, per_layer=torch.tensor([1.0, 2.0])))
        m = store.records()[0]["metrics"]
    assert m["acc"] == 0.5 and m["n"] == 3 and m["t"] == 0.25 and math.isnan(m["nan"]) and m["flag"] is True
    assert m["per_layer"] == [1.0, 2.0]


def test_not_sqlite_file_is_a_clear_error(tmp_path):
    p = tmp_path / "notes.db"
    p.write_text("these are my notes, not a database\n" * 20)
    with pytest.raises(StoreError, match="not a plantseek results database.*not an SQLite file"):
        ResultStore(p)
    assert p.read_text().startswith("these are my notes")  # untouched


def test_foreign_sqlite_database_is_a_clear_error(tmp_path):
    p = tmp_path / "other.db"
    con = sqlite3.connect(p)
    con.execute("CREATE TABLE customers (id INTEGER, name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="SQLite database but not a plantseek results database.*customers"):
        ResultStore(p)


def test_corrupt_database_is_a_clear_error(tmp_path):
    p = tmp_path / "r.db"
    with ResultStore(p) as store:
        store.put([_rec(f"k{i}") for i in range(300)])
    con = sqlite3.connect(p)
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    data = bytearray(p.read_bytes())
    assert len(data) > 8192
    # keep the header, garble everything after the first page
    for i in range(4096, len(data)):
        data[i] = (data[i] * 7 + 13) % 256
    p.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        Path(str(p) + suffix).unlink(missing_ok=True)
    with pytest.raises(StoreError, match="corrupt"):
        with ResultStore(p) as store:
            store.records()


def test_newer_schema_is_refused(tmp_path):
    p = tmp_path / "r.db"
    ResultStore(p).close()
    con = sqlite3.connect(p)
    con.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="newer plantseek"):
        ResultStore(p)


def test_missing_database_for_reading(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ResultStore(tmp_path / "nope.db", readonly=True)
    assert not (tmp_path / "nope.db").exists()


_WRITER = textwrap.dedent("""
    import importlib.util, sys, time
    # load store.py on its own: it needs nothing but the standard library (no torch, no training code)
    spec = importlib.util.spec_from_file_location("store_alone", sys.argv[1])
    store_mod = sys.modules["store_alone"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(store_mod)
    assert "torch" not in sys.modules
    db, prefix, n = sys.argv[2], sys.argv[3], int(sys.argv[4])
    with store_mod.ResultStore(db) as store:
        for i in range(n):
            cfg = {"task": "circle", "seed": i}
            store.put(store_mod.RunRecord(key=f"{prefix}{i}", config=cfg, status="ok", metrics={"x": i},
                                          version="0"))
""")


def test_concurrent_writers_do_not_corrupt(tmp_path):
    """Four processes create and write the same database at once, each in many small transactions (two of
    them the same keys): every row arrives, once, and the file passes SQLite's integrity check."""
    db = str(tmp_path / "r.db")
    store_py = str(Path(plantseek.__file__).resolve().parent / "store.py")
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, store_py, db, p, "200"], stderr=subprocess.PIPE)
             for p in ("a", "b", "c", "a")]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    with ResultStore(db) as store:
        keys = store.keys("ok")
        assert keys == {f"{p}{i}" for p in "abc" for i in range(200)}
        assert {r["attempts"] for r in store.records() if r["key"].startswith("a")} == {2}
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_two_sweeps_on_one_database_at_once(tmp_path):
    """Two sweep processes (different sweeps, one overlapping run set) write the same file concurrently."""
    script = textwrap.dedent("""
        import sys
        from plantseek.sweep import run_sweep
        from sweep_fake import FakeSeeker
        f = FakeSeeker(batch_sleep=0.01)
        run_sweep(sys.argv[1], sys.argv[2], batch_fn=f.batch, single_fn=f, max_batch=1, progress=False)
    """)
    base = ('[sweep]\ntasks=["circle","relu"]\npruners=["random","synflow","ticket"]\nprotocol="singleshot"\n'
            'densities=[0.1,0.01,"ticket"]\ndepth=3\nwidth=30\nepochs=1\n')
    (tmp_path / "a.toml").write_text(base + "seeds=[0,1,2]\n")
    (tmp_path / "b.toml").write_text(base + "seeds=[2,3,4]\n")
    # the children import sweep_fake from tests/
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(plantseek.__file__).resolve().parents[1]),
                                                       str(Path(__file__).resolve().parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    db = tmp_path / "r.db"
    procs = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path / f), str(db)], env=env,
                              stderr=subprocess.PIPE) for f in ("a.toml", "b.toml")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with ResultStore(db) as store:
        recs = store.records()
        assert len(recs) == 14 * 5 and store.count()["failed"] == 0  # the oracle once per seed and task
        assert len(store.sweeps()) == 2


def test_dataframe_export_and_summary(tmp_path):
    from plantseek.sweep import run_sweep
    from sweep_fake import FakeSeeker

    (tmp_path / "s.toml").write_text(
        '[sweep]\ntasks=["circle","relu"]\npruners=["random",{name="synflow",iterations=100}]\nprotocol="singleshot"\n'
        'densities=[0.1,"ticket"]\nseeds=[0,1]\ndepth=3\nwidth=[[30,20]]\nepochs=1\nlr=0.01\n')
    db = tmp_path / "r.db"
    f = FakeSeeker(fail_seeds=[1])
    run_sweep(tmp_path / "s.toml", db, batch_fn=f.batch, single_fn=f, progress=False, log=lambda m: None)
    with ResultStore(db) as store:
        df = to_dataframe(store.records())
    assert len(df) == 16
    cols = list(df.columns)
    assert cols[:9] == ["task", "pruner", "protocol", "density", "seed", "depth", "width", "epochs", "dtype"] or \
        cols[:8] == ["task", "pruner", "protocol", "density", "seed", "depth", "width", "epochs"]
    assert {"pruner_options", "lr", "kept_density", "test_loss", "recall", "status", "error"} <= set(cols)
    assert set(df["density"].astype(str)) == {"0.1", "ticket"}
    assert set(df["width"]) == {"[30, 20]"}
    failed = df[df["status"] == "failed"]
    assert len(failed) == 8 and failed["error"].str.contains("fake failure").all()
    assert failed["test_loss"].isna().all()

    n = export(db, tmp_path / "out.csv", "csv")
    back = pd.read_csv(tmp_path / "out.csv")
    assert n == 16 and len(back) == 16 and list(back.columns) == cols
    pytest.importorskip("pyarrow")
    export(db, tmp_path / "out.parquet")
    pq = pd.read_parquet(tmp_path / "out.parquet")
    assert len(pq) == 16 and set(pq["density"]) == {"0.1", "ticket"}
    assert pq.loc[pq["status"] == "ok", "test_loss"].notna().all()
    with pytest.raises(ValueError, match="csv, parquet"):
        export(db, tmp_path / "out.xlsx", "xlsx")

    text = format_summary(db)
    assert "16 runs (8 ok, 8 failed)" in text and "synflow" in text and "--retry-failed" in text


def test_cli_results_and_export(tmp_path, capsys):
    cli = pytest.importorskip("plantseek.cli")
    from sweep_fake import FakeSeeker
    from plantseek.sweep import run_sweep

    (tmp_path / "s.toml").write_text('[sweep]\ntask="relu"\npruner="random"\nprotocol="singleshot"\n'
                                     'density=[0.1,0.5]\nseed=0\ndepth=2\nwidth=10\n')
    db = tmp_path / "r.db"
    run_sweep(tmp_path / "s.toml", db, batch_fn=FakeSeeker().batch, progress=False, log=lambda m: None)
    assert cli.main(["results", str(db)]) == 0
    assert "2 runs (2 ok, 0 failed)" in capsys.readouterr().out
    assert cli.main(["export", str(db), "--format", "csv", "--out", str(tmp_path / "x.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "x.csv")) == 2
    (tmp_path / "junk.db").write_bytes(b"\x00junk" * 100)
    assert cli.main(["results", str(tmp_path / "junk.db")]) == 2
    assert "not a plantseek results database" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- masks (schema 3)

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def test_c1d78e9_database_migrates_to_schema_3_keeping_its_rows(tmp_path):
    """The schema-1 file of tests/fixtures gains its run keys (1 -> 2) and the masks column (2 -> 3) on its
    first writable open; every row keeps its metrics, and no row has a mask."""
    import shutil

    db = tmp_path / "old.db"
    shutil.copy(FIXTURES / "c1d78e9.db", db)
    con = sqlite3.connect(db)
    assert [v for (v,) in con.execute("SELECT version FROM schema_version")] == [1]
    before = sorted(m for (m,) in con.execute("SELECT metrics FROM runs"))
    con.close()
    with ResultStore(db) as store:
        recs = store.records()
        assert len(recs) == 9 and all(r["mask_bytes"] is None and store.masks(r["key"]) is None for r in recs)
    con = sqlite3.connect(db)
    assert [v for (v,) in con.execute("SELECT version FROM schema_version ORDER BY version")] == [1, 2, 3]
    assert "masks" in {r[1] for r in con.execute("PRAGMA table_info(runs)")}
    assert sorted(m for (m,) in con.execute("SELECT metrics FROM runs")) == before
    assert con.execute("SELECT count(*) FROM runs WHERE masks IS NOT NULL").fetchone()[0] == 0
    con.close()
    with ResultStore(db) as store:  # a second open changes nothing
        assert len(store.records()) == 9
    assert SCHEMA_VERSION == 3


def _schema_2_file(path: Path) -> None:
    """A results file as plantseek wrote it at schema 2 (no masks column), with two runs."""
    with ResultStore(path) as store:
        store.put([_rec("a1"), _rec("b2", "failed")])
    con = sqlite3.connect(path)
    con.execute("ALTER TABLE runs DROP COLUMN masks")
    con.execute("DELETE FROM schema_version")
    con.execute("INSERT INTO schema_version (version) VALUES (2)")
    con.commit()
    con.close()


def test_schema_2_file_reads_read_only_and_gains_masks_when_written(tmp_path, capsys):
    """An old file opened read-only is read, exported, summarised and listed as it is (no masks); opened for
    writing it gains the masks column without losing a row, and new runs store their masks."""
    from plantseek import mask_io
    from plantseek.cli import main

    db = tmp_path / "v2.db"
    _schema_2_file(db)
    with ResultStore(db, readonly=True) as store:
        recs = store.records()
        assert [r["key"] for r in recs] == ["a1", "b2"] and recs[0]["metrics"]["test_accuracy"] == 0.5
        assert store.masks("a1") is None and recs[0]["mask_bytes"] is None
    assert export(db, tmp_path / "v2.csv") == 2 and "2 runs (1 ok, 1 failed)" in format_summary(db)
    assert main(["masks", str(db)]) == 0 and "0 of 2 runs have a stored mask" in capsys.readouterr().out
    con = sqlite3.connect(db)
    assert "masks" not in {r[1] for r in con.execute("PRAGMA table_info(runs)")}  # read-only changed nothing
    con.close()
    mask = [(_ones((3, 2)), _ones((3,)))]
    with ResultStore(db) as store:
        assert [r["metrics"] for r in store.records()] == [r["metrics"] for r in recs]
        store.put(RunRecord(**{**_rec("c3").__dict__, "masks": mask_io.pack(mask)}))
        assert mask_io.unpack(store.masks("c3"))[0][0].all() and store.masks("a1") is None
    con = sqlite3.connect(db)
    assert max(v for (v,) in con.execute("SELECT version FROM schema_version")) == 3
    con.close()


def _ones(shape):
    import numpy as np

    return np.ones(shape, dtype=bool)


def test_masks_follow_the_upsert_rules(tmp_path):
    """A failed run stores no mask; a success replacing a failure brings its mask; a failure never removes one."""
    with ResultStore(tmp_path / "r.db") as store:
        store.put(RunRecord(**{**_rec("a1", "failed").__dict__, "masks": b"PSMK-failed"}))
        assert store.masks("a1") is None
        store.put(RunRecord(**{**_rec("a1").__dict__, "masks": b"PSMK-ok"}))
        assert store.masks("a1") == b"PSMK-ok"
        store.put(RunRecord(**{**_rec("a1", "failed").__dict__}))
        assert store.masks("a1") == b"PSMK-ok" and store.records()[0]["mask_bytes"] == 7
        with pytest.raises(ValueError, match="masks must be the bytes"):
            store.put(RunRecord(**{**_rec("b1").__dict__, "masks": [1, 0]}))


def test_run_keys_resolve_from_a_unique_prefix(tmp_path):
    with ResultStore(tmp_path / "r.db") as store:
        store.put([_rec("abc1"), _rec("abd2"), _rec("ab")])
        assert store.resolve_key("abc") == "abc1" and store.resolve_key("ab") == "ab"
        with pytest.raises(StoreError, match="no run in .* starting with 'x'"):
            store.resolve_key("x")
        store.put(_rec("abd3"))
        with pytest.raises(StoreError, match="2 runs in .* have keys starting with 'abd'"):
            store.resolve_key("abd")
        with pytest.raises(StoreError, match="no run in .* starting with '%'"):
            store.resolve_key("%")


def test_an_old_database_still_reports(tmp_path):
    """The report reads a file that has no masks (the c1d78e9 fixture, opened read-only as it is)."""
    import shutil

    from plantseek.report import build_report

    db = tmp_path / "old.db"
    shutil.copy(FIXTURES / "c1d78e9.db", db)
    result = build_report(db, tmp_path / "rep", formats=("png",), progress=False, draw_tickets=False)
    assert (tmp_path / "rep" / "index.html").exists() and result is not None


MOUNTS = """\
/dev/sda1 / ext4 rw,relatime 0 0
server:/export /mnt/shared nfs4 rw,relatime 0 0
//nas/lab /mnt/lab\\040results cifs rw 0 0
tmpfs /mnt/shared/local tmpfs rw 0 0
"""


def test_the_filesystem_of_a_path_is_its_longest_mount_point(tmp_path):
    from plantseek.store import filesystem_type

    mounts = tmp_path / "mounts"
    mounts.write_text(MOUNTS)
    assert filesystem_type("/home/me/r.db", mounts) == "ext4"
    assert filesystem_type("/mnt/shared/r.db", mounts) == "nfs4"
    assert filesystem_type("/mnt/sharedness/r.db", mounts) == "ext4"  # a prefix of the name is not a parent
    assert filesystem_type("/mnt/shared/local/r.db", mounts) == "tmpfs"
    assert filesystem_type("/mnt/lab results/r.db", mounts) == "cifs"  # \040 is a space
    assert filesystem_type("/x", tmp_path / "no-such-file") is None


def test_a_database_on_a_network_filesystem_uses_the_rollback_journal(tmp_path, monkeypatch):
    from plantseek import store as store_mod

    monkeypatch.setattr(store_mod, "filesystem_type", lambda path, mounts="/proc/mounts": "nfs4")
    with ResultStore(tmp_path / "shared.db") as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    monkeypatch.setattr(store_mod, "filesystem_type", lambda path, mounts="/proc/mounts": "ext4")
    with ResultStore(tmp_path / "local.db") as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with ResultStore(tmp_path / "shared.db") as store:  # moved to a local disk: WAL again
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    monkeypatch.setenv("PLANTSEEK_SQLITE_JOURNAL", "delete")
    with ResultStore(tmp_path / "local.db") as store:
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    monkeypatch.setenv("PLANTSEEK_SQLITE_JOURNAL", "memory")
    with pytest.raises(StoreError, match="PLANTSEEK_SQLITE_JOURNAL must be 'wal' or 'delete'"):
        ResultStore(tmp_path / "local.db")
