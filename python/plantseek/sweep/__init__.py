"""Sweeps: a TOML grid of runs, executed (batched, locally or on Dask) into a resumable results database.

>>> from plantseek.sweep import run_sweep
>>> run_sweep("examples/issue_example.toml", db="results.db")          # doctest: +SKIP

Rerunning the same sweep skips every run already in the database (finished or failed; ``retry_failed=True``
reruns the failed ones), so an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

from .config import (RunConfig, Sweep, SweepConfigError, load_sweep, package_version, parse_sweep,
                     run_key)
from .executors import DEFAULT_MAX_BATCH, RunPlan, available as available_executors, check_runs_fit
from .executors import get as get_executor

__all__ = [
    "RunConfig", "Sweep", "SweepConfigError", "SweepReport", "load_sweep", "parse_sweep", "run_key",
    "run_sweep", "plan_sweep", "check_lease", "available_executors", "get_executor", "DEFAULT_MAX_BATCH",
]


@dataclass
class SweepReport:
    """What a sweep did."""

    total: int
    skipped: int
    ran: int = 0
    ok: int = 0
    failed: int = 0
    failed_keys: list[str] = field(default_factory=list)
    interrupted: bool = False
    elsewhere: int = 0  # runs left to another sweep process that had claimed them (a shared database)

    def __str__(self) -> str:
        s = f"{self.total} runs in the sweep: {self.skipped} already in the database, {self.ran} run now"
        s += f" ({self.ok} ok, {self.failed} failed)"
        if self.elsewhere:
            s += f", {self.elsewhere} run by another sweep process"
        if self.interrupted:
            s += "; interrupted: rerun the same command to resume"
        return s


def check_lease(value) -> float:
    """A claim lease in seconds: a finite number of at least `MIN_LEASE_S` (a shorter one would expire
    between two renewals of a busy process)."""
    import math

    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"lease must be a finite number of seconds, not {value!r}")
    if value < MIN_LEASE_S:
        raise ValueError(f"lease must be at least {MIN_LEASE_S:g} seconds, not {value!r}")
    return float(value)


MIN_LEASE_S = 1.0


def plan_sweep(sweep: Sweep, store, retry_failed: bool = False) -> tuple[list[RunConfig], list[str], int]:
    """The runs still to do: those whose key is not in the store (failed ones too with ``retry_failed``).

    Runs that another sweep process has claimed are still listed: `run_sweep` claims each batch right before
    running it (`ResultStore.claim`) and skips what another live process holds then."""
    keys = [r.key for r in sweep.runs]
    done = store.keys(status="ok")
    if not retry_failed:
        done |= store.keys(status="failed")
    pending = [(r, k) for r, k in zip(sweep.runs, keys) if k not in done]
    return [r for r, _ in pending], [k for _, k in pending], len(sweep.runs) - len(pending)


def run_sweep(
    sweep: Sweep | str | os.PathLike,
    db: str | os.PathLike,
    *,
    executor: str = "local",
    device: str | None = None,
    retry_failed: bool = False,
    max_batch: int | None = None,
    progress: bool = True,
    batch_fn=None,
    single_fn=None,
    log=None,
    lease_s: float | None = None,
    **executor_options,
) -> SweepReport:
    """Run every run of a sweep that is not yet in the results database ``db``.

    ``device`` overrides the sweep file's ``device``. ``batch_fn(list_of_kwargs) -> results`` and
    ``single_fn(**kwargs) -> result`` default to ``plantseek.seek_batch`` and ``plantseek.seek``; tests
    inject fakes. Executor options: ``scheduler`` (dask), ``workers`` and ``processes`` (dask-local).

    Several sweep processes (on one machine or many) may share ``db``: each claims the runs of a batch right
    before running it (`ResultStore.claim`, a lease of ``lease_s`` seconds, renewed in the background while the
    sweep runs), skips runs another live process holds, and releases what it did not finish when it stops;
    a killed process's claims are taken over once its lease expires (at once on its own machine).
    """
    from ..store import DEFAULT_LEASE_S, ResultStore

    lease_s = DEFAULT_LEASE_S if lease_s is None else check_lease(lease_s)
    started = time.time()

    if log is None:
        def log(msg: str) -> None:
            print(msg, file=sys.stderr, flush=True)
    if not isinstance(sweep, Sweep):
        sweep = load_sweep(sweep)
    ex = get_executor(executor, **executor_options)
    device = device or sweep.device
    if device is not None and executor in ("local", "dask-local", "dask-cuda"):
        # a bad device is one clear error up front, not a failed run per run (Dask workers check their own)
        try:
            from ..device import resolve_device
        except ImportError:  # pragma: no cover
            resolve_device = None
        if resolve_device is not None:
            resolve_device(device)
    version = package_version()
    with ResultStore(db) as store:
        runs, keys, skipped = plan_sweep(sweep, store, retry_failed=retry_failed)
        if executor in ("local", "dask-local", "dask-cuda"):  # remote Dask workers refuse runs themselves
            check_runs_fit(runs, device, name=f"sweep {sweep.name!r}")
        store.record_sweep(sweep.name, path=sweep.path, source=sweep.source, n_runs=len(sweep.runs),
                           version=version)
        report = SweepReport(total=len(sweep.runs), skipped=skipped)
        held = store.held_elsewhere(keys)
        log(f"sweep {sweep.name!r}: {len(sweep.runs)} runs, {skipped} already in {db}, {len(runs)} to run "
            f"with {ex.describe()}" + (f" ({len(held)} of them claimed now by another sweep process)" if held else ""))
        for note in sweep.notes:
            log(f"note: {note}")
        if not runs:
            return report

        def on_records(records) -> None:
            store.put(records)
            report.ran += len(records)
            for r in records:
                if r.status == "ok":
                    report.ok += 1
                else:
                    report.failed += 1
                    report.failed_keys.append(r.key)

        def claim(batch_keys):
            got = store.claim(batch_keys, lease_s, retry_failed_before=started if retry_failed else None)
            report.elsewhere += len(batch_keys) - len(got)
            return got

        plan = RunPlan(device=device, max_batch=max_batch, batch_fn=batch_fn, single_fn=single_fn,
                       imports=list(sweep.imports), progress=progress, sweep=sweep.name, version=version,
                       log=log, claim=claim)
        try:
            with store.keep_alive(lease_s):
                ex.run(runs, keys, on_records, plan)
        except KeyboardInterrupt:
            report.interrupted = True
            log(f"interrupted after {report.ran} of {len(runs)} runs; finished runs are saved in {db}")
            raise
        finally:  # what this process claimed and did not finish is free for another one
            try:
                store.release()
            except Exception:  # noqa: BLE001 - a failed release only delays the others until the lease ends
                pass
        if report.elsewhere:
            log(f"{report.elsewhere} runs were claimed by another sweep process sharing {db}")
    return report
