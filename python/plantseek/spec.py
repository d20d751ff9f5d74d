"""Run configuration: frozen dataclasses that own every option's default, doc, allowed values and check.

A run is a `RunSpec` (what is planted, pruned and measured: its identity) with a `TrainSpec` (how every
training phase trains), a `DataSpec` (the samples drawn) and a `TicketSpec` (the learned ticket of the conv
family's tasks); an `ExecSpec` says where and how it runs (device, progress bar, data folder), which is not part
of its identity. A field that applies to one network family only (`plantseek.families`: "mlp", "conv") says so
in its metadata (``family``); the family refuses the others' fields when they are not at their defaults. `seek`, the CLI (`plantseek seek`) and sweep files all build
these, so each option's default, one-line doc and allowed values are written once, here.

A run's key (`run_key`) is the SHA-256 of the canonical JSON of the identity fields that differ from their
defaults (as open_lth does): adding an option with a default keeps every existing key. Keys of the previous
scheme (`legacy_run_key`: the full configuration plus the package version) are migrated by the store.

This module imports nothing heavy at import time; the registry checks (task, pruner, protocol, init names,
a task's minimum depth and noise range) import the registries when a spec is built.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping

from . import arguments as _args

OPTIMIZERS = ("adam", "sgd")
IMPLS = ("auto", "dense", "sparse")
RESCALE_MODES = ("fit", "fit-even", "none")
SCOPES = ("global", "layer")
DTYPES = ("float32", "float64")


def _registry(module: str) -> Callable[[], tuple]:
    """The names of a registry, read when asked (a registered plugin is a valid value)."""
    def names() -> tuple:
        import importlib

        return tuple(importlib.import_module(f"plantseek.{module}").available())
    return names


def option(default: Any, doc: str, *, choices: tuple | Callable[[], tuple] | None = None,
           legacy: Any = dataclasses.MISSING, group: bool = False, plugin: bool = False,
           family: str | None = None, protocols: tuple[str, ...] | None = None) -> Any:
    """A spec field: its default, its one-line doc (the CLI's help), its allowed values (a tuple, or a
    callable that reads a registry), the value a record written before the option existed had (`legacy`),
    whether runs must agree on it to train together (`group`), whether plugins extend its registry
    (`plugin`: the CLI leaves the check to the spec, which lists what is registered when the run starts), and
    the network family it applies to (`family`; None: every family) and the protocols that read it (`protocols`;
    None: every protocol; a run of another protocol must leave it at its default)."""
    meta = {"doc": doc, "choices": choices, "group": group, "plugin": plugin, "family": family,
            "protocols": protocols}
    if legacy is not dataclasses.MISSING:
        meta["legacy"] = legacy
    if isinstance(default, dict):
        return field(default_factory=lambda: MappingProxyType(dict(default)), metadata=meta)
    return field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> tuple | None:
    """The allowed values of a field, or None when any value its check accepts may be given."""
    c = f.metadata.get("choices")
    return tuple(c()) if callable(c) else c


# ------------------------------------------------------------------------------------------------ checks

def _real(name: str, value: Any, *, positive: bool = False, lo: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if positive and not v > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if lo is not None and v < lo:
        raise ValueError(f"{name} must be >= {lo}, got {value!r}")
    return v


DURING = ("gradual", "dynamic")  # the during-training protocols (`plantseek.during_training`)


def _fraction(name: str, value: Any) -> float:
    v = _real(name, value)
    if not 0 <= v <= 1:
        raise ValueError(f"{name} must be a fraction of the training's steps in [0, 1], got {value!r}")
    return v


def _choice(name: str, value: Any, allowed: tuple) -> Any:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"unknown {name} {value!r}; available: {', '.join(map(str, allowed))}")
    return value


def _jsonable(name: str, value: Any) -> Any:
    """A JSON-able, canonical copy of an option value (mappings sorted, tuples as lists), else ValueError."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if not math.isfinite(float(value)):
            raise ValueError(f"{name}: non-finite number {value!r}")
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(name, v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_jsonable(name, v) for v in value]
    raise ValueError(f"{name}: unsupported value {value!r} of type {type(value).__name__}")


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # frozen dataclasses normalise their own fields in __post_init__


# ------------------------------------------------------------------------------------------------ specs

@dataclass(frozen=True)
class PrunerSpec:
    """The pruner: a registered name and its options (e.g. ``iterations=1`` for SynFlow)."""

    name: str = option("synflow", "pruner name (plantseek pruners)", choices=_registry("pruners"), plugin=True)
    options: Mapping[str, Any] = option({}, "options of the named pruner (e.g. iterations=1)")

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"pruner must be a registered pruner name, got {self.name!r}")
        if self.options is None:
            _set(self, "options", MappingProxyType({}))
        if not isinstance(self.options, Mapping):
            raise ValueError(f"pruner_options must be a mapping of option names to values, got {self.options!r}")
        _set(self, "options", MappingProxyType(_jsonable("pruner_options", dict(self.options))))

    @property
    def label(self) -> str:
        """The name with its options, e.g. ``synflow[iterations=100]`` (how results are grouped)."""
        if not self.options:
            return self.name
        inner = ",".join(f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}"
                         for k, v in sorted(self.options.items()))
        return f"{self.name}[{inner}]"


@dataclass(frozen=True)
class TrainSpec:
    """How every training phase trains (the paper's defaults: Adam, lr 1e-3, batch 32, 10 epochs)."""

    epochs: int = option(10, "training epochs (of the final phase under multishot)", group=True)
    lr: float = option(1e-3, "learning rate", group=True)
    batch_size: int = option(32, "training batch size", group=True)
    optimizer: str = option("adam", "optimiser of every training phase", choices=OPTIMIZERS, group=True)
    rounds: int = option(10, "multishot rounds", group=True)
    round_epochs: int = option(5, "multishot epochs per round", group=True)
    update_every: int = option(100, "gradual and dynamic: optimiser steps between two mask updates", group=True,
                               protocols=DURING)
    update_begin: float = option(0.0, "gradual and dynamic: the fraction of training's steps where mask updates "
                                      "begin", group=True, protocols=DURING)
    update_end: float = option(0.75, "gradual and dynamic: the fraction of training's steps where mask updates "
                                     "end (gradual reaches the run's density there; dynamic's drop fraction is "
                                     "annealed to 0 there)", group=True, protocols=DURING)
    drop_fraction: float = option(0.3, "dynamic: fraction of the kept weights dropped and regrown at the first "
                                       "update (cosine-annealed to 0 at update_end), in (0, 1)", group=True,
                                  protocols=("dynamic",))
    grow: str = option("gradient", "dynamic: where dropped weights regrow: 'gradient' (largest dense-gradient "
                                   "magnitude, RigL) or 'random' (SET)", choices=("gradient", "random"), group=True,
                         protocols=("dynamic",))
    gradual_initial: float = option(1.0, "gradual: the density pruning starts from (1: dense; below 1 the run's "
                                         "pruner gives the start)", group=True, protocols=("gradual",))
    dtype: str = option("float32", "float32 or float64", choices=DTYPES, group=True)
    impl: str = option("auto", "masked layer implementation (MLP tasks)", choices=IMPLS, group=True, family="mlp")
    rescale: str = option(
        "fit", "weak protocols: 'fit' rescales each masked network to its fitted output scale and balances its "
               "neurons before training (function-preserving); 'fit-even' only spreads the scale over the "
               "layers; 'none' is the paper's protocol",
        choices=RESCALE_MODES, legacy="none", group=True)

    def __post_init__(self) -> None:
        _set(self, "epochs", _args.integer("epochs", self.epochs, 0))
        _set(self, "lr", _real("lr", self.lr, positive=True))
        _set(self, "batch_size", _args.integer("batch_size", self.batch_size))
        _set(self, "rounds", _args.integer("rounds", self.rounds))
        _set(self, "round_epochs", _args.integer("round_epochs", self.round_epochs, 0))
        _set(self, "update_every", _args.integer("update_every", self.update_every))
        for name in ("update_begin", "update_end"):
            _set(self, name, _fraction(name, getattr(self, name)))
        if self.update_begin >= self.update_end:
            raise ValueError(f"update_begin ({self.update_begin}) must come before update_end ({self.update_end})")
        _set(self, "drop_fraction", _real("drop_fraction", self.drop_fraction, positive=True))
        if not self.drop_fraction < 1:
            raise ValueError(f"drop_fraction must lie in (0, 1), got {self.drop_fraction!r}")
        _set(self, "gradual_initial", _real("gradual_initial", self.gradual_initial, positive=True))
        if self.gradual_initial > 1:
            raise ValueError(f"gradual_initial must be a density in (0, 1], got {self.gradual_initial!r}")
        if isinstance(self.dtype, str) and self.dtype.startswith("torch."):
            _set(self, "dtype", self.dtype[len("torch."):])
        for name, allowed in (("optimizer", OPTIMIZERS), ("dtype", DTYPES), ("impl", IMPLS),
                              ("grow", ("gradient", "random"))):
            _choice(name, getattr(self, name), allowed)
        if not isinstance(self.rescale, str) or self.rescale not in RESCALE_MODES:
            raise ValueError(f"rescale must be one of {', '.join(repr(m) for m in RESCALE_MODES)}, "
                             f"got {self.rescale!r}")


@dataclass(frozen=True)
class DataSpec:
    """The samples drawn for the task (90/10 train/test split) and for the pruner."""

    n_samples: int = option(10_000, "samples drawn for the task (90/10 train/test split; MLP tasks)", group=True,
                            family="mlp")
    noise: float = option(0.01, "target noise: the standard deviation (regression) or the label-flip "
                                "probability (classification)")
    pruning_samples: int = option(40, "samples the pruner scores on")
    n_train: int | None = option(None, "image tasks: a seeded subsample of this many training images; unset: all",
                                 group=True, family="conv")
    n_test: int | None = option(None, "image tasks: a seeded subsample of this many test images; unset: all",
                                group=True, family="conv")

    def __post_init__(self) -> None:
        _set(self, "n_samples", _args.integer("n_samples", self.n_samples, 2))
        if isinstance(self.noise, numbers.Real) and not isinstance(self.noise, bool):
            _set(self, "noise", float(self.noise))  # its range is the task's (`checked`)
        _set(self, "pruning_samples", _args.integer("pruning_samples", self.pruning_samples))
        for key in ("n_train", "n_test"):
            if getattr(self, key) is not None:
                _set(self, key, _args.integer(key, getattr(self, key)))


@dataclass(frozen=True)
class TicketSpec:
    """The conv family's learned ticket (`plantseek.image.ticket`): a small network of the ``layout`` at
    ``ticket_width`` is trained, pruned to ``ticket_target_density`` by ``ticket_pruner`` and fine-tuned, then
    planted into the run's host (the same layout, ``width`` channels in its first layer). Adam trains it."""

    layout: str | None = option(None, "image tasks: model layout (plantseek.image.models); unset: the task's",
                                choices=_registry("image.models"), group=True, family="conv")
    ticket_width: float = option(1.0, "image tasks: width multiplier of the small network the ticket is learned in",
                                 family="conv")
    ticket_pruner: str = option("synflow", "image tasks: pruner that finds the ticket in the small network",
                                choices=_registry("pruners"), plugin=True, family="conv")
    ticket_pruner_options: Mapping[str, Any] = option({}, "image tasks: options of the ticket pruner",
                                                      family="conv")
    ticket_target_density: float = option(0.05, "image tasks: density the small network is pruned to (the "
                                                "ticket's, in the small network)", family="conv")
    ticket_scope: str = option("global", "image tasks: scope of the ticket pruner", choices=SCOPES, family="conv")
    ticket_train_epochs: int = option(40, "image tasks: training epochs of the small dense network", family="conv")
    ticket_finetune_epochs: int = option(40, "image tasks: fine-tuning epochs of the pruned ticket", family="conv")
    ticket_lr: float = option(1e-3, "image tasks: learning rate of the small network (Adam)", family="conv")
    ticket_batch_size: int = option(32, "image tasks: batch size of the small network", family="conv")

    def __post_init__(self) -> None:
        if self.layout is not None and (not isinstance(self.layout, str) or not self.layout):
            raise ValueError(f"layout must be a layout name (plantseek.image.models) or None, got {self.layout!r}")
        _set(self, "ticket_width", _real("ticket_width", self.ticket_width, positive=True))
        if not isinstance(self.ticket_pruner, str) or not self.ticket_pruner:
            raise ValueError(f"ticket_pruner must be a registered pruner name, got {self.ticket_pruner!r}")
        if self.ticket_pruner_options is None:
            _set(self, "ticket_pruner_options", MappingProxyType({}))
        if not isinstance(self.ticket_pruner_options, Mapping):
            raise ValueError(f"ticket_pruner_options must be a mapping of option names to values, got "
                             f"{self.ticket_pruner_options!r}")
        _set(self, "ticket_pruner_options",
             MappingProxyType(_jsonable("ticket_pruner_options", dict(self.ticket_pruner_options))))
        d = _real("ticket_target_density", self.ticket_target_density)
        if not 0 < d <= 1:
            raise ValueError(f"ticket_target_density must lie in (0, 1], got {self.ticket_target_density!r}")
        _set(self, "ticket_target_density", d)
        _choice("ticket_scope", self.ticket_scope, SCOPES)
        for key in ("ticket_train_epochs", "ticket_finetune_epochs"):
            _set(self, key, _args.integer(key, getattr(self, key), 0))
        _set(self, "ticket_lr", _real("ticket_lr", self.ticket_lr, positive=True))
        _set(self, "ticket_batch_size", _args.integer("ticket_batch_size", self.ticket_batch_size))


@dataclass(frozen=True)
class RunSpec:
    """One run's identity: the task and network shape, the pruner and its density, the protocol, the seed."""

    task: str = option("circle", "task name (plantseek tasks)", choices=_registry("tasks"), group=True, plugin=True)
    depth: int = option(4, "number of linear layers (the paper's depth - 1; MLP tasks: an image task's layout "
                           "fixes it)", group=True, family="mlp")
    width: int | tuple = option(100, "hidden width, or a comma-separated list (one per hidden layer); image tasks: "
                                     "the host's first-layer channels (the layout scales with it)", group=True)
    pruner: PrunerSpec = field(default_factory=PrunerSpec)
    density: float | str = option(0.1, "kept fraction in (0, 1], or 'ticket' (the planted ticket's density)")
    protocol: str = option("singleshot", "pruning protocol (plantseek protocols: singleshot, multishot, strong, "
                                         "gradual, dynamic)", choices=_registry("protocols"), group=True, plugin=True)
    seed: int = option(0, "seed of the host, the planting, the data, the pruner and the training")
    scope: str | None = option(None, "pruning scope; unset means the pruner's own", choices=SCOPES)
    prune_bias: bool = option(True, "prune the biases with the weights")
    init: str = option("he-scaled", "host initialisation", choices=_registry("host_init"))
    dense_baseline: bool = option(True, "train the dense host as a baseline")
    train: TrainSpec = field(default_factory=TrainSpec)
    data: DataSpec = field(default_factory=DataSpec)
    ticket: TicketSpec = field(default_factory=TicketSpec)

    def __post_init__(self) -> None:
        _set(self, "depth", _args.depth(self.depth))
        w = _args.width(self.width)
        _set(self, "width", tuple(w) if isinstance(w, list) else w)
        _set(self, "density", _args.parse_density(self.density))
        _set(self, "seed", _args.seed(self.seed))
        if self.scope is not None and self.scope not in SCOPES:
            raise ValueError(f"scope must be 'global', 'layer' or None (the pruner's default), got {self.scope!r}")
        for key in ("prune_bias", "dense_baseline"):
            _args.check_bool(key, getattr(self, key))
        for name, sub, cls in (("pruner", self.pruner, PrunerSpec), ("train", self.train, TrainSpec),
                               ("data", self.data, DataSpec), ("ticket", self.ticket, TicketSpec)):
            if not isinstance(sub, cls):
                raise TypeError(f"RunSpec.{name} must be a {cls.__name__}, got {type(sub).__name__}")

    # ---- the registries (a registered task, pruner, protocol or init is valid)
    def checked(self, *, registered_pruner: bool = True) -> "RunSpec":
        """This spec after the registry checks: known task/pruner/protocol/init names, what the task's network
        family can run (`plantseek.families`: its options, protocols and shapes), the task's minimum depth and
        noise range. Returns a spec with the registries' canonical names. `registered_pruner=False` is for a
        configured pruner object, whose name need not be registered."""
        from . import families, pruners, protocols, tasks

        task = tasks.get(self.task)  # unknown -> ValueError listing the known ones
        proto = protocols.get(self.protocol)
        families.of(task).check(dataclasses.replace(self, protocol=proto.name), task)  # depth, init, shapes, ...
        _check_protocol_options(self, proto.name)
        noise = task.check_noise(self.data.noise)
        if registered_pruner and self.pruner.name not in pruners.available():
            raise ValueError(f"unknown pruner {self.pruner.name!r}; available: {', '.join(pruners.available())}")
        return dataclasses.replace(self, task=task.name, protocol=proto.name,
                                   data=dataclasses.replace(self.data, noise=noise))

    # ---- flat form: the keyword arguments of `seek`, the CLI's options, a sweep file's keys
    @classmethod
    def from_flat(cls, flat: Mapping[str, Any]) -> "RunSpec":
        """A spec from flat options (`seek`'s keyword names); unknown names raise TypeError."""
        unknown = sorted(set(flat) - set(FLAT))
        if unknown:
            raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(FLAT))}")
        parts: dict[str, dict] = {"run": {}, "pruner": {}, "train": {}, "data": {}, "ticket": {}}
        for key, value in flat.items():
            part, name = FLAT[key]
            parts[part][name] = value
        return cls(**parts["run"], pruner=PrunerSpec(**parts["pruner"]), train=TrainSpec(**parts["train"]),
                   data=DataSpec(**parts["data"]), ticket=TicketSpec(**parts["ticket"]))

    def flat(self) -> dict[str, Any]:
        """Every identity option under its flat name, in declaration order (JSON-able)."""
        out: dict[str, Any] = {}
        for key, (part, name) in FLAT.items():
            value = getattr(self if part == "run" else getattr(self, part), name)
            out[key] = dict(value) if isinstance(value, Mapping) else list(value) if isinstance(value, tuple) else value
        return out

    def to_dict(self) -> dict[str, Any]:
        """Nested form: the run's fields with ``pruner``, ``train``, ``data`` and ``ticket`` as sub-dicts."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["width"] = list(self.width) if isinstance(self.width, tuple) else self.width
        d["pruner"] = {"name": self.pruner.name, "options": dict(self.pruner.options)}
        d["train"] = dataclasses.asdict(self.train)
        d["data"] = dataclasses.asdict(self.data)
        d["ticket"] = {f.name: getattr(self.ticket, f.name) for f in dataclasses.fields(self.ticket)}
        d["ticket"]["ticket_pruner_options"] = dict(self.ticket.ticket_pruner_options)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunSpec":
        """The inverse of `to_dict`."""
        d = dict(d)
        pruner, train, data, ticket = (dict(d.pop(k, None) or {}) for k in ("pruner", "train", "data", "ticket"))
        return cls(**d, pruner=PrunerSpec(**pruner), train=TrainSpec(**train), data=DataSpec(**data),
                   ticket=TicketSpec(**ticket))

    @property
    def key(self) -> str:
        """The run's identity: see `run_key`."""
        return run_key(self.flat())

    def group_key(self) -> str:
        """Runs with equal group keys share task, shape, protocol and training settings and train together."""
        flat = self.flat()
        return canonical_json({k: flat[k] for k in GROUP_KEYS})


@dataclass(frozen=True)
class ExecSpec:
    """Where and how a run executes; not part of its identity (a run is the same run on any device)."""

    device: str = option("auto", "auto, cpu, cuda, cuda:N")
    progress: bool = option(True, "show a progress bar")
    data_dir: str | None = option(None, "image tasks: folder holding the data (cifar10: cifar-10-batches-py); "
                                        "unset: PLANTSEEK_DATA, else ./data", family="conv")

    def __post_init__(self) -> None:
        if not isinstance(self.device, str) or not self.device:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        _args.check_bool("progress", self.progress)
        if self.data_dir is not None:
            import os

            if not isinstance(self.data_dir, (str, os.PathLike)) or not str(self.data_dir):
                raise ValueError(f"data_dir must be a folder path or None, got {self.data_dir!r}")
            _set(self, "data_dir", str(self.data_dir))


def unread_option(run: RunSpec, scope: str, name: str) -> tuple[str, Any, tuple[str, ...]] | None:
    """The first option set away from its default although it applies only elsewhere: its `option(family=...)`
    (``scope="family"``) or `option(protocols=...)` (``scope="protocols"``) metadata does not name ``name``.
    Returns (option, value, the families or protocols that read it), or None."""
    flat, base = run.flat(), defaults()
    for key, f in fields():
        readers = f.metadata.get(scope)
        if readers is None or key not in flat or flat[key] == base[key]:
            continue
        readers = (readers,) if isinstance(readers, str) else tuple(readers)
        if name not in readers:
            return key, flat[key], readers
    return None


def _check_protocol_options(run: RunSpec, protocol: str) -> None:
    """ValueError when an option that only some protocols read (`option(protocols=...)`) is set for another."""
    hit = unread_option(run, "protocols", protocol)
    if hit is not None:
        key, value, readers = hit
        raise ValueError(f"option {key}={value!r} does not apply to protocol {protocol!r}: only "
                         f"{', '.join(readers)} read it; leave it at its default ({defaults()[key]!r}) "
                         f"(in a sweep file, set it in the [[experiment]] of those protocols)")


def _flat_layout() -> dict[str, tuple[str, str]]:
    """flat option name -> (part, field name); the order is `seek`'s keyword order."""
    out: dict[str, tuple[str, str]] = {}
    for f in dataclasses.fields(RunSpec):
        if f.name == "pruner":
            out["pruner"] = ("pruner", "name")
            out["pruner_options"] = ("pruner", "options")
        elif f.name in ("train", "data", "ticket"):
            sub = {"train": TrainSpec, "data": DataSpec, "ticket": TicketSpec}[f.name]
            out.update({g.name: (f.name, g.name) for g in dataclasses.fields(sub)})
        else:
            out[f.name] = ("run", f.name)
    return out


FLAT: dict[str, tuple[str, str]] = _flat_layout()
_PART_CLASS = {"run": RunSpec, "pruner": PrunerSpec, "train": TrainSpec, "data": DataSpec, "ticket": TicketSpec}
EXEC_KEYS = tuple(f.name for f in dataclasses.fields(ExecSpec))


def fields() -> Iterator[tuple[str, dataclasses.Field]]:
    """(flat name, dataclass field) of every option, identity first, then execution: what the CLI shows."""
    for key, (part, name) in FLAT.items():
        yield key, {f.name: f for f in dataclasses.fields(_PART_CLASS[part])}[name]
    for f in dataclasses.fields(ExecSpec):
        yield f.name, f


def _default(f: dataclasses.Field) -> Any:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return dict(value) if isinstance(value, Mapping) else value


def defaults() -> dict[str, Any]:
    """Every option's default under its flat name (identity and execution)."""
    return {key: _default(f) for key, f in fields()}


GROUP_KEYS: tuple[str, ...] = tuple(k for k, f in fields() if f.metadata.get("group"))
BOOLEAN_KEYS: tuple[str, ...] = tuple(k for k, v in defaults().items() if isinstance(v, bool))


def doc_of(key: str) -> str:
    """The one-line doc of flat option `key`."""
    return dict(fields())[key].metadata["doc"]


def is_plugin(key: str) -> bool:
    """Whether plugins extend the registry of flat option `key` (task, pruner, protocol)."""
    return bool(dict(fields())[key].metadata.get("plugin"))


def choices(key: str) -> tuple | None:
    """The allowed values of flat option `key`, or None when any value of its type may be given."""
    return choices_of(dict(fields())[key])


def split(options: Mapping[str, Any]) -> tuple[RunSpec, ExecSpec]:
    """Flat options (identity and execution mixed, as `seek` takes them) -> (RunSpec, ExecSpec)."""
    options = dict(options)
    exec_opts = {k: options.pop(k) for k in EXEC_KEYS if k in options}
    return RunSpec.from_flat(options), ExecSpec(**exec_opts)


# ------------------------------------------------------------------------------------------------ keys

def canonical_json(obj: Any) -> str:
    """Canonical JSON: sorted keys, no whitespace, repr floats; equal configurations give equal strings."""
    return json.dumps(_jsonable("configuration", obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)


def identity(flat: Mapping[str, Any], *, legacy: bool = False) -> dict[str, Any]:
    """The identity options of flat options that differ from their defaults, canonicalised; execution options
    are dropped. With ``legacy``, an option a record does not mention takes the value it had before the
    option existed (its field's ``legacy``), e.g. ``rescale="none"`` for records written before rescaling."""
    spec_fields = dict(fields())
    unknown = sorted(set(flat) - set(spec_fields))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}")
    values = {k: v for k, v in flat.items() if k not in EXEC_KEYS}
    if legacy:
        for key in FLAT:
            f = spec_fields[key]
            if key not in values and "legacy" in f.metadata:
                values[key] = f.metadata["legacy"]
    full = RunSpec.from_flat(values).flat()  # fills the defaults and normalises (1 -> 1.0, "TICKET" -> "ticket")
    return {k: v for k, v in full.items() if v != _default(spec_fields[k])}


def run_key(flat: Mapping[str, Any], *, legacy: bool = False) -> str:
    """SHA-256 (hex) of the canonical JSON of the options that differ from their defaults (`identity`)."""
    return hashlib.sha256(canonical_json(identity(flat, legacy=legacy)).encode()).hexdigest()


def legacy_run_key(config: Mapping[str, Any], version: str) -> str:
    """The key of the scheme before `run_key`: SHA-256 of the full configuration and the package version."""
    payload = {"config": dict(config), "plantseek_version": version}
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()
