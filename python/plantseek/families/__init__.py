"""Network families: the MLP tasks' built tickets and batched trainer (`mlp`), the image tasks' learned
convolutional tickets (`conv`), behind one interface (`base.Family`) that `plantseek.seek` runs every task
through. ``families.of(task)`` is a task's family."""
from .base import Family, LRU, available, clear_caches, get, of, register, tasks_of

__all__ = ["Family", "LRU", "available", "clear_caches", "get", "of", "register", "tasks_of"]
