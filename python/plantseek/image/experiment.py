"""The image-ticket experiment (the Plant 'n' Seek paper's fourth experiment, DESIGN.md "image"), as a front end.

``run_image_ticket(...)`` (and ``plantseek image-ticket``) builds the rows of one experiment and runs them through
the path every run takes (`plantseek.seek_batch`; with ``db``, a sweep into that results database):

1. the conv family learns the ticket once (`plantseek.image.ticket`: train a small VGG-style network at
   ``ticket_width``, prune it to ``ticket_density`` with ``ticket_pruner``, fine-tune the kept weights) and
   plants it into a host with ``host_width`` x the channels and units (`plant_state_dict`; exact);
2. the rows: the ``ticket`` oracle (the reference row) and the seeker (edge-popup-annealed by default: the
   strong protocol, weights keep their planted values) at the ticket's own density and a grid above it;
3. each row is an ordinary `plantseek.seek` run of the image task (protocol strong; its metrics are the
   image family's of `plantseek.metric_schema`), stored like every run.

An `ImageTicketConfig` maps onto `plantseek.spec` options: ``host_width`` onto ``width`` (the host's first-layer
channels: ``host_width`` x the ticket network's), ``ticket_density`` onto ``ticket_target_density``,
``train_epochs`` onto ``ticket_train_epochs`` and ``epochs`` (the dense host baseline's budget, as before),
``finetune_epochs`` onto ``ticket_finetune_epochs``, ``lr`` / ``batch_size`` onto both the small network's and the
dense baseline's, ``seeker`` / ``seeker_options`` / ``seeker_scope`` onto ``pruner`` / ``pruner_options`` /
``scope``; ``noise`` is 0 (no label noise, unlike `seek`'s default 0.01).
"""
from __future__ import annotations

import contextlib
import copy
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..arguments import parse_density

DEFAULT_GRID = (0.01, 0.05, 0.1, 0.5)
ORACLE = "ticket"


@dataclass
class ImageTicketConfig:
    """Settings of one image-ticket experiment (the CLI's options)."""

    task: str = "digits"
    layout: str | None = None  # None: the task's default ("digits" on digits, "vgg16" on cifar10)
    ticket_width: float = 1.0
    host_width: float = 4.0
    ticket_pruner: str = "synflow"
    ticket_pruner_options: dict = field(default_factory=dict)
    ticket_density: float = 0.05
    ticket_scope: str = "global"
    train_epochs: int = 40  # dense small network (and the dense host baseline)
    finetune_epochs: int = 40  # the pruned ticket
    lr: float = 1e-3
    batch_size: int = 32
    seeker: str = "edge-popup-annealed"
    seeker_options: dict = field(default_factory=lambda: {"epochs": 20})
    seeker_scope: str = "layer"  # edge-popup's own (per layer, as in its paper); measured better than global here
    densities: Sequence[float | str] | None = None  # None: "ticket" + DEFAULT_GRID above the ticket's density
    oracle: bool = True  # also run the `ticket` oracle row
    dense_baseline: bool = True  # train the dense host for train_epochs (dense_test_*)
    seed: int = 0
    device: str = "auto"
    dtype: str = "float32"
    data_dir: str | None = None
    n_train: int | None = None  # subsample of the training images (CIFAR-10 smoke runs)
    n_test: int | None = None
    progress: bool = True
    threads: int | None = None  # CPU threads during the run; None: PLANTSEEK_TRAIN_THREADS, else 1 on the CPU

    def public(self) -> dict:
        d = asdict(self)
        for k in ("device", "progress", "data_dir", "threads"):
            d.pop(k)
        d["densities"] = None if self.densities is None else list(self.densities)
        return d

    def spec_options(self) -> dict[str, Any]:
        """The `plantseek.spec` options every row shares (the oracle's pruner; each row sets its own)."""
        from .. import tasks
        from .ticket import first_channels

        task = tasks.get(self.task)
        if getattr(task, "family", "mlp") != "conv":
            image = [n for n in tasks.available() if getattr(tasks.get(n), "family", "mlp") == "conv"]
            raise ValueError(f"task {self.task!r} is not an image task; image tasks: {', '.join(image)}")
        if isinstance(self.host_width, bool) or not float(self.host_width) >= 1:
            raise ValueError(f"host_width must be >= 1 (the host needs at least the ticket's channels), got "
                             f"{self.host_width!r}")
        from . import models

        layout = self.layout or task.default_layout
        if layout not in models.available():
            raise ValueError(f"unknown layout {layout!r}; available: {', '.join(models.available())}")
        width = models.scaled(first_channels(layout), float(self.ticket_width) * float(self.host_width))
        return dict(
            task=self.task, layout=self.layout, width=width, ticket_width=self.ticket_width,
            ticket_pruner=self.ticket_pruner, ticket_pruner_options=dict(self.ticket_pruner_options),
            ticket_target_density=self.ticket_density, ticket_scope=self.ticket_scope,
            ticket_train_epochs=self.train_epochs, ticket_finetune_epochs=self.finetune_epochs, ticket_lr=self.lr,
            ticket_batch_size=self.batch_size, epochs=self.train_epochs, lr=self.lr, batch_size=self.batch_size,
            protocol="strong", pruner=ORACLE, density="ticket", dense_baseline=self.dense_baseline, seed=self.seed,
            dtype=self.dtype, n_train=self.n_train, n_test=self.n_test, noise=0.0,
        )

    def exec_options(self) -> dict[str, Any]:
        return dict(device=self.device, progress=self.progress, data_dir=self.data_dir)


@dataclass
class ImageTicketResult:
    """What the experiment measured: one row per run (``config`` + flat ``metrics``) and the ticket."""

    rows: list[dict]
    ticket: dict
    planted: Any  # the PlantedModule (CPU, float64)
    timings: dict
    config: ImageTicketConfig

    def table(self) -> list[dict]:
        keys = ("pruner", "density", "kept_density", "test_accuracy", "test_loss", "recall", "precision", "f1",
                "jaccard", "ticket_survived", "train_time_s")
        out = []
        for r in self.rows:
            flat = {**r["config"], **r["metrics"]}
            out.append({k: flat.get(k) for k in keys})
        return out


def density_grid(ticket_density: float, densities: Sequence[float | str] | None) -> list[float | str]:
    """``["ticket"]`` followed by the grid values above the ticket's density (default `DEFAULT_GRID`)."""
    if densities is None:
        return ["ticket"] + [d for d in DEFAULT_GRID if d > ticket_density]
    out: list[float | str] = []
    for d in densities:
        try:
            out.append(parse_density(d))
        except ValueError:
            raise ValueError(f"densities must lie in (0, 1] or be 'ticket', got {d!r}") from None
    return list(dict.fromkeys(out))


def _rows(cfg: ImageTicketConfig, base: dict, ticket_density: float) -> list[dict]:
    """The spec options of every row: the oracle, then the seeker at each density of the grid."""
    from ..pruners.base import default_scope

    scope = None if cfg.seeker_scope == default_scope(cfg.seeker) else cfg.seeker_scope  # the pruner's own: unset
    rows = [dict(base)] if cfg.oracle else []
    rows += [{**base, "pruner": cfg.seeker, "pruner_options": dict(cfg.seeker_options), "scope": scope, "density": d}
             for d in density_grid(ticket_density, cfg.densities)]
    return rows


@contextlib.contextmanager
def _threads(threads: int | None):
    """``threads`` CPU threads for the runs (`plantseek.threads` reads PLANTSEEK_TRAIN_THREADS)."""
    if threads is None:
        yield
        return
    if isinstance(threads, bool) or int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads!r}")
    old = os.environ.get("PLANTSEEK_TRAIN_THREADS")
    os.environ["PLANTSEEK_TRAIN_THREADS"] = str(int(threads))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PLANTSEEK_TRAIN_THREADS", None)
        else:
            os.environ["PLANTSEEK_TRAIN_THREADS"] = old


def run_image_ticket(config: ImageTicketConfig | None = None, *, db: str | None = None, **overrides) -> ImageTicketResult:
    """Run the image-ticket experiment; with ``db`` the rows run as a sweep into that results database (rows
    already there are not rerun, as in every sweep)."""
    cfg = copy.deepcopy(config) if config is not None else ImageTicketConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise ValueError(f"unknown image-ticket option {k!r}")
        setattr(cfg, k, v)
    with _threads(cfg.threads):
        return _run(cfg, db)


def _run(cfg: ImageTicketConfig, db: str | None) -> ImageTicketResult:
    import importlib

    from .. import families

    seek_mod = importlib.import_module("plantseek.seek")
    t0 = time.perf_counter()
    base, exe = cfg.spec_options(), cfg.exec_options()
    planting = seek_mod.normalize({**base, **exe})  # every option checked before anything is trained
    fam = families.of(planting["task"])
    net = seek_mod._planted(planting)  # learns and plants the ticket once (cached for every row)
    t_ticket = time.perf_counter() - t0
    rows = _rows(cfg, base, float(net.ticket_density))
    configs = [_full(r) for r in rows]
    t1 = time.perf_counter()
    metrics = _run_rows(configs, exe, db, seek_mod)
    learned = fam.learned(planting)
    ticket = {"state_dict": learned.state_dict, "mask": learned.mask, "nnz": learned.nnz,
              "params": sum(v.numel() for v in learned.state_dict.values()),
              "small_test_accuracy": learned.story["ticket_small_test_accuracy"],
              "test_accuracy": seek_mod._ticket_metrics(planting, net, seek_mod._data(planting))["ticket_test_accuracy"]}
    timings = {"ticket_s": t_ticket, "runs_s": time.perf_counter() - t1, "total_s": time.perf_counter() - t0}
    return ImageTicketResult([{"config": c, "metrics": m} for c, m in zip(configs, metrics)], ticket, net, timings, cfg)


def _full(options: dict) -> dict:
    """A row's options as a sweep stores them: every spec option, defaults filled in."""
    from ..spec import RunSpec
    from ..sweep import RunConfig

    return RunConfig.from_dict(RunSpec.from_flat(options).flat()).to_dict()


def _run_rows(configs: list[dict], exe: dict, db: str | None, seek_mod) -> list[dict]:
    """The metrics of each row, run through `plantseek.seek_batch` (with ``db``: as a sweep into it); the first
    failure is raised."""
    def batch(kwargs_list):
        return seek_mod.seek_batch([{**kw, **exe} for kw in kwargs_list], on_oom="return")

    if db is None:
        out = batch(configs)
        for res in out:
            if isinstance(res, BaseException):
                raise res
        return [res.metrics for res in out]
    from ..store import ResultStore
    from ..sweep import RunConfig, Sweep, run_sweep

    runs = [RunConfig.from_dict(c) for c in configs]
    quiet = None if exe["progress"] else (lambda msg: None)
    run_sweep(Sweep(runs=runs, name="image-ticket"), db, device=exe["device"], progress=exe["progress"],
              batch_fn=batch, log=quiet)
    with ResultStore(db) as store:
        by_key = {r["key"]: r for r in store.records()}
    recs = [by_key[r.key] for r in runs]
    failed = [r for r in recs if r["status"] != "ok"]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(recs)} image-ticket runs failed; the first: {failed[0]['error']}")
    return [r["metrics"] for r in recs]
