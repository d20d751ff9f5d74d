"""`measure`: the flat metrics of one found network, the same for every network family.

Every network family (`plantseek.families`: the MLP tasks, the conv nets of the image tasks) reads its found
network through its own forward (`output_metrics` with the family's ``forward``) and hands that to `measure`
with the mask metrics (`mask_metrics`: one rule for densities, recovery and layer collapse, plus
reachability where the layers chain as an MLP). The names, kinds and units of what comes out are declared in
`plantseek.metric_schema`; `measure` refuses a name that is not declared and returns the rest in its order.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from . import metric_schema as _schema
from . import metrics as _metrics
from . import train as _train
from .masks import Mask
from .rescale import fit_regression_scale, fit_temperature


def _chains(mask: Mask) -> bool:
    """Whether the mask's layers are linear layers that feed each other (reachability is defined there)."""
    ws = [wm for wm, _ in mask]
    return all(w.dim() == 2 for w in ws) and all(b.shape[1] == a.shape[0] for a, b in zip(ws, ws[1:]))


def connectivity(mask: Mask) -> dict:
    """effective_density and dead_neurons of an MLP mask (`plantseek.metrics.connectivity`)."""
    c = _metrics.connectivity(mask)
    return {"effective_density": float(c["effective_density"]), "dead_neurons": int(c["dead_neurons"])}


def mask_metrics(mask: Mask, net) -> dict:
    """Kept densities (overall, weights, per layer; the ticket's beside them), recovery of the ticket mask,
    layer_collapse, and connectivity where the layers chain. ``net``: the planted network (its
    ``ticket_mask``, ``ticket_density`` and ``ticket_weight_density``), an MLP or an image module."""
    dev = mask[0][0].device
    tmask = [(wm.to(dev), bm.to(dev)) for wm, bm in net.ticket_mask]
    out: dict[str, Any] = {**_metrics.densities(mask, tmask), "ticket_density": float(net.ticket_density),
                           "ticket_weight_density": float(net.ticket_weight_density)}
    out.update(_metrics.flat_recovery(mask, tmask))
    out["layer_collapse"] = bool(_metrics.layer_collapse(mask))
    if _chains(mask):
        out.update(connectivity(mask))
    return out


def functional_metrics(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], net,
                       x: torch.Tensor) -> dict:
    """functional_recall overall and per layer of the found MLP against ``net``'s ticket on inputs ``x``."""
    return _metrics.flat_functional_recall(weights, biases, net.ticket.weights, net.ticket.biases, x)


def _mlp_outputs(net, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return _train.evaluate_outputs([w.unsqueeze(0) for w in weights], [b.unsqueeze(0) for b in biases],
                                   x.unsqueeze(0))[0]


def output_metrics(task, run, scaled: bool, forward=None) -> dict:
    """The read-out of a `plantseek.protocols.Run`: test_loss/test_accuracy (through the scale fitted on the
    training data when ``scaled``, the strong protocol), test_loss_planted_scale and output_scale_fitted
    (scaled), test_loss_rescaled (regression). ``forward(net, weights, biases, x)`` gives the outputs (the
    network family's; default: the MLP forward)."""
    forward = forward or _mlp_outputs
    data = run.data
    out_test = forward(run.net, run.weights, run.biases, data.x_test)
    m: dict[str, Any] = {}
    regression = task.kind != "classification"
    if scaled:
        out_train = forward(run.net, run.weights, run.biases, data.x_train)
        if regression:
            c = fit_regression_scale(out_train, data.y_train)
            fitted = out_test * c
            divisors = [(1.0 / v) if v != 0 else float("nan") for v in c.tolist()]
            m["output_scale_fitted"] = divisors[0] if len(divisors) == 1 else float(sum(divisors) / len(divisors))
            if len(divisors) > 1:
                for k, v in enumerate(divisors):
                    m[f"output_scale_fitted_{k}"] = v
        else:
            t = fit_temperature(out_train, data.y_train)
            fitted = out_test * t
            m["output_scale_fitted"] = (1.0 / t) if t > 0 else float("nan")
        ev = task.evaluate(fitted, data.y_test)
        m["test_loss"] = ev["loss"]
        if "accuracy" in ev:
            m["test_accuracy"] = ev["accuracy"]
        planted = task.evaluate(out_test / float(run.net.output_scale), data.y_test)
        m["test_loss_planted_scale"] = planted["loss"]
    else:
        ev = task.evaluate(out_test, data.y_test)
        m["test_loss"] = ev["loss"]
        if "accuracy" in ev:
            m["test_accuracy"] = ev["accuracy"]
    if regression:
        c = fit_regression_scale(out_test, data.y_test)
        m["test_loss_rescaled"] = task.evaluate(out_test * c, data.y_test)["loss"]
    return m


def measure(net, *, outputs: dict, masks: dict, ticket: dict, requested_density: float, time_s: float,
            dense: dict | None = None, functional: dict | None = None, extra: dict | None = None) -> dict:
    """One run's flat metrics in `plantseek.metric_schema` order.

    ``net``: the planted network (its hiding statistics and ``output_scale`` are reported); ``outputs``: the
    family's read-out of the found network (`output_metrics` for the MLP tasks); ``masks``: `mask_metrics`
    of the found mask; ``ticket``: the planted ticket's own ticket_test_* metrics; ``dense``: the dense
    baseline's dense_* metrics (None: no baseline); ``functional``: `functional_metrics` where the family
    has it; ``extra``: further declared metrics of the family; ``time_s``: the run's wall time
    (train_time_s). A name that `plantseek.metric_schema` does not declare is a ValueError."""
    m: dict[str, Any] = {**outputs, **ticket, **(dense or {}), "requested_density": float(requested_density),
                         **masks, **(functional or {}), **(extra or {})}
    m["hiding_median_percentile"] = float(net.hiding.get("median_percentile", float("nan")))
    m["output_scale"] = float(net.output_scale)
    m["train_time_s"] = float(time_s)
    undeclared = sorted(k for k in m if not _schema.is_declared(k))
    if undeclared:
        raise ValueError(f"metric(s) {', '.join(undeclared)} are not declared in plantseek.metric_schema: "
                         f"declare every metric there once")
    return {k: m[k] for k in _schema.order(m)}
