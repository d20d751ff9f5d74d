"""Seeking protocols: how a pruner's masks become a network that is then measured.

- ``singleshot`` (weak tickets): prune the planted network once at initialisation, then train the kept weights.
- ``multishot`` (weak tickets): ``rounds`` rounds of training ``round_epochs`` epochs, pruning to
  ``density ** (r / rounds)`` within the previous mask (masks are nested: a pruned parameter never comes back)
  and rewinding the kept weights to their planted values; then train ``epochs`` epochs. magnitude + multishot
  is iterative magnitude pruning (IMP).
- ``strong``: choose a mask only; every kept weight keeps its planted value. The output is read through a
  scale fitted on the training data (regression: one least-squares factor per output; classification: one
  positive temperature, a 1-D convex fit), the same rule for every mask (DESIGN.md, "Planting and hiding").

A protocol works on a *group* of runs that share task, shape and training settings; the weight training of
the group is the network family's training block (``Settings.trainer``, `plantseek.families`): for the MLP
tasks one batched computation (`plantseek.train`, `batched_train_runs`). Runs fail one by one: a pruner error or a
diverging loss is stored on that run and the others carry on. Register your own with `register(name)` on a
`Protocol` subclass.
"""
from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import torch

from . import batching as _batching
from . import train as _train
from .masks import Mask, check_mask
from .plugins import EntryPoints
from .pruners.base import check_density, check_kept, default_scope
from .rescale import Rescale, check_mode, fit_factors
from .rescale import fit_regression_scale, fit_temperature  # noqa: F401 - the protocols' read-out fits

Tensor = torch.Tensor


@dataclass
class Run:
    """One run of a group: its planted network and data (on the group's device and dtype) and its results."""

    label: str
    net: Any  # PlantedNetwork on the device, training dtype
    data: Any  # TaskData on the device, training dtype
    pruner: Any = None  # a configured pruner (None for the dense baseline)
    density: float = 1.0
    scope: str | None = None
    prune_bias: bool = True
    prune_generator: torch.Generator | None = None
    train_generator: torch.Generator | None = None
    # results
    mask: Mask | None = None
    weights: list[Tensor] | None = None
    biases: list[Tensor] | None = None
    extra: dict = field(default_factory=dict)
    error: BaseException | None = None
    time_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Settings:
    """Training settings shared by a group (the paper's defaults)."""

    task: Any
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    rounds: int = 10
    round_epochs: int = 5
    impl: str = "auto"
    rescale: str = "fit"  # the function-preserving rescale before each weak phase ("fit-even": no neuron balancing;
    # "none": the paper's protocol)
    # the during-training protocols (`plantseek.during_training`): mask updates every `update_every` optimiser
    # steps between the fractions `update_begin` and `update_end` of training
    update_every: int = 100
    update_begin: float = 0.0
    update_end: float = 0.75
    drop_fraction: float = 0.3  # dynamic: the fraction of kept weights dropped (and grown) at the first update
    grow: str = "gradient"  # dynamic: "gradient" (RigL) or "random" (SET)
    gradual_initial: float = 1.0  # gradual: the density it starts from (1: dense)
    progress: bool = False
    # the network family's training block (`plantseek.families`): trainer(runs, masks, settings, epochs, desc=,
    # start=) sets each run's weights/biases or error; None: `batched_train_runs`, the MLP family's
    trainer: Callable | None = None

    def __post_init__(self) -> None:
        check_mode(self.rescale)

    def train_config(self, epochs: int) -> _train.TrainConfig:
        return _train.TrainConfig(epochs=epochs, batch_size=self.batch_size, lr=self.lr, optimizer=self.optimizer,
                                  impl=self.impl)


# ------------------------------------------------------------------------------------------------ helpers

def prune_run(run: Run, density: float, mask: Mask | None = None) -> Mask:
    """The run's pruner applied to its network (weights as they stand in `run.net`), with checks."""
    kwargs: dict[str, Any] = {"prune_bias": run.prune_bias, "generator": run.prune_generator}
    if run.scope is not None:
        kwargs["scope"] = run.scope
    if mask is not None:
        kwargs["mask"] = mask
    density = check_density(density, run.net, scope=_scope_of(run), prune_bias=run.prune_bias)
    new = run.pruner.prune(run.net, run.data, density, **kwargs)
    return _checked(run, new, mask, density)


def _checked(run: Run, new, mask: Mask | None, density: float) -> Mask:
    """A pruner's answer as a validated mask on the run's device, nested in `mask` when given, keeping exactly
    what `density` asks for (unless the pruner says ``exact = False``): nothing silently wrong is stored."""
    name = getattr(run.pruner, "name", None) or type(run.pruner).__name__
    new = check_mask(new, run.net.weights, run.net.biases, name=f"the mask that pruner {name!r} returned")
    _check_device(new, run.net.device, name)
    if mask is not None:  # nested, whatever the pruner did
        new = [(wm & om, bm & obm) for (wm, bm), (om, obm) in zip(new, mask)]
    if getattr(run.pruner, "exact", True):
        check_kept(new, float(density), name, previous=mask, scope=_scope_of(run), prune_bias=run.prune_bias)
    return new


def _scope_of(run: Run) -> str:
    """The scope the run's pruner prunes in: the run's, else the default of the pruner's `prune`."""
    return run.scope if run.scope is not None else default_scope(run.pruner)


def _device_of(device) -> torch.device:
    d = torch.device(device)
    return torch.device("cuda", torch.cuda.current_device()) if d.type == "cuda" and d.index is None else d


def _check_device(mask: Mask, device, name: str) -> None:
    want = _device_of(device)
    for i, (wm, bm) in enumerate(mask):
        for t in (wm, bm):
            if _device_of(t.device) != want:
                raise ValueError(f"pruner {name!r} returned its layer {i} mask on {t.device}, the network is on {device}")


def full_mask(net) -> Mask:
    return [(torch.ones(w.shape, dtype=torch.bool, device=w.device), torch.ones(b.shape, dtype=torch.bool, device=b.device))
            for w, b in zip(net.weights, net.biases)]


def train_runs(runs: list[Run], masks: list[Mask], settings: Settings, epochs: int, desc: str = "train",
               start: list[tuple[list[Tensor], list[Tensor]]] | None = None,
               schedule: "_train.MaskSchedule | None" = None) -> None:
    """Train the runs from their planted weights (or `start`) with the group's training block
    (``settings.trainer``, the network family's; `batched_train_runs` when None), setting `weights`/`biases`
    or `error`. ``schedule``: masks that change during training (`plantseek.during_training`)."""
    trainer = settings.trainer or batched_train_runs
    if schedule is None:
        trainer(runs, masks, settings, epochs, desc=desc, start=start)
        return
    if "schedule" not in inspect.signature(trainer).parameters:
        raise ValueError("this network family's trainer cannot change masks during training: the during-training "
                         "protocols (gradual, dynamic) run on the MLP tasks")
    trainer(runs, masks, settings, epochs, desc=desc, start=start, schedule=schedule)


def batched_train_runs(runs: list[Run], masks: list[Mask], settings: Settings, epochs: int, desc: str = "train",
                       start: list[tuple[list[Tensor], list[Tensor]]] | None = None,
                       schedule: "_train.MaskSchedule | None" = None) -> None:
    """Train the runs together from their planted weights (or `start`), setting `weights`/`biases` or `error`:
    the MLP family's training block, one batched computation (`plantseek.train`).

    With ``settings.rescale == "fit"`` each run starts from its masked network rescaled by the rule of
    `plantseek.rescale` (fitted on its training data); the run's `extra["rescale"]` keeps the `Rescale` (None
    when skipped) so that pruners can score the trained network in its planted parametrisation.
    """
    if not runs:
        return
    t0 = time.perf_counter()
    if start is None:
        start = [(r.net.weights, r.net.biases) for r in runs]
    if settings.rescale != "none":
        start = [rescaled_start(r, m, w, b, settings.task.kind, balance=settings.rescale == "fit")
                 for r, m, (w, b) in zip(runs, masks, start)]
    W, B = _batching.stack_params(start)
    M = _batching.stack_masks(masks)
    x = torch.stack([r.data.x_train for r in runs])
    y = torch.stack([r.data.y_train for r in runs])
    res = _train.train(W, B, M, x, y, kind=settings.task.kind, generators=[r.train_generator for r in runs],
                       config=settings.train_config(epochs), progress=settings.progress, desc=desc,
                       labels=[r.label for r in runs], schedule=schedule)
    share = (time.perf_counter() - t0) / len(runs)
    for k, r in enumerate(runs):
        r.time_s += share
        if res.failed[k] is not None:
            r.error = res.failed[k]
        else:
            r.weights, r.biases = _batching.unstack(res.weights, res.biases, k)
            r.extra["train_loss"] = res.train_loss[k]


def rescaled_start(run: Run, mask: Mask, weights: list[Tensor], biases: list[Tensor], kind: str,
                   balance: bool = True) -> tuple[list[Tensor], list[Tensor]]:
    """The masked network `weights`/`biases` under `mask`, rescaled by the fitted rule (its hidden neurons then
    balanced unless ``balance=False``; unchanged when the rule skips it); records the `Rescale` (or None) in
    ``run.extra["rescale"]`` and its g in ``rescale_factor``."""
    out = _train.masked_outputs([w.unsqueeze(0) for w in weights], [b.unsqueeze(0) for b in biases],
                                [(wm.unsqueeze(0), bm.unsqueeze(0)) for wm, bm in mask],
                                run.data.x_train.unsqueeze(0))[0]
    c = fit_factors(out, run.data.y_train, kind)
    if c is None:
        run.extra["rescale"] = None
        run.extra["rescale_factor"] = 1.0
        return list(weights), list(biases)
    rs = Rescale.from_factors(c, [w.shape[0] for w in weights])
    if balance:
        rs = rs.balanced(weights, biases, mask)
    run.extra["rescale"] = rs
    run.extra["rescale_factor"] = rs.g
    return rs.apply(weights, biases)


def planted_parametrisation(run: Run) -> tuple[list[Tensor], list[Tensor]]:
    """The run's trained weights with its last rescale divided out: the network a pruner scores (it computes
    the same function up to the output factors, and biases rank against weights as in the planted network)."""
    rs = run.extra.get("rescale")
    if rs is None:
        return list(run.weights), list(run.biases)
    return rs.divide_out(run.weights, run.biases)


def train_with_dense(live: list[Run], masks: list[Mask], dense: list[Run], settings: Settings, epochs: int,
                     desc: str) -> None:
    """Train pruned runs and dense baselines in one batch (`plantseek.train` gives the networks with nothing
    pruned their own block, so a sparse stack keeps its sparse path)."""
    train_runs(live + list(dense), masks + [full_mask(r.net) for r in dense], settings, epochs, desc=desc)


def _batch_key(r: Run):
    """Runs whose pruners can search together (a `prune_many` method, same class or `batch_family`, options,
    scope, bias option). A family's `prune_many` gets each run's own pruner (``pruners=``): edge-popup and
    edge-popup-annealed differ only in their density schedule and search as one batch."""
    many = getattr(r.pruner, "prune_many", None)
    if not callable(many) or not all(w.dim() == 2 for w in r.net.weights):
        return None
    opts = tuple(sorted((k, repr(v)) for k, v in dict(getattr(r.pruner, "options", {}) or {}).items()))
    return (getattr(r.pruner, "batch_family", type(r.pruner)), opts, r.scope, r.prune_bias)


def _pruned(runs: list[Run], density_of: Callable[[Run], float], masks: dict[int, Mask] | None = None) -> None:
    """Prune every live run; pruners with `prune_many` (edge-popup) search together in one batched call."""
    groups: dict[Any, list[int]] = {}
    for k, r in enumerate(runs):
        if r.ok:
            groups.setdefault(_batch_key(r) or ("single", k), []).append(k)
    for key, idx in groups.items():
        if key[0] != "single" and len(idx) > 1:
            members = [runs[k] for k in idx]
            t0 = time.perf_counter()
            kwargs: dict[str, Any] = {"prune_bias": members[0].prune_bias,
                                      "generators": [r.prune_generator for r in members],
                                      "masks": [None if masks is None else masks[k] for k in idx]}
            if members[0].scope is not None:
                kwargs["scope"] = members[0].scope
            if getattr(members[0].pruner, "batch_family", None) is not None:
                kwargs["pruners"] = [r.pruner for r in members]
            try:
                found = members[0].pruner.prune_many([r.net for r in members], [r.data for r in members],
                                                     [density_of(r) for r in members], **kwargs)
            except Exception:  # noqa: BLE001 - fall back to one by one
                found = None
            share = (time.perf_counter() - t0) / len(members)
            if found is not None:
                for k, r, m in zip(idx, members, found):
                    r.time_s += share
                    if isinstance(m, BaseException):
                        r.error = m
                        continue
                    try:
                        r.mask = _checked(r, m, None if masks is None else masks[k], density_of(r))
                    except Exception as exc:  # noqa: BLE001
                        r.error = exc
                continue
        for k in idx:
            r = runs[k]
            t0 = time.perf_counter()
            try:
                r.mask = prune_run(r, density_of(r), None if masks is None else masks[k])
            except Exception as exc:  # noqa: BLE001 - a failing run must not stop the group
                r.error = exc
            r.time_s += time.perf_counter() - t0


# ------------------------------------------------------------------------------------------------ registry

_PROTOCOLS: dict[str, type] = {}


def register(name: str):
    """Class decorator adding a `Protocol` subclass under `name`."""
    def wrap(cls):
        if name in _PROTOCOLS and _PROTOCOLS[name] is not cls:
            raise ValueError(f"protocol {name!r} is already registered")
        cls.name = name
        _PROTOCOLS[name] = cls
        return cls
    return wrap


def _adopt(name: str, obj) -> None:
    """An entry point that names an unregistered Protocol subclass registers it under the entry point's name."""
    if isinstance(obj, type) and issubclass(obj, Protocol) and obj not in _PROTOCOLS.values():
        register(name)(obj)


_PLUGINS = EntryPoints("plantseek.protocols", "protocol", _adopt)


# built-in protocols defined in modules that build on this one (imported on first use of the registry)
_BUILT_IN_MODULES = ("plantseek.during_training",)


def _registry() -> dict[str, type]:
    """The registry, with the built-in protocols of other modules (`plantseek.during_training`) and the installed
    plugins (entry points of ``plantseek.protocols``) loaded on first use."""
    import importlib

    for module in _BUILT_IN_MODULES:
        importlib.import_module(module)
    _PLUGINS.load()
    return _PROTOCOLS


def available() -> list[str]:
    """Names of the registered protocols, installed plugins included."""
    return sorted(_registry())


def descriptions() -> dict[str, str]:
    registry = _registry()
    out = {}
    for n in available():
        doc = inspect.getdoc(registry[n]) or ""
        out[n] = doc.splitlines()[0] if doc else ""
    return out


def get(name: "str | Protocol") -> "Protocol":
    """A protocol by name; unknown names raise ValueError listing the known ones."""
    if isinstance(name, Protocol):
        return name
    registry = _registry()
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"unknown protocol {name!r}; available: {', '.join(available())}")
    return registry[name]()


class Protocol:
    """A way to turn pruner masks into a measured network. Subclasses implement `run(runs, dense, settings)`.

    After `run`, every run that did not fail has `mask`, `weights`, `biases` (the parameters to measure, zero
    where pruned) and optionally `extra` metrics; every dense-baseline run (mask all True, no pruner) has its
    trained `weights`/`biases`. `scaled` protocols are measured through a fitted output scale.
    """

    name = ""
    scaled = False  # strong: outputs are read through a scale fitted on training data

    def run(self, runs: list[Run], dense: list[Run], settings: Settings) -> None:
        raise NotImplementedError

    @staticmethod
    def train_dense(dense: list[Run], settings: Settings) -> None:
        train_runs(dense, [full_mask(r.net) for r in dense], settings, settings.epochs, desc="dense")


@register("singleshot")
class SingleShot(Protocol):
    """Prune once at initialisation, then train the kept weights (weak tickets)."""

    def run(self, runs, dense, settings):
        _pruned(runs, lambda r: r.density)
        live = [r for r in runs if r.ok]
        train_with_dense(live, [r.mask for r in live], dense, settings, settings.epochs, desc="singleshot")


@register("multishot")
class MultiShot(Protocol):
    """Rounds of train, prune to density^(r/rounds) and rewind to the planted weights; then train (IMP-style)."""

    def run(self, runs, dense, settings):
        R = int(settings.rounds)
        if R < 1:
            raise ValueError(f"multishot needs rounds >= 1 (got {R})")
        for r in runs:
            r.mask = full_mask(r.net)
        planted = {id(r): r.net for r in runs}
        for rnd in range(1, R + 1):
            live = [r for r in runs if r.ok]
            if not live:
                break
            train_runs(live, [r.mask for r in live], settings, settings.round_epochs, desc=f"multishot round {rnd}/{R}")
            live = [r for r in live if r.ok]
            for r in live:
                t0 = time.perf_counter()
                net0 = planted[id(r)]
                tw, tb = planted_parametrisation(r)
                trained = replace(net0, weights=tw, biases=tb)
                try:
                    r.net = trained  # the pruner scores the trained weights
                    r.mask = prune_run(r, r.density ** (rnd / R), r.mask)
                except Exception as exc:  # noqa: BLE001
                    r.error = exc
                finally:
                    r.net = net0  # rewind: kept weights go back to their planted values
                    r.weights = r.biases = None
                r.time_s += time.perf_counter() - t0
        live = [r for r in runs if r.ok]
        train_with_dense(live, [r.mask for r in live], dense, settings, settings.epochs, desc="multishot final")


@register("strong")
class Strong(Protocol):
    """Choose a mask only: kept weights keep their planted values; outputs through a fitted scale."""

    scaled = True

    def run(self, runs, dense, settings):
        _pruned(runs, lambda r: r.density)
        for r in runs:
            if r.ok:
                r.weights = [w * wm for w, (wm, _) in zip(r.net.weights, r.mask)]
                r.biases = [b * bm for b, (_, bm) in zip(r.net.biases, r.mask)]
        self.train_dense(dense, settings)

