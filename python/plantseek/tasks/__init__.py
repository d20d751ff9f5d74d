"""Tasks: seeded data generators, losses and ticket builders, behind one registry."""
from .base import Task, TaskData, available, get, register
from . import relu, circle, helix  # noqa: F401  (registration)

__all__ = ["Task", "TaskData", "available", "get", "register"]
