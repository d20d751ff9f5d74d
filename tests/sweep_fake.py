"""A deterministic stand-in for ``plantseek.seek`` / ``seek_batch`` that trains nothing.

A test fake (under tests/, never in the package) used by the sweep, store and report tests: its metrics are
plausible functions of the configuration with seeded noise, under the keys `plantseek.metric_schema` says the
real seeker emits for that run.
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

from plantseek import metric_schema as schema

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


# the fake's value of a declared metric it does not model, by kind (`plantseek.metric_schema.KINDS`)
_BY_KIND = {"density": 0.5, "recovery": 0.5, "connectivity": 0.5, "hiding": 0.5, "accuracy": 0.5, "scale": 1.0,
            "count": 0, "flag": False, "time": 0.01, "error": 0.0, "curve": [0.5, 0.5]}


def _pruner_name(kw: dict) -> str:
    return kw["pruner"] if isinstance(kw["pruner"], str) else getattr(kw["pruner"], "name", str(kw["pruner"]))


def fake_metrics(kw: dict) -> dict[str, Any]:
    """Every metric `plantseek.metric_schema.expected` says the run emits (names and per-layer keys from the
    schema), with modelled values for the ones the report and the findings read."""
    task, depth, width = kw["task"], int(kw["depth"]), kw["width"]
    protocol = kw.get("protocol", "singleshot")
    pruner = _pruner_name(kw)
    rng = _rng({k: v for k, v in kw.items() if k != "pruner"} | {"pruner": pruner})
    td = ticket_density(task, depth, width)
    density = td if kw["density"] == "ticket" else float(kw["density"])
    # how well a pruner does: good at high density, worse below a pruner-specific knee
    # the oracle performs about as well as the ticket itself (DESIGN.md, "Verdicts": it is every reference)
    knee = {"ticket": td * 0.01, "synflow": 0.02, "snip": 0.05, "grasp": 0.08, "magnitude": 0.05,
            "random": 0.2, "edge-popup": 0.1, "edge-popup-annealed": 0.05}.get(pruner, 0.1)
    quality = 1.0 / (1.0 + math.exp(-4.0 * (math.log10(density) - math.log10(knee))))
    quality = min(1.0, max(0.0, quality + rng.gauss(0, 0.03)))
    v: dict[str, Any] = {"kept_density": density, "requested_density": density, "weight_density": density * 0.98,
                         "effective_density": density * quality, "ticket_density": td, "ticket_weight_density": td}
    ticket_perf_acc, dense_acc = 0.95, 0.97
    if task in CLASSIFICATION:
        kind, n_outputs = "classification", CLASSIFICATION[task]
        chance = 1.0 / n_outputs
        acc = chance + (ticket_perf_acc + 0.01 - chance) * quality
        v.update(test_accuracy=acc, test_loss=1.5 * (1 - quality) + 0.1,
                 ticket_test_accuracy=ticket_perf_acc, ticket_test_loss=0.12,
                 dense_test_accuracy=dense_acc, dense_test_loss=0.08)
    else:
        kind, n_outputs = "regression", {"helix": 3}.get(task, 1)
        floor = 1e-4 if task == "relu" else 3.2e-4
        v.update(test_loss=floor * (1 + 1e3 * (1 - quality) ** 2),
                 ticket_test_loss=floor, dense_test_loss=floor * 2)
    recall = 1.0 if pruner == "ticket" else min(1.0, density * (0.5 + 2 * quality * (pruner == "synflow")))
    v.update(recall=recall, functional_recall=recall, precision=min(1.0, recall * td / density),
             ticket_survived=recall >= 1.0, layer_collapse=quality < 0.05, dead_neurons=int(round(10 * (1 - quality))),
             dense_epochs=int(kw.get("epochs", 10)), train_loss=v["test_loss"], output_scale=1e-3,
             output_scale_fitted=1e-3, test_loss_rescaled=v["test_loss"] * 0.9,
             test_loss_planted_scale=v["test_loss"] * 1.1)
    v["f1"] = 2 * v["recall"] * v["precision"] / max(1e-12, v["recall"] + v["precision"])
    v["jaccard"] = v["f1"] / (2 - v["f1"]) if v["f1"] < 2 else 1.0
    per_layer = {  # template -> value of layer i
        "layer_density_{i}": lambda i: min(1.0, density * (1.0 + 0.5 * math.cos(i))),  # uneven layers
        "ticket_layer_density_{i}": lambda i: min(1.0, td * (2.0 if i in (0, depth - 1) else 0.7)),
        "recall_layer_{i}": lambda i: recall, "precision_layer_{i}": lambda i: v["precision"],
        "f1_layer_{i}": lambda i: v["f1"], "jaccard_layer_{i}": lambda i: v["jaccard"],
        "functional_recall_layer_{i}": lambda i: recall,
    }
    names = schema.expected(protocol, "mlp", kind=kind, n_layers=depth, n_outputs=n_outputs,
                            dense_baseline=kw.get("dense_baseline", True), rescale=kw.get("rescale", "fit") != "none")
    m: dict[str, Any] = {}
    for name in names:
        metric = schema.get(name)
        if metric.per_layer and metric.name in per_layer:
            m[name] = per_layer[metric.name](int(name.rsplit("_", 1)[1]))
        else:
            default = v["test_loss"] if metric.kind == "loss" else _BY_KIND[metric.kind]
            m[name] = v.get(name, v.get(metric.name, default))
    return m


class FakeResult:
    def __init__(self, metrics: dict) -> None:
        self.metrics = metrics


class FakeSeeker:
    """``seek``-like callable (``fake(**kwargs)``) with a ``batch(list_of_kwargs)`` method.

    fail_seeds: runs with these seeds raise (as a run would on bad input); fail_batches: the batched call
    raises whenever the chunk contains a failing seed (so the executor must fall back to one by one);
    sleep: seconds per run (per chunk in batch mode: ``sleep * (1 + 0.1 * n)``); hang: (pruner, seed) pairs
    whose batch sleeps for an hour (a run in flight when a test kills the sweep)."""

    def __init__(self, fail_seeds: Sequence[int] = (), fail_batches: bool = True, sleep: float = 0.0,
                 batch_sleep: float | None = None, hang: Sequence[tuple[str, int]] = ()) -> None:
        self.hang = {(str(p), int(s)) for p, s in hang}  # (pruner, seed): a batch with such a run never ends
        self.fail_seeds = tuple(fail_seeds)
        self.fail_batches = fail_batches
        self.sleep = sleep
        self.batch_sleep = batch_sleep

    def _hang_if_asked(self, kwargs_list: list[dict]) -> None:
        if any((_pruner_name(kw), int(kw["seed"])) in self.hang for kw in kwargs_list):
            time.sleep(3600)  # the test kills the process meanwhile

    def __call__(self, **kw) -> FakeResult:
        self._hang_if_asked([kw])
        if self.sleep:
            time.sleep(self.sleep)
        if kw["seed"] in self.fail_seeds:
            raise RuntimeError(f"fake failure for seed {kw['seed']}")
        return FakeResult(fake_metrics(kw))

    def batch(self, kwargs_list: list[dict]) -> list[FakeResult]:
        self._hang_if_asked(kwargs_list)
        if self.sleep or self.batch_sleep:
            time.sleep(self.batch_sleep if self.batch_sleep is not None else self.sleep * (1 + 0.1 * len(kwargs_list)))
        if self.fail_batches and any(kw["seed"] in self.fail_seeds for kw in kwargs_list):
            raise RuntimeError("fake batch failure")
        return [FakeResult(fake_metrics(kw)) if kw["seed"] not in self.fail_seeds
                else RuntimeError(f"fake failure for seed {kw['seed']}") for kw in kwargs_list]
