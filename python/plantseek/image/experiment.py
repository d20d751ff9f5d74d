"""The image-ticket experiment (the Plant 'n' Seek paper's fourth experiment, DESIGN.md "image").

1. train a small VGG-style network (width multiplier ``ticket_width``) on the task (digits by default);
2. prune it to ``ticket_density`` with ``ticket_pruner`` (any registered pruner; SynFlow by default) and
   fine-tune the kept weights: the result is the *ticket*, a sparse conv net found by a real pruner;
3. plant the ticket into a randomly initialised host of the same family with ``host_width`` x the channels
   and units (`plant_state_dict`; exact: the masked host computes ``output_scale`` x the ticket);
4. run the seeker (edge-popup-annealed by default: the strong protocol, weights keep their planted values) at
   the ticket's own density and a grid above it, plus the ``ticket`` oracle as the reference row;
5. measure every found mask like the other tasks (flat metrics: test_accuracy / test_loss read through a
   temperature fitted on the training data, test_loss_planted_scale, output_scale_fitted, ticket_test_*,
   dense_test_* (the dense host trained with the ticket's training budget), density, weight_density,
   layer densities, precision / recall / f1 / jaccard against the planted ticket mask, ticket_survived, ...)
   and write one row per run to the results database (`plantseek.store`), so they appear in the report.

Randomness: every stream (data split, small network, pruner, training shuffles, host, seeker) has its own seed
derived from ``seed``. Data, the small network's initialisation, the host and the planting are drawn on the CPU
(float64) and then moved to ``device``; training, pruning and seeking run there in ``dtype``.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .. import metrics as _metrics
from .. import pruners as _pruners
from .. import tasks as _tasks
from ..device import resolve_device, resolve_dtype
from ..masks import Mask
from ..pruners.base import parse_density
from . import models
from .planting import ConvNetwork, PlantedModule, plant_state_dict

DEFAULT_GRID = (0.01, 0.05, 0.1, 0.5)


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for a named random stream of run ``seed`` (same rule as `plantseek.seek`)."""
    h = hashlib.sha256(f"plantseek:{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


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
    train_epochs: int = 40  # dense small network
    finetune_epochs: int = 40  # the pruned ticket
    lr: float = 1e-3
    batch_size: int = 32
    seeker: str = "edge-popup-annealed"
    seeker_options: dict = field(default_factory=lambda: {"epochs": 20})
    seeker_scope: str = "layer"  # edge-popup's own (per layer, as in its paper); measured better than global here
    densities: Sequence[float | str] | None = None  # None: "ticket" + DEFAULT_GRID above the ticket's density
    oracle: bool = True  # also store the `ticket` oracle row
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


@dataclass
class ImageTicketResult:
    """What the experiment measured: one row per seeker run (``config`` + flat ``metrics``) and the ticket."""

    rows: list[dict]
    ticket: dict
    planted: PlantedModule
    timings: dict
    config: ImageTicketConfig

    def table(self) -> list[dict]:
        keys = ("pruner", "density", "density_measured", "test_accuracy", "test_loss", "recall", "precision", "f1",
                "jaccard", "ticket_survived", "time_s")
        out = []
        for r in self.rows:
            flat = {**r["config"], **{("density_measured" if k == "density" else k): v for k, v in r["metrics"].items()}}
            out.append({k: flat.get(k) for k in keys})
        return out


# ------------------------------------------------------------------------------------------------ training

def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, flush=True)


def train_module(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float = 1e-3,
                 batch_size: int = 32, mask: Mask | None = None, generator: torch.Generator | None = None,
                 weight_decay: float = 0.0, progress: bool = False, desc: str = "train") -> list[float]:
    """Adam on the cross-entropy of ``module`` (a layer sequence, e.g. `models.vgg`) over pre-shuffled batches.

    With ``mask`` (one (weight, bias) pair per Conv2d/Linear layer, in order) pruned parameters are zeroed
    first and their gradients masked, so they stay exactly zero (Adam's moments stay zero there). Returns the
    mean training loss per epoch; a non-finite loss is a ValueError naming the epoch.
    """
    layers = [m for m in module.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    pmasks: list[tuple[torch.Tensor, torch.Tensor]] = []
    if mask is not None:
        if len(mask) != len(layers):
            raise ValueError(f"mask has {len(mask)} layers, the module {len(layers)}")
        with torch.no_grad():
            for m, (wm, bm) in zip(layers, mask):
                fw, fb = wm.to(m.weight), bm.to(m.bias)
                m.weight.mul_(fw)
                m.bias.mul_(fb)
                pmasks += [(m.weight, fw), (m.bias, fb)]
    opt = torch.optim.Adam(module.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    history = []
    bar = None
    if progress and epochs > 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=desc, unit="epoch", leave=False, dynamic_ncols=True)
    try:
        for epoch in range(1, epochs + 1):
            perm = torch.randperm(n, generator=generator, device="cpu").to(x.device)
            xs, ys = x[perm], y[perm]
            total = torch.zeros((), dtype=torch.float64, device=x.device)
            for s in range(0, n, batch_size):
                loss = F.cross_entropy(module(xs[s:s + batch_size]), ys[s:s + batch_size])
                opt.zero_grad(set_to_none=False)
                loss.backward()
                if pmasks:
                    with torch.no_grad():
                        for p, fm in pmasks:
                            p.grad.mul_(fm)
                opt.step()
                total += loss.detach().double() * min(batch_size, n - s)
            mean = float(total) / n
            if not math.isfinite(mean):
                raise ValueError(f"training diverged: the loss became {mean} in epoch {epoch} of {epochs} ({desc}, lr={lr})")
            history.append(mean)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{mean:.3g}")
    finally:
        if bar is not None:
            bar.close()
    if pmasks and weight_decay:
        with torch.no_grad():
            for p, fm in pmasks:
                p.mul_(fm)
    return history


def predict(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """No-grad outputs of ``fn`` over ``x`` in chunks of samples."""
    with torch.no_grad():
        return torch.cat([fn(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)]) if x.shape[0] else fn(x)


def _accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == y).double().mean())


# ------------------------------------------------------------------------------------------------ metrics

def mask_metrics(mask: Mask, net: PlantedModule) -> dict:
    """Achieved densities (overall with biases, weights only, per layer; the ticket's beside them), recovery,
    and layer_collapse (a layer that keeps no weight)."""
    dev = mask[0][0].device
    tmask = [(wm.to(dev), bm.to(dev)) for wm, bm in net.ticket_mask]
    out: dict[str, Any] = {**_metrics.densities(mask, tmask), "ticket_density": float(net.ticket_density),
                           "ticket_weight_density": float(net.ticket_weight_density)}
    out.update(_metrics.flat_recovery(mask, tmask))
    out["layer_collapse"] = bool(any(int(wm.sum()) == 0 for wm, _ in mask))
    return out


def strong_output_metrics(net: PlantedModule, mask: Mask, data) -> dict:
    """The strong protocol's reading of a mask (as `plantseek.seek` does it for the MLP tasks): the masked host's
    logits times one positive temperature fitted on the training data give test_loss / test_accuracy;
    test_loss_planted_scale divides by the planted ``output_scale`` instead (exact for the ticket)."""
    from ..rescale import fit_temperature

    params = [(w * wm.to(w.dtype), b * bm.to(b.dtype)) for (w, b), (wm, bm) in zip(net.params(), mask)]
    fwd = lambda xb: net.forward_params(params, xb)  # noqa: E731
    out_train = predict(fwd, data.x_train)
    out_test = predict(fwd, data.x_test)
    t = fit_temperature(out_train.double(), data.y_train)
    m = {
        "test_loss": float(F.cross_entropy(out_test.double() * t, data.y_test)),
        "test_accuracy": _accuracy(out_test, data.y_test),
        "output_scale_fitted": (1.0 / t) if t > 0 else float("nan"),
        "test_loss_planted_scale": float(F.cross_entropy(out_test.double() / net.output_scale, data.y_test)),
        "train_accuracy": _accuracy(out_train, data.y_train),
    }
    return m


# ------------------------------------------------------------------------------------------------ experiment

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


def run_image_ticket(config: ImageTicketConfig | None = None, *, db: str | None = None, **overrides) -> ImageTicketResult:
    """Run the image-ticket experiment; with ``db`` every row is written to that results database."""
    cfg = copy.deepcopy(config) if config is not None else ImageTicketConfig()
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise ValueError(f"unknown image-ticket option {k!r}")
        setattr(cfg, k, v)
    before = torch.get_num_threads()
    threads = cfg.threads
    if threads is None and resolve_device(cfg.device).type == "cpu":
        # measured on the 2-core development machine while other jobs ran: one epoch of the small digits net took
        # 0.9 s on one thread and 5 to 44 s on two (OpenMP threads waiting on busy cores); batches of 32 small
        # images are too little work to split anyway
        env = os.environ.get("PLANTSEEK_TRAIN_THREADS", "").strip()
        threads = int(env) if env else 1
    if threads is not None:
        if int(threads) < 1:
            raise ValueError(f"threads must be >= 1, got {threads!r}")
        torch.set_num_threads(int(threads))
    try:
        return _run(cfg, db)
    finally:
        torch.set_num_threads(before)


def _run(cfg: ImageTicketConfig, db: str | None) -> ImageTicketResult:
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype)
    task = _tasks.get(cfg.task)
    if getattr(task, "builds_ticket", True) or not hasattr(task, "input_shape"):
        raise ValueError(f"task {cfg.task!r} is not an image task; image tasks: digits, cifar10")
    if not 0 < float(cfg.ticket_density) <= 1:
        raise ValueError(f"ticket_density must lie in (0, 1], got {cfg.ticket_density!r}")
    if float(cfg.host_width) < 1:
        raise ValueError(f"host_width must be >= 1 (the host needs at least the ticket's channels), got {cfg.host_width!r}")
    layout = cfg.layout or task.default_layout
    c_in, h, w = task.input_shape
    family = dict(in_channels=c_in, num_classes=task.output_dim, image_size=(h, w))
    log = lambda msg: _log(cfg.progress, msg)  # noqa: E731

    # -- data
    t0 = time.perf_counter()
    data_kwargs: dict[str, Any] = {"seed": derive_seed(cfg.seed, "data") % (2**31)}
    if cfg.data_dir is not None:
        data_kwargs["data_dir"] = cfg.data_dir
    if cfg.task == "cifar10":
        data_kwargs.update(n=cfg.n_train, n_test=cfg.n_test)
    elif cfg.n_train is not None:
        data_kwargs["n"] = cfg.n_train
    data_cpu = task.data(**data_kwargs)
    data = data_cpu.to(device, dtype)
    timings["data_s"] = time.perf_counter() - t0
    log(f"[image-ticket] {cfg.task}: {data.x_train.shape[0]} training / {data.x_test.shape[0]} test images "
        f"{tuple(data.x_train.shape[1:])} on {device} ({dtype})")

    # -- train the small network
    t0 = time.perf_counter()
    small = models.build(layout, cfg.ticket_width, seed=derive_seed(cfg.seed, "small"), init="default", **family)
    small = small.to(device=device, dtype=dtype)
    g_train = torch.Generator().manual_seed(derive_seed(cfg.seed, "train"))
    train_module(small, data.x_train, data.y_train, epochs=cfg.train_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                 generator=g_train, progress=cfg.progress, desc="train small")
    small_acc = _accuracy(predict(small, data.x_test), data.y_test)
    timings["train_small_s"] = time.perf_counter() - t0
    log(f"[image-ticket] small network ({layout}, width {cfg.ticket_width}): test accuracy {small_acc:.4f}")

    # -- prune to the ticket, fine-tune
    t0 = time.perf_counter()
    small_net = ConvNetwork(small, (c_in, h, w))
    pruner = _pruners.get(cfg.ticket_pruner, **dict(cfg.ticket_pruner_options))
    g_prune = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "prune-ticket"))
    tmask = pruner.prune(small_net, data, float(cfg.ticket_density), scope=cfg.ticket_scope, generator=g_prune)
    pruned_acc = _accuracy(predict(lambda xb: small_net.forward(xb, tmask), data.x_test), data.y_test)
    train_module(small, data.x_train, data.y_train, epochs=cfg.finetune_epochs, lr=cfg.lr, batch_size=cfg.batch_size,
                 mask=tmask, generator=g_train, progress=cfg.progress, desc="fine-tune ticket")
    ticket_small_acc = _accuracy(predict(small, data.x_test), data.y_test)
    ticket_state = {k: v.detach().to("cpu", torch.float64).clone() for k, v in small.state_dict().items()}
    n_ticket = sum(v.numel() for v in ticket_state.values())
    nnz_ticket = sum(int((v != 0).sum()) for v in ticket_state.values())
    timings["prune_finetune_s"] = time.perf_counter() - t0
    log(f"[image-ticket] ticket: {cfg.ticket_pruner} to density {nnz_ticket / n_ticket:.4f} ({nnz_ticket} of "
        f"{n_ticket} parameters): accuracy {pruned_acc:.4f} after pruning, {ticket_small_acc:.4f} after fine-tuning")

    # -- plant
    t0 = time.perf_counter()
    host = models.vgg(layout, cfg.ticket_width * cfg.host_width, **family)
    planted = plant_state_dict(ticket_state, host, seed=derive_seed(cfg.seed, "host") % (2**31), input_shape=(c_in, h, w))
    x_check = data_cpu.x_test[:256]
    ref = planted.output_scale * planted.ticket_forward(x_check)
    got = planted.forward(x_check, planted.ticket_mask)
    exact_err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-300))
    net = planted.to(device, dtype)
    ticket_logits = predict(lambda xb: planted.ticket_forward(xb), data_cpu.x_test)
    ticket_acc = _accuracy(ticket_logits, data_cpu.y_test)
    ticket_loss = float(F.cross_entropy(ticket_logits, data_cpu.y_test))
    timings["plant_s"] = time.perf_counter() - t0
    log(f"[image-ticket] planted into width {cfg.ticket_width * cfg.host_width} ({net.n_params} parameters): ticket "
        f"density {net.ticket_density:.3g}, output_scale {planted.output_scale:.3g}, exactness {exact_err:.1e}, "
        f"hiding percentile {planted.hiding['median_percentile']:.3f}")

    # -- dense host baseline
    dense: dict[str, float] = {}
    if cfg.dense_baseline:
        t0 = time.perf_counter()
        dense_module = net.to_module()
        train_module(dense_module, data.x_train, data.y_train, epochs=cfg.train_epochs, lr=cfg.lr,
                     batch_size=cfg.batch_size, generator=torch.Generator().manual_seed(derive_seed(cfg.seed, "dense")),
                     progress=cfg.progress, desc="train dense host")
        logits = predict(dense_module, data.x_test)
        dense = {"dense_test_accuracy": _accuracy(logits, data.y_test),
                 "dense_test_loss": float(F.cross_entropy(logits.double(), data.y_test))}
        timings["dense_host_s"] = time.perf_counter() - t0
        log(f"[image-ticket] dense host trained: test accuracy {dense['dense_test_accuracy']:.4f}")

    # -- seek
    common = {
        "ticket_test_accuracy": ticket_acc, "ticket_test_loss": ticket_loss,
        "ticket_small_test_accuracy": ticket_small_acc, "ticket_pruned_test_accuracy": pruned_acc,
        "small_dense_test_accuracy": small_acc, "ticket_nnz": nnz_ticket, "ticket_small_density": nnz_ticket / n_ticket,
        "planting_exactness": exact_err, "output_scale": planted.output_scale,
        "hiding_median_percentile": planted.hiding["median_percentile"], "host_params": net.n_params, **dense,
    }
    seeker = _pruners.get(cfg.seeker, **dict(cfg.seeker_options))
    runs: list[tuple[str, Any, float | str]] = [(cfg.seeker, seeker, d) for d in density_grid(net.ticket_density, cfg.densities)]
    if cfg.oracle:
        runs.insert(0, ("ticket", _pruners.get("ticket"), "ticket"))
    rows = []
    base_config = {
        "task": cfg.task, "protocol": "strong", "seed": int(cfg.seed), "width": float(cfg.host_width),
        "dtype": str(dtype).replace("torch.", ""), "experiment": "image-ticket", "layout": layout,
        "ticket_width": float(cfg.ticket_width), "ticket_pruner": cfg.ticket_pruner,
        "ticket_pruner_options": dict(cfg.ticket_pruner_options), "ticket_target_density": float(cfg.ticket_density),
        "ticket_scope": cfg.ticket_scope, "train_epochs": int(cfg.train_epochs), "finetune_epochs": int(cfg.finetune_epochs),
        "lr": float(cfg.lr), "batch_size": int(cfg.batch_size),
    }
    for name, pr, dens in runs:
        t0 = time.perf_counter()
        g = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, f"seek:{name}:{dens}"))
        scope = cfg.seeker_scope if name != "ticket" else "global"
        mask = pr.prune(net, data, dens, scope=scope, generator=g)
        metrics = {**strong_output_metrics(net, mask, data), **mask_metrics(mask, net), **common}
        metrics["requested_density"] = float(net.ticket_density) if dens == "ticket" else float(dens)
        metrics["time_s"] = time.perf_counter() - t0
        opts = {k: v for k, v in getattr(pr, "options", {}).items() if not callable(v)}
        run_cfg = {**base_config, "pruner": name, "pruner_options": opts, "density": dens, "scope": scope,
                   "epochs": int(opts.get("epochs", 0))}
        rows.append({"config": run_cfg, "metrics": metrics})
        log(f"[image-ticket] {name} at density {dens if isinstance(dens, str) else f'{dens:g}'} "
            f"({metrics['density']:.4g}): accuracy {metrics['test_accuracy']:.4f}, recall {metrics['recall']:.3f}, "
            f"precision {metrics['precision']:.3f} ({metrics['time_s']:.1f} s)")
    timings["seek_s"] = sum(r["metrics"]["time_s"] for r in rows)
    timings["total_s"] = time.perf_counter() - t_start
    if db is not None:
        write_rows(db, rows, device=str(device))
    ticket_info = {"state_dict": ticket_state, "mask": tmask, "nnz": nnz_ticket, "params": n_ticket,
                   "test_accuracy": ticket_acc, "small_test_accuracy": ticket_small_acc}
    return ImageTicketResult(rows, ticket_info, planted, timings, cfg)


def write_rows(db: str, rows: list[dict], device: str | None = None) -> list[str]:
    """Write experiment rows to the results database (`plantseek.store`); returns their run keys. A rerun of the
    same configuration replaces its rows."""
    import socket

    from ..store import ResultStore, RunRecord
    from ..sweep.config import package_version, run_key

    version = package_version()
    now = time.time()
    records = []
    for r in rows:
        key = run_key(r["config"], version)
        fields = dict(key=key, config=r["config"], status="ok", metrics=r["metrics"],
                      started_at=now - r["metrics"].get("time_s", 0.0), finished_at=now,
                      duration_s=r["metrics"].get("time_s"), batch_runs=1, batch_size=1, version=version,
                      device=device, host=socket.gethostname(), sweep="image-ticket")
        known = getattr(RunRecord, "__dataclass_fields__", fields)
        records.append(RunRecord(**{k: v for k, v in fields.items() if k in known}))
    with ResultStore(db) as store:
        store.put(records)
    return [rec.key for rec in records]
