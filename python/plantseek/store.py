"""The results database: one SQLite file (WAL mode; the rollback journal on a network filesystem), one row
per run.

Each row holds the run's key (`plantseek.spec.run_key`: a hash over the options that differ from their
defaults), its configuration and
flat metrics as JSON, its status (``ok`` or ``failed``), the error text of a failed run, timestamps, the
package version that produced it, and the run's found mask (bit-packed and compressed by `plantseek.mask_io`,
decoded without knowing the network; NULL for a failed run and for runs stored before schema 3). Writes are
short transactions with a busy timeout and retries, so several sweeps can write the same file at once; a
finished run is committed as soon as its group finishes.

Metric names, their order in flat tables and the headline columns come from `plantseek.metric_schema`
(imported where it is read, so that writing needs the standard library only); records written under names
earlier versions used (the kept fraction as ``density``) are read under today's. This module reads and
writes rows only: it never imports training or seeking code.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import secrets
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "SCHEMA_VERSION",
    "StoreError",
    "filesystem_type",
    "journal_mode_for",
    "ResultStore",
    "RunRecord",
    "open_store",
    "to_dataframe",
    "summary_table",
    "export",
]

# 1: keys hashed the full configuration and the package version; 2: keys are `plantseek.spec.run_key` (a
# schema-1 file is migrated once, on its first writable open, in one transaction: `ResultStore._migrate_keys`);
# 3: a `masks` BLOB column (each run's found mask, `plantseek.mask_io.pack`), added to older files on open.
# The `claims` table (which sweep process is running which run, `ResultStore.claim`) needs no version: it is
# created on every writable open (CREATE TABLE IF NOT EXISTS), and readers that do not know it ignore it.
SCHEMA_VERSION = 3
DEFAULT_LEASE_S = 300.0  # how long a claim lives without renewal (a killed process's runs free up after it)
APPLICATION_ID = 0x506C5365  # "PlSe": marks the file as a plantseek results database
STATUSES = ("ok", "failed")
CONFIG_COLUMNS = ("task", "pruner", "protocol", "density", "seed", "depth", "width", "epochs", "dtype")
# a metric name that would collide with a configuration column gets this suffix in flat tables (no declared
# metric does: the kept fraction is `kept_density`, the configuration's `density` is the one requested)
COLLISION_SUFFIX = "_measured"

_CLAIMS_SCHEMA_START = "CREATE TABLE IF NOT EXISTS claims"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    metrics TEXT,
    status TEXT NOT NULL CHECK (status IN ('ok', 'failed')),
    error TEXT,
    started_at REAL,
    finished_at REAL,
    duration_s REAL,
    batch_runs INTEGER,
    attempts INTEGER NOT NULL DEFAULT 1,
    version TEXT NOT NULL,
    device TEXT,
    host TEXT,
    sweep TEXT,
    masks BLOB
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
CREATE TABLE IF NOT EXISTS claims (
    key TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    token TEXT NOT NULL,
    claimed_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sweeps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    path TEXT,
    source TEXT,
    n_runs INTEGER,
    started_at REAL NOT NULL,
    version TEXT,
    host TEXT
);
"""


class StoreError(ValueError):
    """A database file that cannot be used: corrupt, foreign, or from a newer plantseek."""


@dataclass
class RunRecord:
    """What the executors hand to the store for one finished (or failed) run."""

    key: str
    config: dict
    status: str
    metrics: dict | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    duration_s: float | None = None
    batch_runs: int | None = None
    version: str = ""
    device: str | None = None
    host: str | None = None
    sweep: str | None = None
    masks: bytes | None = None  # the found mask, `plantseek.mask_io.pack`; None for a failed run


def _jsonable(value: Any) -> Any:
    """Metric values as JSON: tensors/numpy scalars become numbers; NaN/inf survive as JSON NaN/Infinity."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    # torch tensors, numpy arrays and scalars, without importing either
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if hasattr(value, "item"):
        return _jsonable(value.item())
    return str(value)


# filesystems shared between machines: SQLite's WAL mode needs shared memory between the processes (one host),
# so a database on one of these uses the rollback journal instead (`journal_mode_for`)
NETWORK_FILESYSTEMS = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "lustre", "gpfs", "beegfs", "ceph", "fuse.ceph", "glusterfs",
    "fuse.glusterfs", "fuse.sshfs", "9p", "afs", "panfs", "orangefs", "pvfs2", "fuse.juicefs", "wekafs",
})


def filesystem_type(path: str | os.PathLike, mounts: str | os.PathLike = "/proc/mounts") -> str | None:
    """The type of the filesystem that holds ``path`` (the longest mount point above it in ``mounts``);
    None where that cannot be read (not Linux)."""
    try:
        lines = Path(mounts).read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(os.path.abspath(path))
    best, kind = "", None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[1])  # a space is \040
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


def journal_mode_for(path: str | os.PathLike) -> str:
    """``WAL`` (readers never wait for the writer) on a local disk; ``DELETE`` (the rollback journal, whose
    file locks a network filesystem can carry) on one of `NETWORK_FILESYSTEMS`, where WAL would corrupt the
    file once two machines write it. ``PLANTSEEK_SQLITE_JOURNAL=wal|delete`` overrides the choice."""
    forced = os.environ.get("PLANTSEEK_SQLITE_JOURNAL", "").strip().lower()
    if forced:
        if forced not in ("wal", "delete"):
            raise StoreError(f"PLANTSEEK_SQLITE_JOURNAL must be 'wal' or 'delete', not {forced!r}")
        return forced.upper()
    directory = Path(path).parent if str(Path(path).parent) else Path(".")
    return "DELETE" if filesystem_type(directory) in NETWORK_FILESYSTEMS else "WAL"


class ResultStore:
    """A plantseek results database. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | os.PathLike, *, create: bool = True, readonly: bool = False,
                 timeout: float = 60.0, retries: int = 20) -> None:
        self.path = Path(path)
        self.readonly = readonly
        self.retries = retries
        # who this store claims runs as (`claim`): process, host and a token unique to this open
        self.pid = os.getpid()
        self.host = socket.gethostname()
        self.token = secrets.token_hex(8)
        self.timeout = timeout
        self.journal_mode = journal_mode_for(self.path)
        if not self.path.exists():
            if not create or readonly:
                raise FileNotFoundError(f"results database {str(self.path)!r} does not exist")
            if self.path.parent and not self.path.parent.exists():
                try:
                    self.path.parent.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create the directory of results database {str(self.path)!r}: "
                                     f"{exc.strerror or exc}") from None
        elif self.path.is_dir():
            raise StoreError(f"{str(self.path)!r} is a directory, not a results database")
        if not readonly:
            self._check_writable()
        self._check_header()
        try:
            self.conn = sqlite3.connect(str(self.path), timeout=timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open results database {str(self.path)!r}: {exc}") from None
        try:
            self._setup()
        except StoreError:
            self.conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise StoreError(self._corrupt_message(exc)) from None

    # -- opening ------------------------------------------------------------------------------------------

    def _check_header(self) -> None:
        """Reject files that are not SQLite at all before SQLite reports something cryptic."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return
        if size == 0:
            return
        with open(self.path, "rb") as fh:
            head = fh.read(16)
        if head != b"SQLite format 3\x00":
            raise StoreError(
                f"{str(self.path)!r} is not a plantseek results database: it is not an SQLite file "
                f"(it may be corrupt, or another kind of file); use a new --db path"
            )

    def _check_writable(self) -> None:
        """Refuse a read-only file or directory up front: writing needs the file and, in WAL mode, the
        directory (SQLite creates the -wal and -shm files beside the database)."""
        directory = self.path.parent if str(self.path.parent) else Path(".")
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise StoreError(self._readonly_message("the file is not writable"))
        wal = all(Path(f"{self.path}{s}").exists() for s in ("-wal", "-shm"))
        if not wal and not os.access(directory, os.W_OK | os.X_OK):
            raise StoreError(self._readonly_message(f"its directory {str(directory)!r} is not writable"))

    def _readonly_message(self, why: str) -> str:
        return (f"results database {str(self.path)!r} is read-only ({why}); a sweep writes its results there: "
                f"make it writable, or pass a --db path on a writable disk")

    def _corrupt_message(self, exc: Exception) -> str:
        return (f"results database {str(self.path)!r} is corrupt or unreadable ({exc}); "
                f"move it aside and rerun the sweep with a new --db (finished runs in it cannot be trusted)")

    def _setup(self) -> None:
        c = self.conn
        c.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        check = c.execute("PRAGMA quick_check").fetchone()
        if not check or check[0] != "ok":
            raise StoreError(self._corrupt_message(check[0] if check else "quick_check failed"))
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        app_id = c.execute("PRAGMA application_id").fetchone()[0]
        user_tables = {t for t in tables if not t.startswith("sqlite_")}
        if not user_tables:
            if self.readonly:
                raise StoreError(f"{str(self.path)!r} is an empty database, not a plantseek results database")
            self._retry(self._create)
            self._has_masks = True
            return
        if app_id != APPLICATION_ID or "runs" not in tables or "schema_version" not in tables:
            raise StoreError(
                f"{str(self.path)!r} is an SQLite database but not a plantseek results database "
                f"(tables: {', '.join(sorted(user_tables))}); use a new --db path"
            )
        row = c.execute("SELECT max(version) FROM schema_version").fetchone()
        version = row[0] if row else None
        if version is None:
            raise StoreError(f"{str(self.path)!r}: the schema version table is empty; the file is damaged")
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{str(self.path)!r} was written by a newer plantseek (schema {version}; this one reads up to "
                f"{SCHEMA_VERSION}); upgrade plantseek"
            )
        if not self.readonly:
            self._retry(lambda: c.execute(f"PRAGMA journal_mode = {self.journal_mode}"))
            if version < 2:
                self._retry(self._migrate_keys)
            if version < 3:
                self._retry(self._migrate_masks)
            if "claims" not in tables:
                self._retry(lambda: c.execute(_claims_schema()))
        self._has_masks = "masks" in {r[1] for r in c.execute("PRAGMA table_info(runs)")}

    def _migrate_keys(self) -> None:
        """Schema 1 -> 2: re-key every run whose stored configuration is a `plantseek.spec` configuration.

        An option the record does not mention takes the value it had before the option existed (e.g.
        ``rescale="none"``), and the stored configuration is completed with it, so the record is found by the
        sweep that asks for what it ran. When several records map to one key (the old keys held the package
        version), the finished one (then the latest) takes it; the others keep their old keys. Records that
        are not spec configurations (the image experiment's) keep theirs."""
        from .spec import RunSpec, run_key

        c = self.conn
        with self._transaction():
            if c.execute("SELECT max(version) FROM schema_version").fetchone()[0] >= 2:
                return  # another process migrated it first
            rows = c.execute("SELECT key, config, status, finished_at FROM runs").fetchall()
            winners: dict[str, tuple] = {}
            for key, config, status, finished in rows:
                try:
                    flat = json.loads(config)
                    new = run_key(flat, legacy=True)
                    full = RunSpec.from_flat({**_legacy_values(flat), **flat}).flat()
                except (TypeError, ValueError):
                    continue
                rank = (status == "ok", finished or 0.0)
                if new not in winners or rank > winners[new][0]:
                    winners[new] = (rank, key, full)
            taken = {r[0] for r in rows}
            for new, (_, old, full) in winners.items():
                if new != old and new in taken:
                    continue  # a record already holds the new key
                c.execute("UPDATE runs SET key = ?, config = ? WHERE key = ?",
                          (new, json.dumps(full, sort_keys=True), old))
            c.execute("INSERT INTO schema_version (version) VALUES (2)")

    def _migrate_masks(self) -> None:
        """Schema 2 -> 3: add the (empty) `masks` column; every stored row keeps what it had."""
        c = self.conn
        with self._transaction():
            if c.execute("SELECT max(version) FROM schema_version").fetchone()[0] >= 3:
                return  # another process migrated it first
            if "masks" not in {r[1] for r in c.execute("PRAGMA table_info(runs)")}:
                c.execute("ALTER TABLE runs ADD COLUMN masks BLOB")
            c.execute("INSERT INTO schema_version (version) VALUES (3)")

    def _create(self) -> None:
        c = self.conn
        c.execute(f"PRAGMA journal_mode = {self.journal_mode}")
        with self._transaction():
            c.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    c.execute(statement)
            if c.execute("SELECT count(*) FROM schema_version").fetchone()[0] == 0:
                c.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))

    # -- transactions ---------------------------------------------------------------------------------------

    def _retry(self, fn):
        """Run fn, retrying with jittered backoff while another writer holds the lock."""
        delay = 0.05
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                msg = str(exc).lower()
                if "readonly" in msg or "read-only" in msg:  # a read-only file, directory or mount
                    raise StoreError(self._readonly_message(f"SQLite: {exc}")) from None
                if ("locked" not in msg and "busy" not in msg) or attempt == self.retries:
                    raise
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    def close(self) -> None:
        try:
            self.conn.close()
        except Exception:
            pass

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------------------

    def put(self, records: RunRecord | Sequence[RunRecord]) -> None:
        """Write finished runs in one transaction. A successful run replaces a failed one with the same key;
        a failure never replaces a success."""
        if isinstance(records, RunRecord):
            records = [records]
        rows = []
        for r in records:
            if r.status not in STATUSES:
                raise ValueError(f"run status must be one of {STATUSES}, not {r.status!r}")
            if r.masks is not None and not isinstance(r.masks, (bytes, bytearray, memoryview)):
                raise ValueError(f"run {r.key}: masks must be the bytes of plantseek.mask_io.pack, "
                                 f"not {type(r.masks).__name__}")
            rows.append((
                r.key,
                json.dumps(_jsonable(r.config), sort_keys=True),
                None if r.metrics is None else json.dumps(_jsonable(r.metrics), sort_keys=True),
                r.status, r.error, r.started_at, r.finished_at, r.duration_s, r.batch_runs, r.version,
                r.device, r.host or socket.gethostname(), r.sweep,
                None if r.masks is None or r.status != "ok" else sqlite3.Binary(bytes(r.masks)),
            ))
        if not rows:
            return

        def write():
            with self._transaction() as c:
                c.executemany(
                    """
                    INSERT INTO runs (key, config, metrics, status, error, started_at, finished_at, duration_s,
                                      batch_runs, version, device, host, sweep, masks)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT (key) DO UPDATE SET
                        config = excluded.config, metrics = excluded.metrics, status = excluded.status,
                        error = excluded.error, started_at = excluded.started_at,
                        finished_at = excluded.finished_at, duration_s = excluded.duration_s,
                        batch_runs = excluded.batch_runs, version = excluded.version,
                        device = excluded.device, host = excluded.host, sweep = excluded.sweep,
                        masks = excluded.masks, attempts = runs.attempts + 1
                    WHERE runs.status = 'failed' OR excluded.status = 'ok'
                    """,
                    rows,
                )
                if self._has_claims(c):  # a stored run is no longer anyone's to run
                    c.executemany("DELETE FROM claims WHERE key = ?", [(row[0],) for row in rows])

        self._retry(write)

    # -- claims: several sweep processes on one database ------------------------------------------------

    @staticmethod
    def _has_claims(c: sqlite3.Connection) -> bool:
        return c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'claims'").fetchone() is not None

    def _claim_is_live(self, pid: int, host: str, token: str, expires_at: float, now: float) -> bool:
        """Whether a claim held by someone else still counts: not expired, and, when it was taken on this
        host, its process still exists (a killed sweep's runs are free at once on its own machine, and after
        the lease on another)."""
        if token == self.token:
            return False  # ours: renew it
        if expires_at <= now:
            return False
        if host == self.host and pid != self.pid and not _pid_alive(pid):
            return False
        return True

    def claim(self, keys: Sequence[str], lease_s: float = DEFAULT_LEASE_S, *,
              retry_failed_before: float | None = None) -> list[str]:
        """Claim the runs `keys` for this store (its pid, host and token) for `lease_s` seconds, in one
        ``BEGIN IMMEDIATE`` transaction; returns the claimed keys, in the order given.

        A key is claimed when it has no result row (or a failed one that finished before
        ``retry_failed_before``, for ``--retry-failed``) and no live claim by another process: an expired
        claim, or one from a process on this host that no longer exists, is taken over. Keys this store
        holds already are renewed. `put` drops the claim of each run it stores; `release` drops the rest."""
        self._check_claims_writable()
        keys = list(dict.fromkeys(str(k) for k in keys))
        if not keys:
            return []

        def write():
            now = time.time()
            got = []
            with self._transaction() as c:
                for key in keys:
                    row = c.execute("SELECT status, finished_at FROM runs WHERE key = ?", (key,)).fetchone()
                    if row is not None:
                        status, finished = row
                        if not (status == "failed" and retry_failed_before is not None
                                and (finished or 0.0) < retry_failed_before):
                            continue
                    held = c.execute("SELECT pid, host, token, expires_at FROM claims WHERE key = ?",
                                     (key,)).fetchone()
                    if held is not None and self._claim_is_live(*held, now):
                        continue
                    c.execute("INSERT OR REPLACE INTO claims (key, pid, host, token, claimed_at, expires_at) "
                              "VALUES (?, ?, ?, ?, ?, ?)", (key, self.pid, self.host, self.token, now, now + lease_s))
                    got.append(key)
            return got

        return self._retry(write)

    def renew(self, lease_s: float = DEFAULT_LEASE_S) -> int:
        """Extend every claim this store holds to `lease_s` seconds from now; returns how many."""
        self._check_claims_writable()

        def write():
            with self._transaction() as c:
                return c.execute("UPDATE claims SET expires_at = ? WHERE token = ?",
                                 (time.time() + lease_s, self.token)).rowcount

        return self._retry(write)

    def release(self, keys: Sequence[str] | None = None) -> int:
        """Drop this store's claims on `keys` (all of them with None), so another process may run them;
        returns how many were dropped. Claims held by others are left alone."""
        if self.readonly:
            return 0
        keys = None if keys is None else list(keys)

        def write():
            with self._transaction() as c:
                if not self._has_claims(c):
                    return 0
                if keys is None:
                    return c.execute("DELETE FROM claims WHERE token = ?", (self.token,)).rowcount
                return sum(c.execute("DELETE FROM claims WHERE key = ? AND token = ?", (k, self.token)).rowcount
                           for k in keys)

        return self._retry(write)

    @contextmanager
    def keep_alive(self, lease_s: float = DEFAULT_LEASE_S, every: float | None = None) -> Iterator[None]:
        """While the block runs, a background thread renews this store's claims (`renew`) every ``every``
        seconds (a third of the lease by default) on its own connection, so a batch that takes longer than
        the lease keeps its runs; a killed process stops renewing and its claims expire."""
        import threading

        if self.readonly:
            yield
            return
        every = max(0.05, lease_s / 3 if every is None else float(every))
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(every):
                try:
                    con = sqlite3.connect(str(self.path), timeout=self.timeout, isolation_level=None)
                    try:
                        con.execute("UPDATE claims SET expires_at = ? WHERE token = ?",
                                    (time.time() + lease_s, self.token))
                    finally:
                        con.close()
                except sqlite3.Error:  # busy or gone: the next beat tries again, the lease has slack
                    pass

        thread = threading.Thread(target=beat, name="plantseek-claims", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def claims(self) -> list[dict[str, Any]]:
        """Every claim in the database (whoever holds it), with ``live`` as this store sees it."""
        if not self._has_claims(self.conn):
            return []
        now = time.time()
        rows = self._read("SELECT key, pid, host, token, claimed_at, expires_at FROM claims ORDER BY claimed_at")
        return [{"key": k, "pid": pid, "host": host, "token": token, "claimed_at": at, "expires_at": exp,
                 "mine": token == self.token, "live": token == self.token or self._claim_is_live(pid, host, token, exp, now)}
                for k, pid, host, token, at, exp in rows]

    def held_elsewhere(self, keys: Iterable[str]) -> set[str]:
        """Those of `keys` that another live process has claimed."""
        wanted = set(keys)
        return {c["key"] for c in self.claims() if c["key"] in wanted and c["live"] and not c["mine"]}

    def _check_claims_writable(self) -> None:
        if self.readonly:
            raise StoreError(f"results database {str(self.path)!r} is open read-only: it cannot claim runs")

    def record_sweep(self, name: str, *, path: str | None, source: str, n_runs: int, version: str) -> None:
        def write():
            with self._transaction() as c:
                c.execute(
                    "INSERT INTO sweeps (name, path, source, n_runs, started_at, version, host) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, path, source, n_runs, time.time(), version, socket.gethostname()),
                )

        self._retry(write)

    # -- reading --------------------------------------------------------------------------------------------

    def keys(self, status: str | None = None) -> set[str]:
        q = "SELECT key FROM runs" + (" WHERE status = ?" if status else "")
        return {r[0] for r in self._read(q, (status,) if status else ())}

    def _read(self, query: str, params: tuple = ()) -> list[tuple]:
        try:
            return self._retry(lambda: self.conn.execute(query, params).fetchall())
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc).lower():
                raise
            raise StoreError(self._corrupt_message(exc)) from None

    def count(self) -> dict[str, int]:
        counts = {s: 0 for s in STATUSES}
        for status, n in self._read("SELECT status, count(*) FROM runs GROUP BY status"):
            counts[status] = n
        return counts

    def records(self) -> list[dict[str, Any]]:
        """All rows, with config and metrics decoded (metric names of earlier versions under today's,
        `plantseek.metric_schema.upgrade`), in insertion order; ``mask_bytes`` is the size of the stored mask
        (None without one), which `masks` reads."""
        from . import metric_schema as _schema

        rows = self._read(
            "SELECT key, config, metrics, status, error, started_at, finished_at, duration_s, batch_runs, "
            f"attempts, version, device, host, sweep, {self._mask_size} FROM runs ORDER BY rowid"
        )
        out = []
        for (key, config, metrics, status, error, started, finished, duration, batch, attempts, version,
             device, host, sweep, mask_bytes) in rows:
            out.append({
                "key": key, "config": json.loads(config),
                "metrics": _schema.upgrade(json.loads(metrics)) if metrics else {},
                "status": status, "error": error, "started_at": started, "finished_at": finished,
                "duration_s": duration, "batch_runs": batch, "attempts": attempts, "version": version,
                "device": device, "host": host, "sweep": sweep, "mask_bytes": mask_bytes,
            })
        return out

    @property
    def _mask_size(self) -> str:
        return "length(masks)" if self._has_masks else "NULL"

    def resolve_key(self, key: str) -> str:
        """The run key `key` names: the key itself, or the one key that starts with it."""
        key = str(key)
        if not key:
            raise StoreError("a run key must not be empty")
        found = [r[0] for r in self._read("SELECT key FROM runs WHERE substr(key, 1, ?) = ? ORDER BY rowid",
                                          (len(key), key))]
        if key in found:
            return key
        if not found:
            raise StoreError(f"no run in {str(self.path)!r} has a key starting with {key!r}")
        if len(found) > 1:
            raise StoreError(f"{len(found)} runs in {str(self.path)!r} have keys starting with {key!r} "
                             f"({', '.join(found[:4])}{', ...' if len(found) > 4 else ''}); give more of the key")
        return found[0]

    def masks(self, key: str) -> bytes | None:
        """The stored mask of run `key` (`plantseek.mask_io.unpack` decodes it); None when the run has none
        (a failed run, or one stored before schema 3). An unknown key is a `StoreError`."""
        rows = self._read(f"SELECT {'masks' if self._has_masks else 'NULL'} FROM runs WHERE key = ?", (key,))
        if not rows:
            raise StoreError(f"no run with key {key!r} in {str(self.path)!r}")
        return None if rows[0][0] is None else bytes(rows[0][0])

    def sweeps(self) -> list[dict[str, Any]]:
        rows = self._read("SELECT name, path, source, n_runs, started_at, version, host FROM sweeps ORDER BY id")
        return [dict(zip(("name", "path", "source", "n_runs", "started_at", "version", "host"), r)) for r in rows]

    def dataframe(self):
        return to_dataframe(self.records())


def _claims_schema() -> str:
    start = _SCHEMA.index(_CLAIMS_SCHEMA_START)
    return _SCHEMA[start:_SCHEMA.index(";", start)]


def _pid_alive(pid: int) -> bool:
    """Whether process `pid` exists on this machine (a zombie counts as alive until it is reaped)."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _legacy_values(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The values that options a record does not mention had before they existed (`plantseek.spec`)."""
    from .spec import fields

    return {k: f.metadata["legacy"] for k, f in fields() if k not in flat and "legacy" in f.metadata}


def open_store(path: str | os.PathLike, *, readonly: bool = False, create: bool = True) -> ResultStore:
    return ResultStore(path, readonly=readonly, create=create)


# ---------------------------------------------------------------------------------------------------------
# flat tables


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def to_dataframe(records: Iterable[Mapping[str, Any]]):
    """One row per run: configuration columns under the sweep's names, then flat metric columns in
    `plantseek.metric_schema` order (an undeclared metric whose name is also a configuration key gets the
    suffix ``_measured``), then status, error and bookkeeping (`metric_schema.BOOKKEEPING`). Lists (uneven
    widths, pruner options) become JSON."""
    import pandas as pd

    from . import metric_schema as _schema

    records = list(records)
    config_keys: dict[str, None] = {}
    for rec in records:
        config_keys.update(dict.fromkeys(rec["config"]))
    ordered = [k for k in CONFIG_COLUMNS if k in config_keys] + [k for k in config_keys if k not in CONFIG_COLUMNS]
    taken = set(ordered) | set(CONFIG_COLUMNS)
    bookkeeping = {k: ("run_" + k if k in taken else k) for k in _schema.BOOKKEEPING}
    taken |= set(bookkeeping.values())
    rows = []
    metric_keys: dict[str, None] = {}
    for rec in records:
        row = {k: _cell(v) for k, v in rec["config"].items()}
        for k, v in (rec.get("metrics") or {}).items():
            name = k + COLLISION_SUFFIX if k in taken else k
            metric_keys.setdefault(name, None)
            row[name] = _cell(v)
        for k, col in bookkeeping.items():
            row[col] = rec.get(k)
        rows.append(row)
    if not records:
        ordered = list(CONFIG_COLUMNS)
    metrics = _schema.order(metric_keys)
    columns = ordered + metrics + list(bookkeeping.values())
    df = pd.DataFrame(rows, columns=columns)
    for col in ("started_at", "finished_at"):
        df[bookkeeping[col]] = pd.to_datetime(df[bookkeeping[col]], unit="s", utc=True)
    return df


def _arrow_safe(df):
    """Parquet needs one type per column: columns mixing numbers and strings (density "ticket") become text."""
    df = df.copy()
    for col in df.columns:
        if df[col].dtype == object:
            kinds = {type(v) for v in df[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
            if len(kinds) > 1 and not kinds <= {int, float}:
                df[col] = df[col].map(lambda v: None if v is None else str(v))
    return df


def export(db: str | os.PathLike, out: str | os.PathLike, fmt: str | None = None) -> int:
    """Write one row per run to CSV or Parquet; returns the number of rows."""
    out = Path(out)
    if fmt is None:
        fmt = out.suffix.lstrip(".").lower() or "csv"
    if fmt not in ("csv", "parquet"):
        raise ValueError(f"unknown export format {fmt!r}; allowed: csv, parquet")
    with ResultStore(db, readonly=True) as store:
        df = store.dataframe()
    if out.parent and not out.parent.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        df.to_csv(out, index=False)
    else:
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ValueError("Parquet export needs pyarrow: pip install 'plantseek[parquet]'") from None
        _arrow_safe(df).to_parquet(out, index=False)
    return len(df)


def _performance_column(df) -> str | None:
    """The schema's performance metric of a flat table (`metric_schema.performance`) among columns with values."""
    from . import metric_schema as _schema

    return _schema.performance(c for c in df.columns if df[c].notna().any())


def summary_table(df):
    """Per task, protocol, pruner and requested density: runs, failures and the mean over seeds of each
    headline metric (`metric_schema.headline`) the table has (curve metrics, lists, never are); dynamic is
    named by its growth rule, SET or RigL (`plantseek.report.data.protocol_label`)."""
    import pandas as pd

    from . import metric_schema as _schema
    from .report.data import protocol_label

    if df.empty:
        return pd.DataFrame()
    keys = [k for k in ("task", "depth", "width", "protocol", "pruner", "pruner_options", "density")
            if k in df.columns]
    df = df.copy()
    if "protocol" in df:
        grow = df["grow"] if "grow" in df else [None] * len(df)
        df["protocol"] = [protocol_label(p, g) for p, g in zip(df["protocol"], grow)]
    for k in keys:
        df[k] = df[k].map(lambda v: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v).astype(str)
    df["ok"] = df["status"] == "ok"
    agg = {"runs": ("status", "size"), "failed": ("ok", lambda s: int((~s).sum()))}
    for col in _schema.headline(df.columns):
        if _schema.get(col).kind == "curve":
            continue
        df[col] = pd.to_numeric(df[col], errors="coerce")
        agg[col] = (col, "mean")
    table = df.groupby(keys, sort=True, dropna=False).agg(**agg)
    return table.reset_index()


def format_summary(db: str | os.PathLike, max_errors: int = 10) -> str:
    """The text `plantseek results` prints."""
    import pandas as pd

    with ResultStore(db, readonly=True) as store:
        df = store.dataframe()
        sweeps = store.sweeps()
    lines = [f"results database {db}: {len(df)} runs"]
    if df.empty:
        return lines[0] + " (empty)"
    counts = df["status"].value_counts().to_dict()
    lines[0] += f" ({counts.get('ok', 0)} ok, {counts.get('failed', 0)} failed)"
    if sweeps:
        names = list(dict.fromkeys(s["name"] for s in sweeps))
        lines.append("sweeps: " + ", ".join(names))
    table = summary_table(df)
    with pd.option_context("display.max_rows", 500, "display.max_columns", 50, "display.width", 200,
                           "display.float_format", lambda v: f"{v:.4g}"):
        lines.append(table.to_string(index=False))
    failed = df[df["status"] == "failed"]
    if len(failed):
        lines.append(f"\nfailed runs ({len(failed)}; rerun them with --retry-failed):")
        for _, row in failed.head(max_errors).iterrows():
            first = (row["error"] or "").strip().splitlines()
            msg = first[0] if first else "(no message)"
            lines.append(f"  {row['task']} {row['pruner']} {row['protocol']} density={row['density']} "
                         f"seed={row['seed']}: {msg}")
        if len(failed) > max_errors:
            lines.append(f"  ... and {len(failed) - max_errors} more")
    return "\n".join(lines)
