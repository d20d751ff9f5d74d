"""Tasks: seeded data generators, losses and ticket builders, behind one registry."""
from .base import Task, TaskData, available, get, register
from . import relu, circle, helix  # noqa: F401  (registration)
from . import digits, cifar10  # noqa: F401  (image tasks: data only, tickets come from plantseek.image)

__all__ = ["Task", "TaskData", "available", "get", "register"]
