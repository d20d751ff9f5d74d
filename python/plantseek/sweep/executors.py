"""Executors run the pending runs of a sweep and hand each finished group to a callback (the store).

- ``local`` (default): groups runs that share task, shape, protocol, epochs, dtype and training options,
  and trains each group (in chunks of at most ``max_batch`` runs) with ``plantseek.seek_batch``, one
  batched computation per chunk.
- ``dask``: sends chunks to the workers of a running Dask cluster (``scheduler="tcp://..."``): the same
  groups, cut into at least four chunks per worker thread so that every worker has work; each worker streams
  every finished batch back at once (a `distributed.Queue`), so a finished run reaches the database within
  about a second (``STREAM_POLL_S``) of finishing, whatever its chunk still has to do.
- ``dask-local``: starts a ``distributed.LocalCluster`` with ``workers`` worker processes and does the same;
  with a CUDA device, one worker process per visible GPU, each pinned to its GPU (``CUDA_VISIBLE_DEVICES``).
- ``dask-cuda``: ``dask_cuda.LocalCUDACluster`` (one worker per GPU), when dask-cuda is installed.

Within a chunk, `run_chunk` trains as many runs together as fit in the free memory of the device it runs on
(`plantseek.memory`) and halves the batch on an out-of-memory error.

A run's metrics do not depend on which runs share its batch (tests/test_seek.py, test_batch_equals_one_by_one_float64), so every executor gives
the same results; only the client (the process that called :func:`plantseek.sweep.run_sweep`) writes the
database, so a client killed with ``kill -9`` loses at most the runs in flight (tests/test_sweep_kill.py).

A run that raises is recorded as failed with its error and does not stop the sweep. If a whole chunk raises,
its runs are retried one by one, so that only the bad run fails.
"""
from __future__ import annotations

import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Sequence

from .config import RunConfig, package_version
from ..plugins import import_paths as _import_paths
from ..plugins import worker_imports as _modules_for_workers
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
    "MAX_BATCH_BY_PROTOCOL",
    "plan_batch_size",
    "plan_groups",
    "GroupPlan",
    "check_runs_fit",
    "gpu_cluster",
    "visible_gpus",
]

DEFAULT_MAX_BATCH = 64
# Protocols whose batches are mostly a pruner's batched search, not training, take larger chunks by default:
# edge-popup's per-step cost is mostly shared by a batch's runs (bench/bench_strong.py; bench/RESULTS.md,
# "Strong protocol"). Singleshot's training measured no faster in larger chunks.
MAX_BATCH_BY_PROTOCOL = {"strong": 384}
CHUNKS_PER_WORKER = 4  # Dask: at least this many chunks per worker thread (see `make_chunks`)
STREAM_POLL_S = 1.0  # Dask: how often the client takes the streamed records of finished batches
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


def make_chunks(runs: Sequence[RunConfig], max_batch: int | None = None,
                workers: int | None = None) -> list[list[RunConfig]]:
    """Group runs that can be trained together, in first-appearance order, and split each group, ordered by
    seed, into near-equal chunks of at most ``max_batch`` runs (deterministic: the same runs give the same chunks).
    By default ``max_batch`` is `DEFAULT_MAX_BATCH`, or the protocol's entry of `MAX_BATCH_BY_PROTOCOL`.

    ``workers`` (the Dask executors): chunks are also at most ``len(runs) / (CHUNKS_PER_WORKER * workers)``
    runs, so that every worker has work (one group of one shape no longer lands on one worker) and the last
    chunks to finish are short."""
    given = max_batch is not None
    if given and int(max_batch) < 1:
        raise ValueError(f"max_batch must be >= 1, not {max_batch}")
    per_worker = None
    if workers is not None and workers > 1:
        per_worker = max(1, math.ceil(len(runs) / (CHUNKS_PER_WORKER * int(workers))))
    groups: dict[str, list[RunConfig]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    chunks = []
    for members in groups.values():
        limit = int(max_batch) if given else MAX_BATCH_BY_PROTOCOL.get(members[0].protocol, DEFAULT_MAX_BATCH)
        if per_worker is not None:
            limit = min(limit, per_worker)
        # seed-major (stable): a chunk then holds every run of its seeds, so that the runs that train identically
        # (a seed's runs at density 1, whatever the pruner, its dense baseline, multishot's first round) meet in one
        # batch and train once (`plantseek.train.identical_networks`)
        members = sorted(members, key=lambda r: r.seed)
        n_chunks = math.ceil(len(members) / limit)
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


def _masks_of(result: Any) -> bytes | None:
    """The found mask of a run, packed for the store (`plantseek.mask_io.pack`); None when it has none."""
    masks = None if isinstance(result, Mapping) else getattr(result, "masks", None)
    if masks is None:
        return None
    from ..mask_io import pack

    return pack(masks)


def _outcome(result: Any) -> tuple[dict, bytes | None]:
    """(metrics, packed masks) of a run's result."""
    return _metrics_of(result), _masks_of(result)


def _error_text(exc: BaseException) -> str:
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return f"{type(exc).__name__}: {exc}\n\n{tb}"


def _default_oom_batch_fn() -> BatchFn | None:
    """``seek_batch`` that hands out-of-memory errors back (``on_oom="return"``) so that we can halve."""
    import functools
    import inspect

    fn = _default_batch_fn()
    if fn is not None and "on_oom" in inspect.signature(fn).parameters:
        return functools.partial(fn, on_oom="return")
    return fn


def _is_oom(exc: BaseException | None) -> bool:
    from ..memory import is_out_of_memory

    return is_out_of_memory(exc)


def plan_batch_size(kwargs: Sequence[Mapping[str, Any]], device: str | None = None,
                    limit: int | None = None) -> tuple[int, str]:
    """How many of these runs (one group) to train together: as many as fit in the device's free memory with
    a margin (`plantseek.memory`), at most ``limit``. Returns the size and a line for the log."""
    from .. import memory

    if not kwargs:
        return 1, "no runs"
    dev = device or kwargs[0].get("device") or "auto"
    try:
        from ..device import resolve_device

        dev = str(resolve_device(dev))
    except Exception:  # noqa: BLE001 - the runs will fail with the device error themselves
        return max(1, min(len(kwargs), limit or len(kwargs))), f"device {dev!r} not usable"
    try:
        per_run = max(memory.footprint_of(kw, dev).total for kw in kwargs)
    except Exception as exc:  # noqa: BLE001 - unknown task etc.: the runs fail on their own
        return max(1, min(len(kwargs), limit or len(kwargs))), f"no estimate ({type(exc).__name__})"
    free = memory.free_memory(dev)
    n = memory.group_size(per_run, free, limit=min(len(kwargs), limit or len(kwargs)))
    return n, _estimate_text(per_run, free, dev)


def _estimate_text(per_run: int, free: int, dev: str) -> str:
    return f"~{per_run / 2**20:.0f} MiB per run, {free / 2**30:.1f} GiB free on {dev}"


@dataclass(frozen=True)
class GroupPlan:
    """How the local executor would train one group of runs (what ``plantseek sweep --dry-run`` prints)."""

    task: str
    depth: int
    width: Any
    protocol: str
    runs: int
    per_batch: int
    batches: int
    per_run_bytes: int | None  # None: no estimate (the runs would fail on their own)
    free_bytes: int | None
    device: str

    @property
    def per_batch_bytes(self) -> int | None:
        return None if self.per_run_bytes is None else self.per_run_bytes * self.per_batch

    def __str__(self) -> str:
        from ..memory import format_bytes

        head = (f"{self.task} depth={self.depth} width={self.width} {self.protocol}: {self.runs} runs, "
                f"{self.per_batch} per batch")
        if self.per_run_bytes is None:
            return f"{head}, no memory estimate on {self.device}"
        return (f"{head}, ~{format_bytes(self.per_run_bytes)} per run, ~{format_bytes(self.per_batch_bytes)} "
                f"per batch, {format_bytes(self.free_bytes)} free on {self.device}")


def plan_groups(runs: Sequence[RunConfig], device: str | None = None,
                max_batch: int | None = None) -> list[GroupPlan]:
    """The groups of `runs` in the order they would train, each with its batch size and memory estimate, as
    the local executor decides them (`make_chunks`, then `plan_batch_size` unless ``max_batch`` is given);
    nothing is run or allocated."""
    from .. import memory
    from ..device import resolve_device

    groups: dict[str, list[RunConfig]] = {}
    for run in runs:
        groups.setdefault(run.group_key, []).append(run)
    dev = device or "auto"
    try:  # one device, one reading of its free memory, for every group
        dev = str(resolve_device(dev))
        free_now = memory.free_memory(dev)
    except Exception:  # noqa: BLE001 - an unusable device fails each run on its own
        free_now = None
    plans = []
    for members in groups.values():
        chunks = make_chunks(members, max_batch)
        chunk = max(chunks, key=len)
        per_run = free = None
        if free_now is not None:
            try:
                per_run = max(memory.footprint_of(r.seek_kwargs(device), dev).total for r in members)
                free = free_now
            except Exception:  # noqa: BLE001 - a run without estimate fails on its own
                pass
        if max_batch is not None or per_run is None:
            size = len(chunk)
        else:
            size = memory.group_size(per_run, free, limit=len(chunk))
            size = math.ceil(len(chunk) / math.ceil(len(chunk) / size))  # near-equal batches, as run_chunk
        first = members[0]
        plans.append(GroupPlan(task=first.task, depth=first.depth, width=first.width, protocol=first.protocol,
                               runs=len(members), per_batch=size,
                               batches=sum(math.ceil(len(c) / size) for c in chunks), per_run_bytes=per_run,
                               free_bytes=free, device=dev))
    return plans


def check_runs_fit(runs: Sequence[RunConfig], device: str | None = None, *, name: str = "sweep") -> None:
    """Refuse, before the first run starts, a sweep holding runs that cannot fit the device's free memory
    even one at a time (`plantseek.memory.check_fits`): raises `plantseek.memory.RunTooLargeError` naming
    how many, the first such run and its numbers. ``PLANTSEEK_SKIP_MEMORY_CHECK=1`` turns it off. A run whose
    arguments cannot be built or estimated is left to fail on its own."""
    from .. import memory

    if memory.memory_check_skipped():
        return
    too_large: list[tuple[RunConfig, BaseException]] = []
    for run in runs:
        try:
            kw = run.seek_kwargs(device)
            label = (f"run {run.task} depth={run.depth} width={run.width} {run.pruner} density={run.density} "
                     f"{run.protocol} seed={run.seed}")
            memory.check_fits(kw, device, what=label)
        except memory.RunTooLargeError as exc:
            too_large.append((run, exc))
        except Exception:  # noqa: BLE001 - bad options, unusable device: the run fails alone with its error
            continue
    if too_large:
        first = too_large[0][1]
        raise memory.RunTooLargeError(
            f"{name}: {len(too_large)} of {len(runs)} runs cannot fit the free memory even one at a time; "
            f"the first: {first}", estimate=getattr(first, "estimate", 0), free=getattr(first, "free", 0),
            device=getattr(first, "device", "cpu"))


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
    max_batch: int | None = None,
    memory_aware: bool = True,
    on_records: OnRecords | None = None,
    log: Callable[[str], None] | None = None,
) -> list[RunRecord]:
    """Train one chunk of runs together; never raises for a failing run (it comes back as ``failed``).

    Memory: unless ``max_batch`` is given, the chunk is trained in batches of as many runs as fit in the
    device's free memory (`plan_batch_size`); on an out-of-memory error (raised by the batch, or handed back
    for its runs) the batch size is halved and the runs that did not finish are retried; a single run that
    still does not fit is recorded as failed with its error. ``on_records`` (optional) receives the records
    of every finished batch at once, so that no finished run waits for the rest of the chunk; ``log`` gets
    the batch sizes chosen. Plain data in, plain data out, so that it can run on a Dask worker."""
    import importlib
    import logging

    if log is None:
        _logger = logging.getLogger("plantseek.sweep")
        log = _logger.info
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

    def record(i: int, status: str, outcome=(None, None), error=None, started=0.0, finished=0.0, batch=1) -> None:
        metrics, masks = outcome
        records[i] = RunRecord(
            key=keys[i], config=dict(configs[i]), status=status, metrics=metrics, error=error,
            started_at=started, finished_at=finished, duration_s=finished - started, batch_runs=batch,
            version=version, device=device, host=host, sweep=sweep, masks=masks,
        )

    def emit(idx: Sequence[int]) -> None:
        if on_records is not None:
            done = [records[i] for i in idx if records[i] is not None]
            if done:
                on_records(done)

    # build the seek arguments; a run whose arguments cannot be built fails alone
    kwargs: list[dict | None] = []
    injected = batch_fn is not None or single_fn is not None
    pass_progress = progress is not None and not injected
    for i, run in enumerate(runs):
        try:
            kwargs.append(run.seek_kwargs(device))
            if pass_progress:
                kwargs[-1]["progress"] = bool(progress)
        except Exception as exc:  # e.g. bad pruner options
            now = time.time()
            record(i, "failed", error=_error_text(exc), started=now, finished=now)
            kwargs.append(None)
    emit([i for i, kw in enumerate(kwargs) if kw is None])
    todo = [i for i, kw in enumerate(kwargs) if kw is not None]

    if not injected:
        batch_fn = _default_oom_batch_fn()
    if single_fn is None:  # through the batch function when there is one: an OOM comes back as such
        single_fn = _default_single_fn() if batch_fn is None else (lambda **kw: batch_fn([kw])[0])

    def run_single(i: int) -> None:
        started = time.time()
        try:
            res = single_fn(**kwargs[i])
            if isinstance(res, BaseException):
                raise res
            record(i, "ok", _outcome(res), started=started, finished=time.time())
        except Exception as exc:
            record(i, "failed", error=_error_text(exc), started=started, finished=time.time())

    def run_batch(part: list[int]) -> list[int]:
        """Run `part` together; record what finished; return the runs that ran out of memory."""
        if batch_fn is None or len(part) == 1:
            run_single(part[0])
            return []
        started = time.time()
        try:
            results = list(batch_fn([kwargs[i] for i in part]))
            if len(results) != len(part):
                raise RuntimeError(f"seek_batch returned {len(results)} results for {len(part)} runs")
            parsed = [res if isinstance(res, BaseException) else _outcome(res) for res in results]
        except Exception as exc:
            if _is_oom(exc):
                return list(part)
            for i in part:  # fall back to one by one: only the bad run fails
                run_single(i)
            return []
        finished = time.time()
        oom = []
        for i, res in zip(part, parsed):
            if isinstance(res, BaseException):
                if _is_oom(res):
                    oom.append(i)
                else:
                    record(i, "failed", error=_error_text(res), started=started, finished=finished, batch=len(part))
            else:
                record(i, "ok", res, started=started, finished=finished, batch=len(part))
        return oom

    if not todo:
        return [r for r in records if r is not None]
    label = f"{runs[todo[0]].task} depth={runs[todo[0]].depth} width={runs[todo[0]].width} {runs[todo[0]].protocol}"
    if max_batch is not None:
        size = max(1, min(int(max_batch), len(todo)))
        log(f"{label}: {len(todo)} runs, {size} per batch (--max-batch)")
    elif memory_aware and batch_fn is not None:
        size, why = plan_batch_size([kwargs[i] for i in todo], device)
        size = math.ceil(len(todo) / math.ceil(len(todo) / size))  # near-equal batches, none larger
        log(f"{label}: {len(todo)} runs, {size} per batch ({why})")
    else:
        size = len(todo)
    pending = list(todo)
    while pending:
        part, rest = pending[:size], pending[size:]
        oom = run_batch(part)
        if oom:
            from ..memory import release_cached

            release_cached()
            new = max(1, len(part) // 2)
            log(f"{label}: out of memory with {len(part)} runs together; halving to {new} and retrying "
                f"{len(oom)} runs")
            size = new
            emit([i for i in part if i not in oom])
            pending = oom + rest
            continue
        emit(part)
        pending = rest
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
    log: Callable[[str], None] | None = None  # batch sizes and out-of-memory retries (tqdm.write with a bar)
    # claim(keys) -> the keys this process may run now (the others are claimed by another sweep process on
    # the same database, or finished meanwhile); called once per chunk right before it runs. None: run all.
    claim: Callable[[list[str]], list[str]] | None = None


def _claimed(chunk: Sequence[RunConfig], chunk_keys: Sequence[str], plan: RunPlan):
    """The part of a chunk this process claimed (all of it without `plan.claim`)."""
    if plan.claim is None:
        return list(chunk), list(chunk_keys)
    mine = set(plan.claim(list(chunk_keys)))
    pairs = [(r, k) for r, k in zip(chunk, chunk_keys) if k in mine]
    return [r for r, _ in pairs], [k for _, k in pairs]


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


def _log_info(msg: str) -> None:
    import logging

    logging.getLogger("plantseek.sweep").info(msg)


def _chunked(runs: Sequence[RunConfig], keys: Sequence[str], max_batch: int | None, workers: int | None = None):
    key_of = {id(r): k for r, k in zip(runs, keys)}
    for chunk in make_chunks(runs, max_batch, workers):
        yield chunk, [key_of[id(r)] for r in chunk]


@register("local")
class LocalExecutor(Executor):
    """Runs chunks one after the other in this process."""

    def __init__(self, **_ignored) -> None:
        pass

    def run(self, runs, keys, on_records, plan):
        failed = 0
        with _progress(len(runs), plan, plan.sweep or "sweep") as bar:
            def finished(records) -> None:  # each batch is written as soon as it is done
                nonlocal failed
                on_records(records)
                failed += sum(r.status == "failed" for r in records)
                bar.update(len(records))
                if failed:
                    bar.set_postfix(failed=failed, refresh=False)

            log = bar.write if plan.progress else (plan.log or _log_info)
            for chunk, chunk_keys in _chunked(runs, keys, plan.max_batch):
                n = len(chunk)
                chunk, chunk_keys = _claimed(chunk, chunk_keys, plan)
                if len(chunk) < n:  # another sweep process runs (or ran) the rest
                    bar.update(n - len(chunk))
                if not chunk:
                    continue
                run_chunk(
                    [r.to_dict() for r in chunk], chunk_keys, device=plan.device, batch_fn=plan.batch_fn,
                    single_fn=plan.single_fn, imports=(), version=plan.version, sweep=plan.sweep,
                    progress=plan.progress, max_batch=plan.max_batch, on_records=finished, log=log,
                )


def _worker_imports(paths: Sequence[str], modules: Sequence[str]) -> None:
    """On a Dask worker: the client's import directories (`plantseek.plugins.import_paths`: the current
    directory, the sweep file's) first on the path, then the modules the client imported by name (the sweep's
    ``imports``, the command's ``--import``: `plantseek.plugins.worker_imports`)."""
    from ..plugins import import_modules

    import_modules(modules, paths=list(paths), where=f"Dask worker on {socket.gethostname()}: imports")


def _run_chunk_on_worker(import_paths: Sequence[str], *args, imports: Sequence[str] = (),
                         stream: str | None = None, **kwargs) -> list[RunRecord]:
    """`run_chunk` after `_worker_imports`: what the Dask executors submit (a worker may join the cluster after
    the sweep started, so each task imports; a module imported already is not imported again).

    ``stream``: the name of a `distributed.Queue` the client drains; every batch's records are put there as
    soon as the batch finishes, so that they reach the database before the rest of the chunk has run. The
    task still returns all its records (the client writes each key once), so a lost message loses nothing."""
    _worker_imports(import_paths, imports)
    on_records = _stream_to(stream) if stream else None
    return run_chunk(*args, imports=imports, on_records=on_records, **kwargs)


def _stream_to(name: str) -> OnRecords:
    """A callback that sends records to the client through the `distributed.Queue` ``name`` (pickled: a
    queue carries msgpack-able values only)."""
    import pickle

    from distributed import Queue

    queue = Queue(name)

    def send(records: list[RunRecord]) -> None:
        try:
            queue.put(pickle.dumps(records))
        except Exception:  # noqa: BLE001 - the chunk's result carries the records anyway
            pass
    return send


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

    gpus: list[str] | None = None  # set by _client when each local worker is pinned to one GPU
    visible_gpus: list[str] | None = None  # GPUs to pin local workers to (dask-local's `gpus`), else all visible

    def _client(self, device: str | None = None):
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ValueError("the Dask executors need dask.distributed: pip install 'plantseek[distributed]'") from None
        if self.local:
            if _wants_cuda(device) or self.visible_gpus is not None:
                cluster = gpu_cluster(self.workers, threads_per_worker=self.threads_per_worker,
                                      gpus=self.visible_gpus)
                self.gpus = list(cluster.plantseek_gpus)
                self.workers = len(self.gpus)
                return Client(cluster), cluster
            n = self.workers or max(1, (os.cpu_count() or 1) // 2)
            cluster = LocalCluster(n_workers=n, threads_per_worker=self.threads_per_worker,
                                   processes=self.processes, dashboard_address=None)
            self.workers = n
            return Client(cluster), cluster
        return Client(self.scheduler), None

    def run(self, runs, keys, on_records, plan):
        client, cluster = self._client(plan.device)
        if self.gpus:  # each worker sees only its own GPU, as its "cuda:0"
            if _wants_cuda(plan.device):
                plan = replace(plan, device=_pinned_device(plan.device))
            if plan.log:
                plan.log(f"{len(self.gpus)} Dask workers, one per GPU (CUDA_VISIBLE_DEVICES={', '.join(self.gpus)})")
        torch_threads = None
        if self.local and self.processes:
            torch_threads = max(1, (os.cpu_count() or 1) // max(1, self.workers or 1))
        futures = {}
        try:
            import_paths, imports = _import_paths(), _modules_for_workers(plan.imports)
            if imports:  # every worker imports them now: a module it cannot import is one error, before any run
                client.run(_worker_imports, import_paths, imports)
            try:
                threads = max(1, sum(client.nthreads().values()))
            except Exception:  # noqa: BLE001 - no scheduler answer: chunks as for one worker
                threads = 1
            with _progress(len(runs), plan, f"{plan.sweep or 'sweep'} [{self.describe()}]") as bar:
                self._drive(client, runs, keys, on_records, plan, bar, futures, threads, import_paths, imports,
                            torch_threads)
        finally:
            if futures:
                client.cancel(list(futures))
            client.close()
            if cluster is not None:
                cluster.close()

    def _drive(self, client, runs, keys, on_records, plan, bar, futures, threads, import_paths, imports,
               torch_threads) -> None:
        """Submit the chunks, write each finished run as it arrives (streamed batches, then the chunk's
        result), and keep a window of chunks in flight when runs are claimed."""
        import pickle
        import uuid

        from distributed import Queue, wait

        chunks = enumerate(_chunked(runs, keys, plan.max_batch, workers=threads))
        # with claims, a chunk is claimed when it is submitted, and only a few chunks per worker are in flight,
        # so that another sweep process on the same database takes its share of the rest
        window = 2 * threads if plan.claim is not None else None
        stream = f"plantseek-stream-{uuid.uuid4().hex}"
        queue = Queue(stream, client=client)
        written: set[str] = set()
        failed = 0

        def write(records: list[RunRecord]) -> None:
            nonlocal failed
            new = [r for r in records if r.key not in written]
            if not new:
                return
            on_records(new)
            written.update(r.key for r in new)
            failed += sum(r.status == "failed" for r in new)
            bar.update(len(new))
            if failed:
                bar.set_postfix(failed=failed, refresh=False)

        def drain() -> None:
            try:
                items = queue.get(batch=True)
            except Exception:  # noqa: BLE001 - the chunks' results carry every record
                return
            for item in items:
                write(pickle.loads(item))

        def submit_next() -> bool:
            for n, (chunk, chunk_keys) in chunks:
                size = len(chunk)
                chunk, chunk_keys = _claimed(chunk, chunk_keys, plan)
                if len(chunk) < size:
                    bar.update(size - len(chunk))
                if not chunk:
                    continue
                configs = [r.to_dict() for r in chunk]
                fut = client.submit(
                    _run_chunk_on_worker, import_paths, configs, chunk_keys, device=plan.device,
                    batch_fn=plan.batch_fn, single_fn=plan.single_fn, imports=imports, stream=stream,
                    torch_threads=torch_threads, version=plan.version, sweep=plan.sweep, progress=False,
                    max_batch=plan.max_batch, pure=False, key=f"plantseek-chunk-{n}-{chunk_keys[0][:12]}",
                )
                futures[fut] = (configs, chunk_keys)
                return True
            return False

        while (window is None or len(futures) < window) and submit_next():
            pass
        while futures:
            try:
                done, _ = wait(list(futures), timeout=STREAM_POLL_S, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished yet: take what the workers streamed
                done = set()
            drain()
            for fut in done:
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
                write(records)
            if window is not None:
                while len(futures) < window and submit_next():
                    pass


@register("dask-local")
class DaskLocalExecutor(DaskExecutor):
    """A LocalCluster started here: ``workers`` processes; with a CUDA device, one worker per visible GPU,
    each pinned to its GPU (``CUDA_VISIBLE_DEVICES``), at most ``workers`` of them. ``gpus`` (a list of
    device ids) overrides the visible GPUs, e.g. for tests."""

    def __init__(self, workers: int | None = None, processes: bool = True, threads_per_worker: int = 1,
                 gpus: Sequence[str | int] | None = None, **_ignored) -> None:
        super().__init__(scheduler=None, workers=workers, local=True, processes=processes,
                         threads_per_worker=threads_per_worker)
        self.visible_gpus = None if gpus is None else [str(g) for g in gpus]

    def describe(self) -> str:
        if self.gpus:
            return f"dask-local ({len(self.gpus)} GPU workers)"
        return super().describe()


@register("dask-cuda")
class DaskCudaExecutor(DaskExecutor):
    """``dask_cuda.LocalCUDACluster``: one worker per visible GPU (``workers`` limits how many), each pinned to
    its GPU by dask-cuda. Needs ``pip install dask-cuda``."""

    def __init__(self, workers: int | None = None, threads_per_worker: int = 1, **_ignored) -> None:
        super().__init__(scheduler=None, workers=workers, local=True, threads_per_worker=threads_per_worker)

    def describe(self) -> str:
        return f"dask-cuda ({self.workers or 'all'} GPU workers)"

    def _client(self, device: str | None = None):
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            raise ValueError("--executor dask-cuda needs dask-cuda (pip install dask-cuda, on a machine with "
                             "NVIDIA GPUs); --executor dask-local --device cuda starts one worker per GPU "
                             "without it") from None
        from distributed import Client

        if device is not None and not _wants_cuda(device):
            raise ValueError(f"--executor dask-cuda runs on GPUs; got --device {device!r}")
        options: dict[str, Any] = {"threads_per_worker": self.threads_per_worker, "dashboard_address": None}
        if self.workers:
            options["n_workers"] = self.workers
        cluster = LocalCUDACluster(**options)
        self.gpus = [str(i) for i in range(len(cluster.workers))]
        self.workers = len(self.gpus)
        return Client(cluster), cluster


def _wants_cuda(device: str | None) -> bool:
    if device is None:
        return False
    d = str(device).strip().lower()
    if d == "auto":
        try:
            import torch

            return torch.cuda.is_available()
        except ImportError:  # pragma: no cover
            return False
    return d.startswith("cuda")


def _pinned_device(device: str | None) -> str:
    """A worker pinned to one GPU sees it as cuda:0, whatever index the client asked for."""
    return "cuda"


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` entries (ids or UUIDs)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None and env.strip() != "":
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    except ImportError:  # pragma: no cover
        return []


def gpu_worker_specs(gpus: Sequence[str], threads_per_worker: int = 1) -> dict[str, dict]:
    """`distributed.SpecCluster` worker specs: one Nanny-managed worker process per GPU whose environment
    shows it that GPU only (``CUDA_VISIBLE_DEVICES``), so that ``cuda`` in the worker is its own GPU."""
    from distributed import Nanny

    return {
        f"gpu-{g}": {"cls": Nanny, "options": {"nthreads": int(threads_per_worker),
                                               "env": {"CUDA_VISIBLE_DEVICES": str(g)},
                                               "name": f"gpu-{g}"}}
        for g in gpus
    }


def gpu_cluster(workers: int | None = None, *, threads_per_worker: int = 1, gpus: Sequence[str] | None = None):
    """A local Dask cluster with one worker per visible GPU (at most `workers`), each pinned to its GPU."""
    from distributed import Scheduler, SpecCluster

    avail = list(gpus) if gpus is not None else visible_gpus()
    if not avail:
        from ..device import available_devices

        raise ValueError(f"--device cuda with --executor dask-local needs visible GPUs, and none is visible here "
                         f"({available_devices()})")
    if workers is not None and workers > len(avail):
        raise ValueError(f"--workers {workers} with --device cuda: only {len(avail)} GPU(s) visible "
                         f"({', '.join(avail)}); one worker per GPU")
    use = avail[:workers] if workers else avail
    cluster = SpecCluster(workers=gpu_worker_specs(use, threads_per_worker),
                          scheduler={"cls": Scheduler, "options": {"dashboard_address": None}},
                          silence_logs=40)
    cluster.plantseek_gpus = list(use)
    return cluster
