"""Tasks: seeded data generators, losses and ticket builders, behind one registry.

Every module of this package is imported so that its ``@register`` runs: a new task is one new file here
(docs/contributing.md). The MLP tasks build their tickets; the image tasks (digits, cifar10) learn theirs.
"""
import importlib
import pkgutil

from .base import Task, TaskData, available, get, register

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if _info.name != "base" and not _info.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_info.name}")

__all__ = ["Task", "TaskData", "available", "get", "register"]
