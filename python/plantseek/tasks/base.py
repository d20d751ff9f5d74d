"""The task interface, its data container and the registry of tasks."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .. import arguments as _args
from ..plugins import EntryPoints
from ..tickets import Ticket


@dataclass
class TaskData:
    """Train/test tensors of one task draw (float64 inputs; float64 regression targets or int64 labels)."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "TaskData":
        """Move to `device`; `dtype` converts the inputs and float targets (labels stay int64)."""
        def conv(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)
        return TaskData(conv(self.x_train), conv(self.y_train), conv(self.x_test), conv(self.y_test))

    @property
    def n_train(self) -> int:
        return self.x_train.shape[0]


class Task:
    """A synthetic task: seeded vectorised data, a loss, an evaluation and a ticket builder."""

    name: str = ""
    kind: str = "regression"  # or "classification"
    input_dim: int = 1
    output_dim: int = 1
    min_depth: int = 2
    description: str = ""
    builds_ticket: bool = True  # False for tasks whose ticket is found by training (the image task)

    # -- data
    def check_noise(self, noise) -> float:
        """``noise`` as a float, or ValueError naming the task and its allowed range: for classification the
        probability that a label is flipped (in [0, 1]), for regression a standard deviation (finite, >= 0)."""
        classes = self.kind == "classification"
        ok = not isinstance(noise, bool) and isinstance(noise, numbers.Real) and math.isfinite(noise) and noise >= 0
        if not ok or (classes and noise > 1):
            allowed = ("a number in [0, 1] (the probability that a label is flipped)" if classes
                       else "a finite number >= 0 (the standard deviation of the target noise)")
            raise ValueError(f"task {self.name!r}: noise must be {allowed}, got {noise!r}")
        return float(noise)

    def inputs(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Inputs uniform on [-1, 1]^d (float64)."""
        return torch.rand(n, self.input_dim, generator=generator, dtype=torch.float64) * 2.0 - 1.0

    def target(self, x: torch.Tensor) -> torch.Tensor:
        """The noise-free target for inputs x."""
        raise NotImplementedError

    def corrupt(self, y: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
        """Regression: add Gaussian noise of standard deviation `noise`."""
        if noise == 0:
            return y
        return y + noise * torch.randn(y.shape, generator=generator, dtype=y.dtype)

    def data(self, n: int = 10_000, noise: float = 0.01, seed: int = 0, train_fraction: float = 0.9) -> TaskData:
        """Draw n samples from the task's own generator (global RNG state does not matter) and split them."""
        if n < 2:
            raise ValueError(f"n must be at least 2 (got {n})")
        if not 0 < train_fraction < 1:
            raise ValueError(f"train_fraction must lie in (0, 1) (got {train_fraction})")
        noise = self.check_noise(noise)
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        x = self.inputs(n, g)
        if tuple(x.shape) != (n, self.input_dim):
            raise ValueError(f"task {self.name!r}: inputs(n={n}) gave shape {tuple(x.shape)}, but the task's "
                             f"input_dim is {self.input_dim}: expected ({n}, {self.input_dim})")
        y = self.corrupt(self.target(x), noise, g)
        n_train = min(max(int(round(n * train_fraction)), 1), n - 1)
        return TaskData(x[:n_train], y[:n_train], x[n_train:], y[n_train:])

    # -- loss and evaluation
    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training loss: MSE (mean over samples and outputs) or cross-entropy."""
        if self.kind == "classification":
            return F.cross_entropy(outputs, targets)
        return F.mse_loss(outputs, targets.to(outputs.dtype))

    def evaluate(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict:
        """`loss`, plus `accuracy` for classification (Python floats)."""
        with torch.no_grad():
            out = {"loss": float(self.loss(outputs, targets))}
            if self.kind == "classification":
                out["accuracy"] = float((outputs.argmax(dim=-1) == targets).double().mean())
        return out

    # -- ticket
    def ticket(self, depth: int | None = None) -> Ticket:
        """The task's ticket with `depth` linear layers (default: the task's minimum)."""
        depth = self.min_depth if depth is None else _args.depth(depth)
        if depth < self.min_depth:
            raise ValueError(f"task {self.name!r} needs depth >= {self.min_depth} (got {depth})")
        t = self.build_ticket(depth)
        self._check_ticket(t, depth)
        t.name = self.name
        return t

    def _check_ticket(self, t, depth: int) -> None:
        """A ValueError naming the task unless `build_ticket(depth)` gave a Ticket of that depth that fits the
        task's input_dim and output_dim (a mismatch would otherwise fail deep inside planting or training)."""
        where = f"task {self.name!r} ({type(self).__name__}.build_ticket({depth}))"
        if not isinstance(t, Ticket):
            raise ValueError(f"{where} returned a {type(t).__name__}, not a plantseek.tickets.Ticket")
        for what, want, got in (("input_dim", self.input_dim, t.input_dim),
                                ("output_dim", self.output_dim, t.output_dim)):
            if want != got:
                raise ValueError(f"{where}: the task's {what} is {want} but its ticket has {got} "
                                 f"{'inputs' if what == 'input_dim' else 'outputs'} (ticket widths {t.widths}); "
                                 f"make the two agree")
        if t.depth != depth:
            raise ValueError(f"{where} returned a ticket of depth {t.depth}; the depth asked for is {depth}")

    def build_ticket(self, depth: int) -> Ticket:
        raise NotImplementedError


_TASKS: dict[str, Callable[..., Task]] = {}


def register(name: str):
    """Class decorator adding a Task subclass (or factory) to the registry under `name`."""
    def wrap(cls):
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered")
        if isinstance(cls, type):
            _check_task_class(name, cls)
        _TASKS[name] = cls
        cls.name = name
        return cls
    return wrap


def _check_task_class(name: str, cls: type) -> None:
    """The class attributes that planting, training and the sweeps rely on, checked when a task registers."""
    if cls.kind not in ("regression", "classification"):
        raise ValueError(f"task {name!r}: kind must be 'regression' or 'classification', got {cls.kind!r}")
    for attr in ("input_dim", "output_dim", "min_depth"):
        _args.integer(f"task {name!r}: {attr}", getattr(cls, attr))


def _adopt(name: str, obj) -> None:
    """An entry point that names an unregistered Task subclass registers it under the entry point's name."""
    if isinstance(obj, type) and issubclass(obj, Task) and obj not in _TASKS.values():
        register(name)(obj)


_PLUGINS = EntryPoints("plantseek.tasks", "task", _adopt)


def _registry() -> dict[str, Callable[..., Task]]:
    """The registry, with the installed plugins (entry points of ``plantseek.tasks``) loaded on first use."""
    _PLUGINS.load()
    return _TASKS


def get(name: str, **options) -> Task:
    """A task by name; unknown names raise ValueError listing the known ones."""
    if isinstance(name, Task):
        return name
    registry = _registry()
    if name not in registry:
        raise ValueError(f"unknown task {name!r}; available: {', '.join(available())}")
    return registry[name](**options)


def available() -> list[str]:
    """Names of the registered tasks, installed plugins included."""
    return sorted(_registry())
