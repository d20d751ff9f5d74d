"""Pruners behind one registry: ``plantseek.pruners.get(name, **options).prune(net, data, density, ...)``.

Built in: ``random``, ``magnitude``, ``snip``, ``grasp``, ``synflow`` and the ``ticket`` oracle; any other module
in this package is imported too so that its ``@register`` runs (edge-popup lives in its own module). A user's
pruner is a registered `ScorePruner` subclass with a ``scores`` method, or a function on a `torch.nn.Module`
registered with `from_module`; installed packages add theirs through the ``plantseek.pruners`` entry points,
loaded when the registry is first listed or looked up (docs/pruners.md).
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import (
    Pruner, ScorePruner, available, check_density, default_loss, descriptions, device_generator,
    effective_parameters, forward, get, kept_count, parse_density, pruning_set, register,
)
from .selection import select, select_reference, topk_keep
from . import basic, gradient, synflow  # noqa: F401  (registration)
from .from_module import ModulePruner, from_module, read_masks

_BUILTIN = {"base", "selection", "basic", "gradient", "synflow", "from_module"}
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name not in _BUILTIN and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = [
    "Pruner", "ScorePruner", "register", "get", "available", "descriptions", "kept_count", "select", "select_reference",
    "topk_keep", "check_density", "parse_density", "default_loss", "device_generator", "effective_parameters", "forward",
    "pruning_set", "from_module", "ModulePruner", "read_masks",
]
