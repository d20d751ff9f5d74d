"""`seek`: plant a ticket, let a pruner look for it under a protocol, train, and measure against the ticket.

``seek(task="circle", depth=4, width=100, pruner="synflow", density=0.1, protocol="singleshot", ...)`` runs one
configuration and returns a `SeekResult` (flat ``metrics``, the found ``masks``, the normalised ``config``).
``seek_batch([kwargs, ...])`` runs many: runs that share task, shape, protocol and training settings are
trained together as one batched computation (float64 results equal the one-by-one ones), and a run that fails
comes back as its exception in place of a result without touching the others.

Every task runs through its network family (`plantseek.families`): the MLP tasks plant built tickets and train
in one batched computation; the image tasks (digits, cifar10: the conv family) plant a ticket learned by a
pruner in a small trained network (``seek(task="digits", pruner="edge-popup-annealed", protocol="strong",
density="ticket")``; docs/image.md). The family supplies the planted network, the data, the forward, the
training block and the read-out; this module caches what the family makes and runs the same path for all.

Defaults are the paper's (DESIGN.md, "The paper's experiments"; our depth = the paper's depth - 1): Adam,
lr 1e-3, batch 32, 10 epochs; multishot 10 rounds of 5 epochs; 10 000 samples, 90/10 split, noise 0.01;
pruning data 40 samples.

Randomness: the host and the planting come from ``seed`` itself (so ``plantseek.plant(task, width, depth,
seed)`` is the same network); the data, the pruner's generator and the training shuffle use seeds derived
from it (`derive_seed`). Data and planting are drawn on the CPU in float64 and then moved to the device and
training dtype, so a seed means the same planted network everywhere.

Metrics (flat keys, declared once in `plantseek.metric_schema`; ``plantseek metrics`` lists them): test_loss,
test_accuracy (classification), test_loss_rescaled (regression: per-output least-squares factor fitted on the
test outputs, the paper's evaluation), test_loss_planted_scale and output_scale_fitted (strong),
ticket_test_loss/ticket_test_accuracy (the planted ticket itself), dense_test_loss/dense_test_accuracy (the
dense host trained for ``epochs`` epochs with the same optimiser, cached per configuration; it trains
``epochs`` epochs from the planted weights, under multishot the same budget as every pruned run's final
phase, whose rounds end in a rewind), rescale_factor (g of the last weak training phase's rescale, 1 when the
rule skipped it; absent with rescale="none"), requested_density, kept_density (what the mask keeps, biases
included; ``density`` is the configuration key), weight_density, ticket_density, ticket_weight_density,
effective_density, dead_neurons, layer_collapse, precision/recall/f1/jaccard overall and per layer
(``recall_layer_{i}`` ...), functional_recall and functional_recall_layer_{i} (ticket neurons whose
activations on the test inputs some found neuron of the same layer computes up to a positive factor; see
`plantseek.metrics.functional_recall`), ticket_survived, layer_density_{i} and ticket_layer_density_{i} (kept
fraction of the weights of layer i), train_time_s (wall time of this run; batched work is shared equally),
hiding_median_percentile. `plantseek.measure` assembles them.
"""
from __future__ import annotations

import hashlib
import inspect
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from . import families as _families
from . import protocols as _protocols
from . import spec as _spec
from . import tasks as _tasks
from .device import resolve_device, resolve_dtype
from .masks import Mask
# seek's metrics (plantseek.measure); mask_metrics is called through this module's name, so tests can wrap it
from .families.base import LRU
from .measure import functional_metrics, mask_metrics, measure, output_metrics  # noqa: F401
from .pruners.base import check_density, default_scope

# every option's default, doc and allowed values are `plantseek.spec`'s; these views are read by the CLI
DEFAULTS: dict[str, Any] = _spec.defaults()
OPTION_DOCS: dict[str, str] = {key: _spec.doc_of(key) for key in DEFAULTS}
option_choices = _spec.choices
# settings that must agree for runs to be trained together (the spec's group fields, and the device)
GROUP_KEYS = _spec.GROUP_KEYS + ("device",)
BOOLEAN_KEYS = _spec.BOOLEAN_KEYS


@dataclass
class SeekResult:
    """The outcome of one run: flat `metrics`, the found `masks` (on the run's device) and the `config`."""

    metrics: dict[str, Any]
    masks: Mask | None
    config: dict[str, Any]
    weights: list[torch.Tensor] | None = field(default=None, repr=False)
    biases: list[torch.Tensor] | None = field(default=None, repr=False)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def __repr__(self) -> str:
        # the dataclass repr would print every mask; show the run's identity and its headline metrics
        c, m = self.config, self.metrics
        name, opts = c.get("pruner"), c.get("pruner_options") or {}
        pruner = f"{name}[{', '.join(f'{k}={v}' for k, v in opts.items())}]" if opts else name
        test = "test_accuracy" if m.get("test_accuracy") is not None else "test_loss"
        keys = ("kept_density", test, f"ticket_{test}", "recall", "functional_recall")
        shown = ", ".join(f"{k}={m[k]:.4g}" for k in keys if isinstance(m.get(k), (int, float)))
        return (f"SeekResult(task={c.get('task')!r}, depth={c.get('depth')}, width={c.get('width')}, "
                f"pruner={pruner!r}, protocol={c.get('protocol')!r}, seed={c.get('seed')}, {shown})")


def derive_seed(seed: int, stream: str) -> int:
    """A 63-bit seed for a named random stream of run `seed` ("data", "prune", "train", ...)."""
    h = hashlib.sha256(f"plantseek:{int(seed)}:{stream}".encode()).digest()
    return int.from_bytes(h[:8], "little") >> 1


# ------------------------------------------------------------------------------------------------ normalising

def _pruner_name_options(pruner: Any) -> tuple[str, dict]:
    name = getattr(pruner, "name", None) or type(pruner).__name__
    opts = {k: v for k, v in dict(getattr(pruner, "options", {}) or {}).items() if not callable(v)}
    return name, opts


def make_pruner(pruner: Any, options: dict | None = None, pruning_samples: int | None = None):
    """A configured pruner from a name (with options; `pruning_samples` when the pruner takes it) or an object."""
    from . import pruners as _pruners

    if not isinstance(pruner, str):
        if options:
            raise ValueError("pruner_options can only be given with a pruner name, not with a configured pruner")
        if not callable(getattr(pruner, "prune", None)):
            raise ValueError(f"pruner must be a name or a pruner object with a prune method, got {pruner!r}")
        return pruner
    opts = dict(options or {})
    if pruner not in _pruners.available():
        raise ValueError(f"unknown pruner {pruner!r}; available: {', '.join(_pruners.available())}")
    if pruning_samples is not None and "pruning_samples" not in opts:
        cls = type(_pruners.get(pruner, **opts))
        if "pruning_samples" in inspect.signature(cls.__init__).parameters:
            opts["pruning_samples"] = int(pruning_samples)
    return _pruners.get(pruner, **opts)


def normalize(kwargs: dict) -> dict:
    """Fill in defaults and validate one run's arguments (through `plantseek.spec`); returns the normalised
    configuration.

    The configuration keeps the pruner object under ``pruner_obj`` and its name/options under ``pruner`` and
    ``pruner_options``; ``device`` is resolved ("auto" -> "cpu" or "cuda") and ``dtype`` is a name.
    """
    kwargs = dict(kwargs)
    obj = None
    if not isinstance(kwargs.get("pruner", ""), str):  # a configured pruner object: its name need not be registered
        obj = make_pruner(kwargs["pruner"], kwargs.get("pruner_options"))
        kwargs["pruner"], kwargs["pruner_options"] = _pruner_name_options(obj)
    try:
        run, exe = _spec.split(kwargs)
    except TypeError as exc:
        raise TypeError(f"seek got {str(exc).replace('unknown option', 'unknown argument')}") from None
    run = run.checked(registered_pruner=obj is None)
    cfg = {**run.flat(), **{k: getattr(exe, k) for k in _spec.EXEC_KEYS}, "device": str(resolve_device(exe.device))}
    cfg["dtype"] = str(resolve_dtype(cfg["dtype"])).replace("torch.", "")
    if obj is None:
        obj = make_pruner(cfg["pruner"], cfg["pruner_options"], cfg["pruning_samples"])
    cfg["pruner_obj"] = obj
    cfg["pruner"], cfg["pruner_options"] = _pruner_name_options(obj)
    return cfg


def public_config(cfg: dict) -> dict:
    """The configuration without the pruner object (JSON-friendly)."""
    out = {k: v for k, v in cfg.items() if k != "pruner_obj"}
    if isinstance(out.get("width"), list):
        out["width"] = list(out["width"])
    return out


# ------------------------------------------------------------------------------------------------ caches

_NETS = LRU(16)
_DATA = LRU(16)
_TICKET = LRU(256)
_DENSE = LRU(1024)


def clear_caches() -> None:
    """Forget cached planted networks, data, learned tickets, ticket and dense-baseline metrics."""
    for c in (_NETS, _DATA, _TICKET, _DENSE):
        c.clear()
    _families.clear_caches()


def _family(cfg: dict) -> _families.Family:
    """The network family that runs `cfg`'s task (`plantseek.families`)."""
    return _families.of(cfg["task"])


def _width_key(width) -> Any:
    return tuple(width) if isinstance(width, list) else width


def _planted(cfg: dict):
    """The planted network of `cfg` (CPU, float64), cached per the family's plant key."""
    fam = _family(cfg)
    return _NETS.get_or(fam.plant_key(cfg), lambda: fam.plant(cfg, lambda: _data(cfg)), cache=fam.cacheable(cfg))


def _data(cfg: dict):
    fam = _family(cfg)
    return _DATA.get_or(fam.data_key(cfg), lambda: fam.data(cfg, derive_seed(cfg["seed"], "data")))


def _ticket_metrics(cfg: dict, net, data) -> dict:
    fam = _family(cfg)
    key = fam.plant_key(cfg) + fam.data_key(cfg)
    return _TICKET.get_or(key, lambda: fam.ticket_metrics(_tasks.get(cfg["task"]), net, data))


def _dense_key(cfg: dict) -> tuple:
    fam = _family(cfg)
    return fam.plant_key(cfg) + fam.data_key(cfg) + tuple(
        cfg[k] for k in ("epochs", "lr", "batch_size", "optimizer", "dtype", "device", "rescale"))


# ------------------------------------------------------------------------------------------------ running

def _label(cfg: dict) -> str:
    return (f"{cfg['task']} depth={cfg['depth']} width={cfg['width']} {cfg['pruner']} density={cfg['density']} "
            f"{cfg['protocol']} seed={cfg['seed']}")


def _make_run(cfg: dict, device: torch.device, dtype: torch.dtype):
    _family(cfg).check_fits(cfg, str(device), what=f"run {_label(cfg)}")
    net_cpu = _planted(cfg)
    data_cpu = _data(cfg)
    ticket = _ticket_metrics(cfg, net_cpu, data_cpu)
    net = net_cpu.to(device, dtype)
    data = data_cpu.to(device, dtype)
    if cfg["density"] == "ticket":
        density = float(net.ticket_density if cfg["prune_bias"] else net.ticket_weight_density)
    else:
        density = float(cfg["density"])
    # a density that keeps nothing is refused before any training (multishot would reach it in its last round)
    check_density(density, net_cpu, scope=cfg["scope"] or default_scope(cfg["pruner_obj"]), prune_bias=cfg["prune_bias"])
    run = _protocols.Run(
        label=_label(cfg), net=net, data=data, pruner=cfg["pruner_obj"], density=density, scope=cfg["scope"],
        prune_bias=cfg["prune_bias"],
        prune_generator=torch.Generator(device=device).manual_seed(derive_seed(cfg["seed"], "prune")),
        train_generator=torch.Generator(device=device).manual_seed(derive_seed(cfg["seed"], "train")),
    )
    return run, ticket


def _each(results: list, indices, step) -> None:
    """``results[i] = step(i)`` for each index not failed yet; a step that raises leaves its exception there:
    the one place where `_run_group` keeps a run's failure from touching the others."""
    for i in indices:
        if isinstance(results[i], BaseException):
            continue
        try:
            results[i] = step(i)
        except Exception as exc:  # noqa: BLE001
            results[i] = exc


def _timed(run: _protocols.Run, fn):
    t0 = time.perf_counter()
    try:
        return fn()
    finally:
        run.time_s += time.perf_counter() - t0


def _dense_runs(cfgs: list[dict], runs: list, device) -> dict[tuple, _protocols.Run]:
    """Dense baselines not yet cached: one per distinct key, trained in the same batch where the protocol can."""
    out: dict[tuple, _protocols.Run] = {}
    for cfg, r in zip(cfgs, runs):
        if not isinstance(r, _protocols.Run) or not cfg["dense_baseline"]:
            continue
        key = _dense_key(cfg)
        if key not in _DENSE and key not in out:
            out[key] = _protocols.Run(
                label=f"dense host of {_label(cfg)}", net=r.net, data=r.data,
                train_generator=torch.Generator(device=device).manual_seed(derive_seed(cfg["seed"], "train")))
    return out


def _cache_dense(fam, task, dense_runs: dict[tuple, _protocols.Run]) -> None:
    for key, d in dense_runs.items():
        if d.ok and d.weights is not None:
            ev = task.evaluate(fam.forward(d.net, d.weights, d.biases, d.data.x_test), d.data.y_test)
            _DENSE[key] = {"dense_test_loss": ev["loss"], **({"dense_test_accuracy": ev["accuracy"]} if "accuracy" in ev else {})}
        else:  # a diverging dense baseline is reported as NaN, it does not fail the run
            _DENSE[key] = {"dense_test_loss": float("nan"), **({"dense_test_accuracy": float("nan")} if task.kind == "classification" else {})}


# what protocols leave in `Run.extra` that is a metric (declared in `plantseek.metric_schema`)
_EXTRA_METRICS = ("train_loss", "rescale_factor", "recall_curve", "functional_recall_curve", "curve_steps",
                  "mask_updates", "regrown_into_ticket")


def _measured(cfg: dict, r: _protocols.Run, ticket: dict, fam, task, proto) -> SeekResult:
    """The finished run `r` measured (`plantseek.measure`) with the family's read-out."""
    if not r.ok:
        raise r.error
    dense = None
    if cfg["dense_baseline"]:  # dense_epochs: the final-phase budget of every protocol (multishot rewinds)
        dense = {**_DENSE.get(_dense_key(cfg), {}), "dense_epochs": cfg["epochs"]}

    def parts():
        return fam.outputs(task, r, proto.scaled), mask_metrics(r.mask, r.net), fam.functional(r)

    outputs, masks, functional = _timed(r, parts)
    extra = {key: r.extra[key] for key in _EXTRA_METRICS if key in r.extra}
    m = measure(r.net, outputs=outputs, masks=masks, ticket=ticket, dense=dense, requested_density=r.density,
                functional=functional, extra=extra, time_s=r.time_s)
    return SeekResult(metrics=m, masks=r.mask, config=public_config(cfg), weights=r.weights, biases=r.biases)


def _run_group(cfgs: list[dict]) -> list[SeekResult | BaseException]:
    """Run configurations that share GROUP_KEYS together: make the runs (plant, data, ticket metrics), let the
    protocol prune and train them (with the dense baselines), measure each; a run's failure is its result."""
    c0 = cfgs[0]
    device, dtype = resolve_device(c0["device"]), resolve_dtype(c0["dtype"])
    task, fam = _tasks.get(c0["task"]), _family(c0)
    proto = _protocols.get(c0["protocol"])
    settings = _protocols.Settings(
        task=task, epochs=c0["epochs"], batch_size=c0["batch_size"], lr=c0["lr"], optimizer=c0["optimizer"],
        rounds=c0["rounds"], round_epochs=c0["round_epochs"], impl=c0["impl"], rescale=c0["rescale"],
        update_every=c0["update_every"], update_begin=c0["update_begin"], update_end=c0["update_end"],
        drop_fraction=c0["drop_fraction"], grow=c0["grow"], gradual_initial=c0["gradual_initial"],
        progress=any(c["progress"] for c in cfgs), trainer=fam.trainer,
    )
    made: list = [None] * len(cfgs)

    def make(i):
        t0 = time.perf_counter()
        run, ticket = _make_run(cfgs[i], device, dtype)
        run.time_s += time.perf_counter() - t0
        return run, ticket

    _each(made, range(len(cfgs)), make)
    runs = [m[0] if isinstance(m, tuple) else m for m in made]
    dense_runs = _dense_runs(cfgs, runs, device)
    proto.run([r for r in runs if isinstance(r, _protocols.Run)], list(dense_runs.values()), settings)
    _cache_dense(fam, task, dense_runs)
    results: list = list(runs)
    _each(results, range(len(cfgs)), lambda i: _measured(cfgs[i], runs[i], made[i][1], fam, task, proto))
    return results


def _threads_context(cfgs: list[dict]):
    """The CPU threads a group trains on: the family's rule (`plantseek.threads.cpu_threads_for`)."""
    return _family(cfgs[0]).threads(cfgs)


def seek_batch(kwargs_list: Sequence[dict], *, on_oom: str = "retry") -> list[SeekResult | BaseException]:
    """Run many configurations; runs sharing task/shape/protocol/training settings train together.

    Returns one entry per input in the same order: a `SeekResult`, or the exception that run raised (bad
    arguments, a pruner error, a diverging loss). One run's failure never loses the others; if a whole group
    fails unexpectedly, its runs are retried one by one. An out-of-memory error of a group of several runs is
    retried one by one too with ``on_oom="retry"`` (the default); ``on_oom="return"`` hands the error back
    for every run of that group instead, so that a caller who sized the group (the sweep executors,
    `plantseek.memory`) can halve it.
    """
    if on_oom not in ("retry", "return"):
        raise ValueError(f"on_oom must be 'retry' or 'return', got {on_oom!r}")
    results: list[SeekResult | BaseException | None] = [None] * len(kwargs_list)
    cfgs: list[dict | None] = [None] * len(kwargs_list)
    for i, kw in enumerate(kwargs_list):
        try:
            cfgs[i] = normalize(dict(kw))
        except Exception as exc:  # noqa: BLE001
            results[i] = exc
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        if cfg is None:
            continue
        key = tuple(_width_key(cfg[k]) for k in GROUP_KEYS)
        groups.setdefault(key, []).append(i)
    for idx in groups.values():
        group = [cfgs[i] for i in idx]
        try:
            with _threads_context(group):
                out = _run_group(group)
        except Exception as exc:  # noqa: BLE001 - retry one by one so that one bad run loses nothing else
            from .memory import is_out_of_memory, release_cached

            oom = is_out_of_memory(exc)
            if oom:
                release_cached()
            if len(idx) == 1 or (oom and on_oom == "return"):
                out = [exc] * len(idx)
            else:
                out = []
                for cfg in group:
                    try:
                        with _threads_context([cfg]):
                            out.append(_run_group([cfg])[0])
                    except Exception as exc1:  # noqa: BLE001
                        out.append(exc1)
        for i, res in zip(idx, out):
            results[i] = res
    return results  # type: ignore[return-value]


def seek(**options: Any) -> SeekResult:
    """Plant, prune, train (or not: strong) and measure one configuration; raises on failure.

    Takes every option of `plantseek.spec` by its flat name (defaults = the paper's); ``pruner`` is a name or
    a configured pruner from `plantseek.pruners.get`, ``pruner_options`` go with a name. Options:
    """
    res = seek_batch([options])[0]
    if isinstance(res, BaseException):
        raise res
    return res


# the signature and the option list of `seek` are generated from the spec (help(seek) and IDEs show them)
seek.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=v) for k, v in DEFAULTS.items()],
    return_annotation=SeekResult)
seek.__doc__ = (seek.__doc__ or "") + "".join(
    f"\n    - {k}={v!r}: {OPTION_DOCS[k]}" for k, v in DEFAULTS.items()) + "\n"
