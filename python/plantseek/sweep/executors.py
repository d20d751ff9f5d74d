"""Executors run the pending runs of a sweep and hand each finished group to a callback (the store).

- ``local`` (default): groups runs that share task, shape, protocol, epochs, dtype and training options,
  and trains each group (in chunks of at most ``max_batch`` runs) with ``plantseek.seek_batch``, one
  batched computation per chunk.
- ``dask``: sends the same chunks to the workers of a running Dask cluster (``scheduler="tcp://..."``).
- ``dask-local``: starts a ``distributed.LocalCluster`` with ``workers`` worker processes and does the same.

The chunks are the same whatever the executor, so results are identical; only the client (the process that
called :func:`plantseek.sweep.run_sweep`) writes the database.

A run that raises is recorded as failed with its error and does not stop the sweep. If a whole chunk raises,
its runs are retried one by one, so that only the bad run fails.
"""
from __future__ import annotations

import math
import os
import socket
import time
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from .config import RunConfig, package_version
from ..store import RunRecord

__all__ = [
    "Executor",
    "LocalExecutor",
    "DaskExecutor",
    "register",
    "get",
    "available",
    "make_chunks",
    "run_chunk",
    "DEFAULT_MAX_BATCH",
]

DEFAULT_MAX_BATCH = 64
BatchFn = Callable[[list[dict]], list]
SingleFn = Callable[..., Any]
OnRecords = Callable[[list[RunRecord]], None]

_EXECUTORS: dict[str, type] = {}


def register(name: str):
    """Class decorator adding an executor to the registry."""
    def wrap(cls):
        _EXECUTORS[name] = cls
        cls.name = name
        return cls
    return wrap


def available() -> list[str]:
    return sorted(_EXECUTORS)


def get(name: str, **options) -> "Executor":
    if name not in _EXECUTORS:
        raise ValueError(f"unknown executor {name!r}; allowed: {', '.join(available())}")
    return _EXECUTORS[name](**options)


# ---------------------------------------------------------------------------------------------------------
# chunks and running them (this part runs in the client for `local`, in the workers for Dask)


def make_chunks(runs: Sequence[RunConfig], max_batch: int | None = None) -> list[list[RunConfig]]:
    """Group runs that can be trained together, in first-appearance order, and split each group into
    near-equal chunks of at most ``max_batch`` runs (deterministic: the same runs give the same chunks)."""
    max_batch = DEFAULT_MAX_BATCH if max_batch is None else int(max_batch)
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, not {max_batch}")
    groups: dict[str, list[RunConfig]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    chunks = []
    for members in groups.values():
        n_chunks = math.ceil(len(members) / max_batch)
        size = math.ceil(len(members) / n_chunks)
        chunks.extend(members[i:i + size] for i in range(0, len(members), size))
    return chunks


def _seek_module():
    import importlib

    try:
        return importlib.import_module("plantseek.seek")
    except ImportError as exc:
        raise RuntimeError(f"plantseek's seeking code cannot be imported here: {exc}") from None


def _default_batch_fn() -> BatchFn | None:
    return getattr(_seek_module(), "seek_batch", None)


def _default_single_fn() -> SingleFn:
    return _seek_module().seek


def _metrics_of(result: Any) -> dict:
    metrics = result if isinstance(result, Mapping) else getattr(result, "metrics", None)
    if not isinstance(metrics, Mapping):
        raise TypeError(f"a run returned {type(result).__name__} without a flat `metrics` dict")
    return dict(metrics)


def _error_text(exc: BaseException) -> str:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__}: {exc}\n\n{tb}"


def run_chunk(
    configs: Sequence[Mapping[str, Any]],
    keys: Sequence[str],
    *,
    device: str | None = None,
    batch_fn: BatchFn | None = None,
    single_fn: SingleFn | None = None,
    imports: Sequence[str] = (),
    torch_threads: int | None = None,
    version: str | None = None,
    sweep: str | None = None,
    progress: bool | None = None,
) -> list[RunRecord]:
    """Train one chunk of runs together; never raises for a failing run (it comes back as ``failed``).

    Plain data in, plain data out, so that it can run on a Dask worker."""
    import importlib

    for m in imports:
        importlib.import_module(m)
    if torch_threads:
        try:
            import torch

            torch.set_num_threads(int(torch_threads))
        except Exception:
            pass
    version = version or package_version()
    host = socket.gethostname()
    runs = [RunConfig.from_dict(c) for c in configs]
    records: list[RunRecord | None] = [None] * len(runs)

    def record(i: int, status: str, metrics=None, error=None, started=0.0, finished=0.0, batch=1) -> None:
        records[i] = RunRecord(
            key=keys[i], config=dict(configs[i]), status=status, metrics=metrics, error=error,
            started_at=started, finished_at=finished, duration_s=finished - started, batch_runs=batch,
            version=version, device=device, host=host, sweep=sweep,
        )

    # build the seek arguments; a run whose arguments cannot be built fails alone
    kwargs: list[dict | None] = []
    from .config import seek_defaults

    pass_progress = progress is not None and batch_fn is None and single_fn is None \
        and "progress" in (seek_defaults() or {})
    for i, run in enumerate(runs):
        try:
            kwargs.append(run.seek_kwargs(device))
            if pass_progress:
                kwargs[-1]["progress"] = bool(progress)
        except Exception as exc:  # e.g. bad pruner options
            now = time.time()
            record(i, "failed", error=_error_text(exc), started=now, finished=now)
            kwargs.append(None)
    todo = [i for i, kw in enumerate(kwargs) if kw is not None]

    if batch_fn is None and single_fn is None:
        batch_fn = _default_batch_fn()
    if single_fn is None:
        single_fn = _default_single_fn() if batch_fn is None else (lambda **kw: batch_fn([kw])[0])

    batched_ok = False
    if batch_fn is not None and len(todo) > 1:
        started = time.time()
        try:
            results = list(batch_fn([kwargs[i] for i in todo]))
            if len(results) != len(todo):
                raise RuntimeError(f"seek_batch returned {len(results)} results for {len(todo)} runs")
            finished = time.time()
            parsed = []
            for res in results:
                if isinstance(res, BaseException):
                    parsed.append(res)
                else:
                    parsed.append(_metrics_of(res))
            for i, res in zip(todo, parsed):
                if isinstance(res, BaseException):
                    record(i, "failed", error=_error_text(res), started=started, finished=finished,
                           batch=len(todo))
                else:
                    record(i, "ok", metrics=res, started=started, finished=finished, batch=len(todo))
            batched_ok = True
        except Exception:
            batched_ok = False  # fall back to one by one: only the bad run fails
    if not batched_ok:
        for i in todo:
            started = time.time()
            try:
                metrics = _metrics_of(single_fn(**kwargs[i]))
                record(i, "ok", metrics=metrics, started=started, finished=time.time())
            except Exception as exc:
                record(i, "failed", error=_error_text(exc), started=started, finished=time.time())
    return [r for r in records if r is not None]


# ---------------------------------------------------------------------------------------------------------
# executors


@dataclass
class RunPlan:
    """What an executor needs besides the runs."""

    device: str | None = None
    max_batch: int | None = None
    batch_fn: BatchFn | None = None
    single_fn: SingleFn | None = None
    imports: Sequence[str] = ()
    progress: bool = True
    sweep: str | None = None
    version: str | None = None


class Executor:
    """Base class: ``run(runs, keys, on_records, plan)`` calls ``on_records`` once per finished chunk."""

    name = "executor"

    def run(self, runs: Sequence[RunConfig], keys: Sequence[str], on_records: OnRecords, plan: RunPlan) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


def _progress(total: int, plan: RunPlan, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="run", desc=desc, disable=not plan.progress, dynamic_ncols=True,
                smoothing=0.1, mininterval=0.5)


def _chunked(runs: Sequence[RunConfig], keys: Sequence[str], max_batch: int | None):
    key_of = {id(r): k for r, k in zip(runs, keys)}
    for chunk in make_chunks(runs, max_batch):
        yield chunk, [key_of[id(r)] for r in chunk]


@register("local")
class LocalExecutor(Executor):
    """Runs chunks one after the other in this process."""

    def __init__(self, **_ignored) -> None:
        pass

    def run(self, runs, keys, on_records, plan):
        failed = 0
        with _progress(len(runs), plan, plan.sweep or "sweep") as bar:
            for chunk, chunk_keys in _chunked(runs, keys, plan.max_batch):
                records = run_chunk(
                    [r.to_dict() for r in chunk], chunk_keys, device=plan.device, batch_fn=plan.batch_fn,
                    single_fn=plan.single_fn, imports=(), version=plan.version, sweep=plan.sweep,
                    progress=plan.progress,
                )
                on_records(records)
                failed += sum(r.status == "failed" for r in records)
                bar.update(len(records))
                if failed:
                    bar.set_postfix(failed=failed, refresh=False)


@register("dask")
class DaskExecutor(Executor):
    """Sends chunks to a Dask cluster: a running one (``scheduler``) or a LocalCluster it starts
    (``workers``, used by ``dask-local``). The client alone writes the database."""

    def __init__(self, scheduler: str | None = None, workers: int | None = None, local: bool = False,
                 processes: bool = True, threads_per_worker: int = 1, **_ignored) -> None:
        if not local and not scheduler:
            raise ValueError("the dask executor needs --scheduler tcp://host:port (or use --executor dask-local)")
        self.scheduler = scheduler
        self.local = local
        self.workers = workers
        self.processes = processes
        self.threads_per_worker = threads_per_worker

    def describe(self) -> str:
        if self.local:
            return f"dask-local ({self.workers} workers)"
        return f"dask ({self.scheduler})"

    def _client(self):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ValueError("the Dask executors need dask.distributed: pip install 'plantseek[distributed]'") from None
        if self.local:
            n = self.workers or max(1, (os.cpu_count() or 1) // 2)
            cluster = LocalCluster(n_workers=n, threads_per_worker=self.threads_per_worker,
                                   processes=self.processes, dashboard_address=None)
            self.workers = n
            return Client(cluster), cluster
        return Client(self.scheduler), None

    def run(self, runs, keys, on_records, plan):
        from distributed import as_completed

        client, cluster = self._client()
        torch_threads = None
        if self.local and self.processes:
            torch_threads = max(1, (os.cpu_count() or 1) // max(1, self.workers or 1))
        futures = {}
        try:
            for n, (chunk, chunk_keys) in enumerate(_chunked(runs, keys, plan.max_batch)):
                configs = [r.to_dict() for r in chunk]
                fut = client.submit(
                    run_chunk, configs, chunk_keys, device=plan.device, batch_fn=plan.batch_fn,
                    single_fn=plan.single_fn, imports=list(plan.imports), torch_threads=torch_threads,
                    version=plan.version, sweep=plan.sweep, progress=False, pure=False,
                    key=f"plantseek-chunk-{n}-{chunk_keys[0][:12]}",
                )
                futures[fut] = (configs, chunk_keys)
            failed = 0
            with _progress(len(runs), plan, f"{plan.sweep or 'sweep'} [{self.describe()}]") as bar:
                for fut in as_completed(list(futures)):
                    configs, chunk_keys = futures.pop(fut)
                    try:
                        records = fut.result()
                    except Exception as exc:  # the worker died or the task could not run
                        now = time.time()
                        text = _error_text(exc)
                        records = [RunRecord(key=k, config=c, status="failed", error=text, started_at=now,
                                             finished_at=now, duration_s=0.0, version=plan.version or "",
                                             device=plan.device, sweep=plan.sweep)
                                   for c, k in zip(configs, chunk_keys)]
                    on_records(records)
                    failed += sum(r.status == "failed" for r in records)
                    bar.update(len(records))
                    if failed:
                        bar.set_postfix(failed=failed, refresh=False)
        finally:
            if futures:
                client.cancel(list(futures))
            client.close()
            if cluster is not None:
                cluster.close()


@register("dask-local")
class DaskLocalExecutor(DaskExecutor):
    def __init__(self, workers: int | None = None, processes: bool = True, threads_per_worker: int = 1,
                 **_ignored) -> None:
        super().__init__(scheduler=None, workers=workers, local=True, processes=processes,
                         threads_per_worker=threads_per_worker)
