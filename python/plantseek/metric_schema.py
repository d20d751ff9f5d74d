"""Every metric of a run, declared once: its name, kind, unit, who produces it and where it goes.

A run's metrics are flat keys (``test_loss``, ``recall_layer_2``, ...). Producers (`plantseek.measure`, used
by `plantseek.seek` for every network family) write them; the store, the exports, the report, the findings
and the CLI tables take their names, their order and the headline columns from `METRICS` here, and
``plantseek metrics`` prints it. A name with ``{i}`` is a per-layer template (``recall_layer_{i}``: one key
per linear layer, from 0); ``{k}`` indexes the outputs of a task.

Words: ``kept_density`` is what a found mask keeps (weights and biases); ``density`` is the configuration key
(the density asked for, a number or "ticket"), never a metric; ``requested_density`` is that request as a
number. Records written before the rename store ``density`` and ``time_s``; `upgrade` reads them.

This module is data: it imports nothing heavy (the store and the report read it).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Iterable, Mapping

__all__ = ["Metric", "Column", "METRICS", "KINDS", "FAMILIES", "PROTOCOLS", "CONDITIONS", "BOOKKEEPING_COLUMNS",
           "BOOKKEEPING", "LEGACY", "LEGACY_COLUMNS", "get", "lookup", "is_declared", "declared", "names", "expand",
           "expected", "sort_key", "order", "headline", "performance", "upgrade", "upgrade_columns", "table"]

KINDS = ("loss", "accuracy", "density", "recovery", "connectivity", "scale", "hiding", "error", "time", "count",
         "flag", "curve")  # a curve is a list of numbers (JSON in the store, a JSON string in flat exports)
FAMILIES = ("mlp", "image")  # `plantseek.families`: the MLP family's tasks; the conv family's (image tasks)
PROTOCOLS = ("singleshot", "multishot", "strong", "gradual", "dynamic")
WEAK = ("singleshot", "multishot", "gradual", "dynamic")
DURING = ("gradual", "dynamic")  # the during-training protocols (`plantseek.during_training`)
# what must hold of a run for a metric with `requires` to be emitted; the text is what `plantseek metrics` says
CONDITIONS = {
    "classification": "classification tasks",
    "regression": "regression tasks",
    "multi_output": "tasks with more than one output",
    "dense_baseline": "with the dense baseline (dense_baseline=True)",
    "rescale": "when the weak protocols rescale (rescale other than 'none')",
}
_INDEX = re.compile(r"\{[ik]\}")


@dataclass(frozen=True)
class Metric:
    """One declared metric. `name` is the flat key, or a template with ``{i}`` (per layer) or ``{k}`` (per
    output). `protocols` and `families` say who produces it; `requires` names `CONDITIONS` that must hold
    too (empty: every run of those protocols and families has it). `headline` metrics are the few that
    summaries show; `order` is the position in `METRICS` (the column order of tables)."""

    name: str
    kind: str
    doc: str
    unit: str = ""
    protocols: tuple[str, ...] = PROTOCOLS
    families: tuple[str, ...] = FAMILIES
    requires: tuple[str, ...] = ()
    headline: bool = False
    label: str = ""  # the short name figures and tables use ("accuracy"); the name when empty
    order: int = -1

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.name

    @property
    def indexed(self) -> bool:
        return bool(_INDEX.search(self.name))

    @property
    def optional(self) -> bool:
        """Whether some runs of its protocols and families leave it out."""
        return bool(self.requires)

    @property
    def short(self) -> str:
        return self.label or self.name

    @property
    def when(self) -> str:
        """Which runs of its `protocols` emit it, in words: "always", or its family and `requires`."""
        parts = []
        if tuple(self.families) != FAMILIES:
            parts.append({"mlp": "MLP tasks", "image": "image tasks"}[self.families[0]]
                         if len(self.families) == 1 else " or ".join(self.families))
        parts += [CONDITIONS[r] for r in self.requires]
        return "; ".join(parts) or "always"

    def pattern(self) -> re.Pattern:
        """The keys of this metric: the name with each index placeholder as digits."""
        return re.compile("^" + r"(\d+)".join(map(re.escape, _INDEX.split(self.name))) + "$")


@dataclass(frozen=True)
class Column:
    """A bookkeeping column of the flat tables (not a metric: what the store knows about a run)."""

    name: str
    doc: str
    unit: str = ""


_M = Metric
_DECLARED = (
    # densities
    _M("kept_density", "density", "fraction of the prunable parameters (weights and biases) the found mask keeps",
       "fraction", headline=True, label="kept density"),
    _M("kept_params", "count", "parameters (weights and biases) the found mask keeps: the exact count its density "
       "asks for (docs/contributing.md's worked example of a new metric)", "count"),
    _M("requested_density", "density", "the density asked for as a number (density 'ticket': the planted ticket's)",
       "fraction"),
    _M("weight_density", "density", "fraction of the weights the found mask keeps (the paper's sparsity rho)",
       "fraction"),
    _M("effective_density", "connectivity", "fraction of all parameters that lie on some input-to-output path of "
       "kept weights", "fraction", families=("mlp",)),
    _M("ticket_density", "density", "the planted ticket's parameters over the host's (weights and biases)",
       "fraction"),
    _M("ticket_weight_density", "density", "the planted ticket's weights over the host's weights", "fraction"),
    # performance of the found network, the planted ticket and the dense host
    _M("test_accuracy", "accuracy", "test accuracy of the found network (strong: read through the fitted scale)",
       "fraction", requires=("classification",), headline=True, label="accuracy"),
    _M("test_loss", "loss", "test loss of the found network: MSE (regression) or cross-entropy (classification); "
       "strong: read through the fitted scale", headline=True, label="loss"),
    _M("test_loss_rescaled", "loss", "test loss after a least-squares factor per output fitted on the test "
       "outputs (the paper's evaluation)", requires=("regression",)),
    _M("test_loss_planted_scale", "loss", "test loss read through 1/output_scale instead of the fitted scale "
       "(exact for the ticket)", protocols=("strong",)),
    _M("output_scale_fitted", "scale", "the fitted read-out as a divisor of the outputs (1/factor; the mean over "
       "outputs for several regression outputs)", protocols=("strong",)),
    _M("output_scale_fitted_{k}", "scale", "the fitted read-out divisor of output k", protocols=("strong",),
       requires=("regression", "multi_output")),
    _M("ticket_test_accuracy", "accuracy", "test accuracy of the planted ticket itself (untrained)", "fraction",
       requires=("classification",)),
    _M("ticket_test_loss", "loss", "test loss of the planted ticket itself (untrained)"),
    _M("dense_test_accuracy", "accuracy", "test accuracy of the dense host trained with the same budget",
       "fraction", requires=("classification", "dense_baseline")),
    _M("dense_test_loss", "loss", "test loss of the dense host trained with the same budget (NaN when it "
       "diverged)", requires=("dense_baseline",)),
    _M("dense_epochs", "count", "epochs the dense baseline trained (the final-phase budget of every protocol)",
       "epochs", requires=("dense_baseline",)),
    # recovery of the planted ticket
    _M("recall", "recovery", "fraction of the ticket mask's parameters the found mask keeps", "fraction",
       headline=True),
    _M("functional_recall", "recovery", "fraction of ticket neurons some neuron of the same layer of the found "
       "network computes on the test inputs up to a positive factor", "fraction", families=("mlp",),
       headline=True, label="functional recall"),
    _M("precision", "recovery", "fraction of the kept parameters that belong to the ticket mask", "fraction"),
    _M("f1", "recovery", "harmonic mean of precision and recall", "fraction"),
    _M("jaccard", "recovery", "kept and ticket parameters over kept or ticket parameters", "fraction"),
    _M("ticket_survived", "flag", "every parameter of the ticket mask is kept", "bool"),
    # ticket recovery over training (the during-training protocols)
    _M("recall_curve", "curve", "recall against the ticket at the start and after every mask update", "fraction",
       protocols=DURING, families=("mlp",)),
    _M("functional_recall_curve", "curve", "functional recall at the start and after every mask update (on 250 "
       "evenly spaced test points, plantseek.during_training.CURVE_POINTS)",
       "fraction", protocols=DURING, families=("mlp",)),
    _M("curve_steps", "curve", "the optimiser step of each point of the recall curves (0: the initial mask)",
       "steps", protocols=DURING, families=("mlp",)),
    _M("mask_updates", "count", "mask updates during training", "count", protocols=DURING, families=("mlp",)),
    _M("regrown_into_ticket", "count", "distinct ticket parameters that entered the mask at an update after being "
       "absent or dropped", "count", protocols=DURING, families=("mlp",)),
    # connectivity
    _M("layer_collapse", "flag", "some layer keeps no weight (the output is then constant in the input)", "bool"),
    _M("dead_neurons", "connectivity", "hidden neurons on no input-to-output path of kept weights", "count",
       families=("mlp",)),
    # training and read-out
    _M("train_loss", "loss", "mean training loss of the last epoch (NaN without one)", protocols=WEAK),
    _M("train_accuracy", "accuracy", "training accuracy of the masked host (read through the fitted scale)",
       "fraction", families=("image",)),
    _M("rescale_factor", "scale", "g of the last weak training phase's function-preserving rescale (1 when the "
       "rule skipped it)", protocols=WEAK, requires=("rescale",)),
    _M("output_scale", "scale", "the planted network's output_scale: the masked host computes output_scale x the "
       "ticket"),
    _M("hiding_median_percentile", "hiding", "median percentile of the ticket's |weights| among the host's (about "
       "0.5: hidden)", "fraction"),
    _M("train_time_s", "time", "wall time of the run (batched work shared equally)", "s"),
    # the image tasks' learned ticket, found by a real pruner in a small network (plantseek.image.ticket)
    _M("small_dense_test_accuracy", "accuracy", "test accuracy of the small dense network the ticket is pruned "
       "from", "fraction", families=("image",)),
    _M("ticket_pruned_test_accuracy", "accuracy", "test accuracy of the ticket right after pruning", "fraction",
       families=("image",)),
    _M("ticket_small_test_accuracy", "accuracy", "test accuracy of the ticket after fine-tuning", "fraction",
       families=("image",)),
    _M("ticket_small_density", "density", "the ticket's kept fraction of the small network", "fraction",
       families=("image",)),
    _M("ticket_nnz", "count", "nonzero parameters of the ticket", "count", families=("image",)),
    _M("host_params", "count", "parameters of the host", "count", families=("image",)),
    _M("planting_exactness", "error", "max relative error of the masked host against output_scale x the ticket",
       "relative error", families=("image",)),
    # per layer (weights and biases of linear layer i, from the input)
    _M("layer_density_{i}", "density", "fraction of layer i's weights the found mask keeps", "fraction"),
    _M("ticket_layer_density_{i}", "density", "fraction of layer i's weights the ticket mask keeps", "fraction"),
    _M("recall_layer_{i}", "recovery", "recall in layer i (weights and biases)", "fraction"),
    _M("precision_layer_{i}", "recovery", "precision in layer i (weights and biases)", "fraction"),
    _M("f1_layer_{i}", "recovery", "F1 in layer i (weights and biases)", "fraction"),
    _M("jaccard_layer_{i}", "recovery", "Jaccard index in layer i (weights and biases)", "fraction"),
    _M("functional_recall_layer_{i}", "recovery", "functional recall of layer i's ticket neurons", "fraction",
       families=("mlp",)),
)
METRICS: tuple[Metric, ...] = tuple(replace(m, order=i) for i, m in enumerate(_DECLARED))
_BY_NAME = {m.name: m for m in METRICS}
_INDEXED = [(m.pattern(), m) for m in METRICS if m.indexed]

BOOKKEEPING_COLUMNS = (
    Column("status", "ok or failed"),
    Column("error", "the error of a failed run"),
    Column("key", "the run's key: SHA-256 of its identity options that differ from their defaults "
                  "(plantseek.spec.run_key)"),
    Column("version", "the plantseek version that ran it"),
    Column("device", "the device it ran on"),
    Column("duration_s", "wall time from start to finish (its share of a batch)", "s"),
    Column("batch_runs", "runs trained together in its batch", "count"),
    Column("attempts", "times the run was written (a retried failure counts again)", "count"),
    Column("started_at", "when it started (UTC)"),
    Column("finished_at", "when it finished (UTC)"),
)
BOOKKEEPING = tuple(c.name for c in BOOKKEEPING_COLUMNS)

# names that earlier versions wrote: in records (the flat metrics dict) and in flat tables (exports)
LEGACY = {"density": "kept_density", "time_s": "train_time_s"}
LEGACY_COLUMNS = {"density_measured": "kept_density", "time_s": "train_time_s"}


# ------------------------------------------------------------------------------------------------ lookup

def lookup(name: str) -> Metric | None:
    """The declaration of a key or a template (``recall_layer_3`` and ``recall_layer_{i}`` alike), or None."""
    m = _BY_NAME.get(name)
    if m is not None:
        return m
    for pattern, metric in _INDEXED:
        if pattern.match(name):
            return metric
    return None


def get(name: str) -> Metric:
    """`lookup`, with a KeyError naming the allowed metrics."""
    m = lookup(name)
    if m is None:
        raise KeyError(f"unknown metric {name!r}; declared metrics: {', '.join(_BY_NAME)} "
                       f"(plantseek.metric_schema; `plantseek metrics` lists them)")
    return m


def is_declared(name: str) -> bool:
    return lookup(name) is not None


def declared(names: Iterable[str]) -> tuple[str, ...]:
    """``names`` as a tuple once each is checked to be declared (`get`): for code that names metrics."""
    names = tuple(names)
    for name in names:
        get(name)
    return names


def _index(name: str) -> int:
    m = lookup(name)
    if m is None or not m.indexed:
        return -1
    return int(m.pattern().match(name).group(1)) if name != m.name else -1


def names(*, per_layer: bool | None = None, family: str | None = None, protocol: str | None = None,
          headline: bool | None = None) -> list[str]:
    """Declared names (templates as they are), in order, optionally only those that match."""
    return [m.name for m in METRICS
            if (per_layer is None or m.indexed == per_layer) and (family is None or family in m.families)
            and (protocol is None or protocol in m.protocols) and (headline is None or m.headline == headline)]


def expand(metric: str | Metric, n: int) -> list[str]:
    """The keys of an indexed metric for ``n`` layers (or outputs); a plain metric is its own name."""
    m = metric if isinstance(metric, Metric) else get(metric)
    if not m.indexed:
        return [m.name]
    return [_INDEX.sub(str(i), m.name) for i in range(int(n))]


def expected(protocol: str, family: str = "mlp", *, kind: str, n_layers: int, n_outputs: int = 1,
             dense_baseline: bool = True, rescale: bool = True) -> list[str]:
    """The keys every run of ``protocol`` and ``family`` on a task of ``kind`` ("classification" or
    "regression") with ``n_layers`` linear layers and ``n_outputs`` outputs emits."""
    facts = {kind}
    if n_outputs > 1:
        facts.add("multi_output")
    if dense_baseline:
        facts.add("dense_baseline")
    if rescale:
        facts.add("rescale")
    out = []
    for m in METRICS:
        if protocol in m.protocols and family in m.families and set(m.requires) <= facts:
            out += expand(m, n_layers if m.per_layer else n_outputs)
    return out


# ------------------------------------------------------------------------------------------------ order

def sort_key(name: str) -> tuple:
    """Declared metrics in `METRICS` order (an indexed one by its index), then the rest by name, trailing
    numbers in numeric order."""
    m = lookup(name)
    if m is not None:
        return (0, m.order, "", _index(name))
    t = re.match(r"^(.*?)(\d+)$", name)
    if t:
        return (1, 0, t.group(1), int(t.group(2)))
    return (1, 0, name, -1)


def order(columns: Iterable[str]) -> list[str]:
    """``columns`` in `sort_key` order."""
    return sorted(columns, key=sort_key)


def headline(columns: Iterable[str] | None = None) -> list[str]:
    """The headline metrics in order; with ``columns``, those among them."""
    heads = names(headline=True)
    if columns is None:
        return heads
    have = set(columns)
    return [h for h in heads if h in have]


def performance(columns: Iterable[str]) -> str | None:
    """The performance metric a table of runs is judged by: test accuracy when ``columns`` (the ones with
    values) have it, else the test loss; None without either."""
    have = set(columns)
    for name in names(headline=True):
        if get(name).kind in ("accuracy", "loss") and name in have:
            return name
    return None


# ------------------------------------------------------------------------------------------------ reading

def upgrade(metrics: Mapping) -> dict:
    """A record's metrics with the names earlier versions wrote (`LEGACY`) under today's names."""
    out = dict(metrics)
    for old, new in LEGACY.items():
        if old in out and new not in out:
            out[new] = out.pop(old)
    return out


def upgrade_columns(columns: Iterable[str]) -> dict[str, str]:
    """{old: new} for the columns of a flat table that earlier versions named otherwise (`LEGACY_COLUMNS`)."""
    columns = list(columns)
    return {old: new for old, new in LEGACY_COLUMNS.items() if old in columns and new not in columns}


def table() -> list[dict]:
    """One row per declared metric: name, kind, per-layer, unit, protocols, families, when, headline, doc."""
    return [{"name": m.name, "kind": m.kind, "per_layer": m.per_layer, "unit": m.unit or "-",
             "protocols": "all" if tuple(m.protocols) == PROTOCOLS else ",".join(m.protocols),
             "families": ",".join(m.families), "when": m.when, "headline": m.headline, "doc": m.doc}
            for m in METRICS]
