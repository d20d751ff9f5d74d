"""Helpers shared by the pruner tests: planted networks and data (cached per session), counts, recall."""
import functools

import torch

import plantseek
from plantseek import tasks


@functools.lru_cache(maxsize=None)
def planted(task: str, width: int, depth: int, seed: int = 0):
    return plantseek.plant(task, width=width, depth=depth, seed=seed)


@functools.lru_cache(maxsize=None)
def task_data(task: str, n: int = 1000, seed: int = 0):
    return tasks.get(task).data(n=n, noise=0.01, seed=seed)


def n_kept(mask, include_bias=True):
    return sum(int(wm.sum()) + (int(bm.sum()) if include_bias else 0) for wm, bm in mask)


def recall(mask, reference):
    inter = sum(int((a & ra).sum()) + int((b & rb).sum()) for (a, b), (ra, rb) in zip(mask, reference))
    return inter / n_kept(reference)


