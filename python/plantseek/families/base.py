"""The network-family interface: what `plantseek.seek` asks of a family of networks, and the registry.

A *family* (MLP, VGG-style conv) owns everything of a run that depends on how its networks are built and run:

- its **ticket source** and planting: `plant_key` / `plant` give the planted network (CPU, float64) with its
  ``ticket_mask`` and ``output_scale``, `data_key` / `data` the task data (CPU, float64); `plantseek.seek`
  caches both under these keys;
- its **forward**: `forward(net, weights, biases, x)`, the outputs of a network with other parameters;
- its **training block**: `trainer`, the function the protocols train with (`plantseek.protocols.Settings`:
  ``trainer(runs, masks, settings, epochs, desc=..., start=...)`` sets each run's ``weights``/``biases`` or
  its ``error``), and `protocols`, those it can run (None: every registered one);
- its **read-out**: `ticket_metrics`, `outputs` and `functional`, the family's parts of `plantseek.measure`;
- its **checks**: `check` refuses a run spec the family cannot run, before anything is planted: an option
  that applies to another family only (a field whose `plantseek.spec` metadata names another family) when
  it is not at its default, a protocol it cannot run, and what `check_more` adds.

Which family a task belongs to is the task's ``family`` attribute ("mlp" when it has none).
"""
from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Any, Callable

import torch


class LRU(OrderedDict):
    """A small least-recently-used cache (`get_or`)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, make: Callable[[], Any], cache: bool = True):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        if cache:
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)
        return value


class Family:
    """Base class of the network families; see the module doc for the contract."""

    name = ""
    metrics = ""  # the family's name in `plantseek.metric_schema` ("mlp", "image")
    protocols: tuple[str, ...] | None = None  # the protocols it can run; None: every registered one
    trainer: Callable | None = None  # the protocols' training block (None: protocols' batched MLP trainer)

    # ---- checks
    def check(self, run, task) -> None:
        """ValueError naming the option when `run` (a `plantseek.spec.RunSpec`) cannot run in this family."""
        from .. import spec

        hit = spec.unread_option(run, "family", self.name)
        if hit is not None:
            key, value, (owner,) = hit
            raise ValueError(f"option {key}={value!r} does not apply to task {task.name!r} (the {self.name} "
                             f"family): {key} is an option of the {owner} family's tasks ({', '.join(tasks_of(owner))}); "
                             f"leave it at its default ({spec.defaults()[key]!r})")
        if self.protocols is not None and run.protocol not in self.protocols:
            raise ValueError(f"task {task.name!r} (the {self.name} family) cannot run protocol {run.protocol!r}: "
                             f"its networks run {', '.join(self.protocols)}" + self.why_not(run.protocol))
        self.check_more(run, task)

    def why_not(self, protocol: str) -> str:
        """A sentence (with a leading '; ') saying why `protocol` is not among `protocols`."""
        return ""

    def check_more(self, run, task) -> None:
        """Family-specific checks of a run spec (registered names, shapes)."""

    # ---- ticket source, planting and data
    def plant_key(self, cfg: dict) -> tuple:
        raise NotImplementedError

    def plant(self, cfg: dict, data: Callable[[], Any]):
        """The planted network of configuration `cfg` on the CPU in float64; `data()` gives the task data
        (for families whose ticket is learned from it)."""
        raise NotImplementedError

    def cacheable(self, cfg: dict) -> bool:
        """Whether the planted network of `cfg` is small enough to keep in memory."""
        return True

    def data_key(self, cfg: dict) -> tuple:
        raise NotImplementedError

    def data(self, cfg: dict, seed: int):
        """The task data of `cfg` (CPU, float64); `seed` is the run's data stream."""
        raise NotImplementedError

    # ---- running and reading out
    def forward(self, net, weights, biases, x: torch.Tensor) -> torch.Tensor:
        """No-grad outputs of `net`'s layer sequence with parameters `weights`/`biases` on inputs `x`."""
        raise NotImplementedError

    def ticket_metrics(self, task, net, data) -> dict:
        """ticket_test_* of the planted ticket itself (and what the family's ticket source reports)."""
        raise NotImplementedError

    def outputs(self, task, run, scaled: bool) -> dict:
        """The read-out of a finished `plantseek.protocols.Run` (test_loss, test_accuracy, ...)."""
        raise NotImplementedError

    def functional(self, run) -> dict | None:
        """functional_recall where the family defines it, else None."""
        return None

    def check_fits(self, cfg: dict, device: str, what: str) -> None:
        """Refuse a run that cannot fit the device's free memory (`plantseek.memory`), where estimated."""

    def threads(self, cfgs: list[dict]):
        """The CPU-thread context a group of runs trains in (`plantseek.threads`)."""
        return contextlib.nullcontext()

    def clear_caches(self) -> None:
        """Forget what the family caches itself (learned tickets)."""


# ------------------------------------------------------------------------------------------------ registry

_FAMILIES: dict[str, Family] = {}


def register(name: str):
    """Class decorator adding a `Family` subclass (one instance) under `name`."""
    def wrap(cls):
        if name in _FAMILIES and type(_FAMILIES[name]) is not cls:
            raise ValueError(f"network family {name!r} is already registered")
        cls.name = name
        _FAMILIES[name] = cls()
        return cls
    return wrap


def available() -> list[str]:
    """Names of the registered families."""
    _load()
    return sorted(_FAMILIES)


def get(name: str) -> Family:
    """A family by name; unknown names raise ValueError listing the known ones."""
    _load()
    if name not in _FAMILIES:
        raise ValueError(f"unknown network family {name!r}; available: {', '.join(sorted(_FAMILIES))}")
    return _FAMILIES[name]


def of(task) -> Family:
    """The family of a task (a name or a `plantseek.tasks.Task`): its ``family`` attribute, "mlp" without one."""
    from .. import tasks

    t = tasks.get(task) if isinstance(task, str) else task
    return get(getattr(t, "family", "mlp"))


def tasks_of(family: str) -> list[str]:
    """The registered tasks of a family."""
    from .. import tasks

    return [n for n in tasks.available() if getattr(tasks.get(n), "family", "mlp") == family]


def clear_caches() -> None:
    for fam in _FAMILIES.values():
        fam.clear_caches()


def _load() -> None:
    from . import conv, mlp  # noqa: F401  (registration)
