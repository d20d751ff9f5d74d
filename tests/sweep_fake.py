"""A deterministic stand-in for ``plantseek.seek`` / ``seek_batch`` that trains nothing.

A test fake (under tests/, never in the package) used by the sweep, store and report tests: its metrics are
plausible functions of the configuration with seeded noise, with the same flat keys as the real seeker.
``FakeSeeker(fail_seeds=..., sleep=...)`` makes chosen runs raise or every run take time.
Instances are picklable, so they also run on Dask workers (which import this module by name: they need
tests/ on their path, as in-process workers and spawned ones started from pytest have).
"""
from __future__ import annotations

import hashlib
import json
import math
import random
import time
from typing import Any, Sequence

CLASSIFICATION = {"circle": 4, "image": 10}


def _rng(kw: dict) -> random.Random:
    payload = json.dumps({k: str(v) for k, v in sorted(kw.items()) if k not in ("device", "progress")}, sort_keys=True)
    return random.Random(int(hashlib.sha256(payload.encode()).hexdigest()[:16], 16))


def _width_list(width, depth) -> list[int]:
    return list(width) if isinstance(width, (list, tuple)) else [int(width)] * (int(depth) - 1)


def ticket_density(task: str, depth: int, width) -> float:
    """The fake ticket's density: a few parameters per layer of the host."""
    widths = [2] + _width_list(width, depth) + [4]
    params = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    per_layer = {"relu": 2, "circle": 24, "helix": 60}.get(task, 20)
    return min(1.0, per_layer * depth / params)


def fake_metrics(kw: dict) -> dict[str, Any]:
    task, depth, width = kw["task"], int(kw["depth"]), kw["width"]
    pruner = kw["pruner"] if isinstance(kw["pruner"], str) else getattr(kw["pruner"], "name", str(kw["pruner"]))
    rng = _rng({k: v for k, v in kw.items() if k != "pruner"} | {"pruner": pruner})
    td = ticket_density(task, depth, width)
    density = td if kw["density"] == "ticket" else float(kw["density"])
    # how well a pruner does: good at high density, worse below a pruner-specific knee
    # the oracle performs about as well as the ticket itself (DESIGN.md, "Verdicts": it is every reference)
    knee = {"ticket": td * 0.01, "synflow": 0.02, "snip": 0.05, "grasp": 0.08, "magnitude": 0.05,
            "random": 0.2, "edge-popup": 0.1, "edge-popup-annealed": 0.05}.get(pruner, 0.1)
    quality = 1.0 / (1.0 + math.exp(-4.0 * (math.log10(density) - math.log10(knee))))
    quality = min(1.0, max(0.0, quality + rng.gauss(0, 0.03)))
    m: dict[str, Any] = {"density": density, "weight_density": density * 0.98, "effective_density": density * quality}
    ticket_perf_acc, dense_acc = 0.95, 0.97
    if task in CLASSIFICATION:
        chance = 1.0 / CLASSIFICATION[task]
        acc = chance + (ticket_perf_acc + 0.01 - chance) * quality
        m.update(test_accuracy=acc, test_loss=1.5 * (1 - quality) + 0.1,
                 ticket_test_accuracy=ticket_perf_acc, ticket_test_loss=0.12,
                 dense_test_accuracy=dense_acc, dense_test_loss=0.08)
    else:
        floor = 1e-4 if task == "relu" else 3.2e-4
        m.update(test_loss=floor * (1 + 1e3 * (1 - quality) ** 2),
                 ticket_test_loss=floor, dense_test_loss=floor * 2)
    recall = 1.0 if pruner == "ticket" else min(1.0, density * (0.5 + 2 * quality * (pruner == "synflow")))
    m.update(recall=recall, precision=min(1.0, recall * td / density), ticket_survived=recall >= 1.0,
             layer_collapse=quality < 0.05)
    m["f1"] = 2 * m["recall"] * m["precision"] / max(1e-12, m["recall"] + m["precision"])
    m["jaccard"] = m["f1"] / (2 - m["f1"]) if m["f1"] < 2 else 1.0
    for i in range(depth):
        shape = 1.0 + 0.5 * math.cos(i)  # uneven layers
        m[f"layer_density_{i}"] = min(1.0, density * shape)
        m[f"ticket_layer_density_{i}"] = min(1.0, td * (2.0 if i in (0, depth - 1) else 0.7))
        m[f"recall_{i}"] = recall
    return m


class FakeResult:
    def __init__(self, metrics: dict) -> None:
        self.metrics = metrics


class FakeSeeker:
    """``seek``-like callable (``fake(**kwargs)``) with a ``batch(list_of_kwargs)`` method.

    fail_seeds: runs with these seeds raise (as a run would on bad input); fail_batches: the batched call
    raises whenever the chunk contains a failing seed (so the executor must fall back to one by one);
    sleep: seconds per run (per chunk in batch mode: ``sleep * (1 + 0.1 * n)``)."""

    def __init__(self, fail_seeds: Sequence[int] = (), fail_batches: bool = True, sleep: float = 0.0,
                 batch_sleep: float | None = None) -> None:
        self.fail_seeds = tuple(fail_seeds)
        self.fail_batches = fail_batches
        self.sleep = sleep
        self.batch_sleep = batch_sleep

    def __call__(self, **kw) -> FakeResult:
        if self.sleep:
            time.sleep(self.sleep)
        if kw["seed"] in self.fail_seeds:
            raise RuntimeError(f"fake failure for seed {kw['seed']}")
        return FakeResult(fake_metrics(kw))

    def batch(self, kwargs_list: list[dict]) -> list[FakeResult]:
        if self.sleep or self.batch_sleep:
            time.sleep(self.batch_sleep if self.batch_sleep is not None else self.sleep * (1 + 0.1 * len(kwargs_list)))
        if self.fail_batches and any(kw["seed"] in self.fail_seeds for kw in kwargs_list):
            raise RuntimeError("fake batch failure")
        return [FakeResult(fake_metrics(kw)) if kw["seed"] not in self.fail_seeds
                else RuntimeError(f"fake failure for seed {kw['seed']}") for kw in kwargs_list]
