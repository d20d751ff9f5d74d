"""`seek`: plant a ticket, let a pruner look for it under a protocol, train, and measure against the ticket.

``seek(task="circle", depth=4, width=100, pruner="synflow", density=0.1, protocol="singleshot", ...)`` runs one
configuration and returns a `SeekResult` (flat ``metrics``, the found ``masks``, the normalised ``config``).
``seek_batch([kwargs, ...])`` runs many: runs that share task, shape, protocol and training settings are
trained together as one batched computation (float64 results equal the one-by-one ones), and a run that fails
comes back as its exception in place of a result without touching the others.

Defaults are the paper's (DESIGN.md, "The paper's experiments"; our depth = the paper's depth - 1): Adam,
lr 1e-3, batch 32, 10 epochs; multishot 10 rounds of 5 epochs; 10 000 samples, 90/10 split, noise 0.01;
pruning data 40 samples.

Randomness: the host and the planting come from ``seed`` itself (so ``plantseek.plant(task, width, depth,
seed)`` is the same network); the data, the pruner's generator and the training shuffle use seeds derived
from it (`derive_seed`). Data and planting are drawn on the CPU in float64 and then moved to the device and
training dtype, so a seed means the same planted network everywhere.

Metrics (flat keys): test_loss, test_accuracy (classification), test_loss_rescaled (regression: per-output
least-squares factor fitted on the test outputs, the paper's evaluation), test_loss_planted_scale and
output_scale_fitted (strong), ticket_test_loss/ticket_test_accuracy (the planted ticket itself),
dense_test_loss/dense_test_accuracy (the dense host trained for ``epochs`` epochs with the same optimiser,
cached per configuration; it trains ``epochs`` epochs from the planted weights, under multishot the same
budget as every pruned run's final phase, whose rounds end in a rewind), rescale_factor (g of the last weak
training phase's rescale, 1 when the rule skipped it; absent with rescale="none"), requested_density, density (achieved, biases included), weight_density,
ticket_density, effective_density, dead_neurons, layer_collapse, precision/recall/f1/jaccard overall and per
layer (``recall_layer_{i}`` ...), functional_recall and functional_recall_layer_{i} (ticket neurons whose
activations on the test inputs some found neuron of the same layer computes up to a positive factor; see
`plantseek.metrics.functional_recall`), ticket_survived, layer_density_{i} and ticket_layer_density_{i} (kept
fraction of the weights of layer i), train_time_s (wall time of this run; batched work is shared equally),
hiding_median_percentile.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import numbers
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from . import arguments as _args
from . import init as _inits
from . import metrics as _metrics
from . import protocols as _protocols
from . import tasks as _tasks
from . import train as _train
from .arguments import check_bool
from .device import resolve_device, resolve_dtype
from .masks import Mask
from .pruners.base import check_density, default_scope, parse_density
from .rescale import MODES as RESCALE_MODES
from .rescale import check_mode as check_rescale

DEFAULTS: dict[str, Any] = dict(
    task="circle", depth=4, width=100, pruner="synflow", density=0.1, protocol="singleshot", epochs=10, seed=0,
    device="auto", dtype="float32", lr=1e-3, batch_size=32, optimizer="adam", rounds=10, round_epochs=5,
    scope=None, prune_bias=True, n_samples=10_000, noise=0.01, pruning_samples=40, init="he-scaled",
    dense_baseline=True, progress=True, impl="auto", pruner_options=None, rescale="fit",
)

# one line of help per option of DEFAULTS; the CLI (`plantseek seek --help`) is generated from these two
OPTION_DOCS: dict[str, str] = dict(
    task="task name (plantseek tasks)",
    depth="number of linear layers (the paper's depth - 1)",
    width="hidden width, or a comma-separated list (one per hidden layer)",
    pruner="pruner name (plantseek pruners)",
    density="kept fraction in (0, 1], or 'ticket' (the planted ticket's density)",
    protocol="pruning protocol: singleshot, multishot or strong",
    epochs="training epochs (of the final phase under multishot)",
    seed="seed of the host, the planting, the data, the pruner and the training",
    device="auto, cpu, cuda, cuda:N",
    dtype="float32 or float64",
    lr="learning rate",
    batch_size="training batch size",
    optimizer="optimiser of every training phase",
    rounds="multishot rounds",
    round_epochs="multishot epochs per round",
    scope="pruning scope; unset means the pruner's own",
    prune_bias="prune the biases with the weights",
    n_samples="samples drawn for the task (90/10 train/test split)",
    noise="target noise: the standard deviation (regression) or the label-flip probability (classification)",
    pruning_samples="samples the pruner scores on",
    init="host initialisation",
    dense_baseline="train the dense host as a baseline",
    progress="show a progress bar",
    impl="masked layer implementation",
    pruner_options="options of the named pruner (e.g. iterations=1)",
    rescale="weak protocols: 'fit' rescales each masked network to its fitted output scale and balances its "
            "neurons before training (function-preserving); 'fit-even' only spreads the scale over the layers; "
            "'none' is the paper's protocol",
)

# the allowed values of the options that have a fixed set (a callable: read from a registry when asked)
OPTION_CHOICES: dict[str, Any] = dict(
    optimizer=("adam", "sgd"), impl=("auto", "dense", "sparse"), rescale=RESCALE_MODES, scope=("global", "layer"),
    init=_inits.available,
)


def option_choices(key: str) -> tuple | None:
    """The allowed values of option `key`, or None when any value of its type may be given."""
    choices = OPTION_CHOICES.get(key)
    return tuple(choices()) if callable(choices) else choices

# settings that must agree for runs to be trained together
GROUP_KEYS = ("task", "depth", "width", "protocol", "epochs", "dtype", "device", "lr", "batch_size", "optimizer",
              "rounds", "round_epochs", "n_samples", "impl", "rescale")
# options that take only True or False (prune_bias, dense_baseline, progress)
BOOLEAN_KEYS = tuple(k for k, v in DEFAULTS.items() if isinstance(v, bool))


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
        keys = ("density", test, f"ticket_{test}", "recall", "functional_recall")
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
    """Fill in defaults and validate one run's arguments; returns the normalised configuration.

    The configuration keeps the pruner object under ``pruner_obj`` and its name/options under ``pruner`` and
    ``pruner_options``; ``device`` is resolved ("auto" -> "cpu" or "cuda") and ``dtype`` is a name.
    """
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise TypeError(f"seek got unknown argument(s) {', '.join(unknown)}; known: {', '.join(sorted(DEFAULTS))}")
    cfg = {**DEFAULTS, **kwargs}
    task = _tasks.get(cfg["task"])  # unknown task -> ValueError listing the known ones
    cfg["task"] = task.name
    proto = _protocols.get(cfg["protocol"])
    cfg["protocol"] = proto.name
    cfg["depth"] = _args.depth(cfg["depth"])
    if cfg["depth"] < task.min_depth:
        raise ValueError(f"task {task.name!r} needs depth >= {task.min_depth} (got {cfg['depth']})")
    cfg["width"] = _args.width(cfg["width"])
    cfg["density"] = parse_density(cfg["density"])  # "ticket" stays symbolic until the planted network exists
    cfg["epochs"] = _args.integer("epochs", cfg["epochs"], 0)
    cfg["seed"] = _args.seed(cfg["seed"])
    cfg["batch_size"] = _args.integer("batch_size", cfg["batch_size"])
    cfg["rounds"] = _args.integer("rounds", cfg["rounds"])
    cfg["round_epochs"] = _args.integer("round_epochs", cfg["round_epochs"], 0)
    cfg["n_samples"] = _args.integer("n_samples", cfg["n_samples"], 2)
    cfg["pruning_samples"] = _args.integer("pruning_samples", cfg["pruning_samples"])
    lr = cfg["lr"]
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    cfg["lr"] = float(lr)
    cfg["noise"] = task.check_noise(cfg["noise"])
    if cfg["scope"] is not None and cfg["scope"] not in OPTION_CHOICES["scope"]:
        raise ValueError(f"scope must be 'global', 'layer' or None (the pruner's default), got {cfg['scope']!r}")
    for key in ("optimizer", "impl"):
        if cfg[key] not in OPTION_CHOICES[key]:
            raise ValueError(f"unknown {key} {cfg[key]!r}; available: {', '.join(OPTION_CHOICES[key])}")
    cfg["rescale"] = check_rescale(cfg["rescale"])
    for key in BOOLEAN_KEYS:
        cfg[key] = check_bool(key, cfg[key])
    dev = resolve_device(cfg["device"])
    cfg["device"] = str(dev)
    cfg["dtype"] = str(resolve_dtype(cfg["dtype"])).replace("torch.", "")
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

class _LRU(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key, make, cache: bool = True):
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        if cache:
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)
        return value


_NETS = _LRU(16)
_DATA = _LRU(16)
_TICKET = _LRU(256)
_DENSE = _LRU(1024)
_CACHE_MAX_PARAMS = 4_000_000  # planted networks larger than this are not kept in memory


def clear_caches() -> None:
    """Forget cached planted networks, data, ticket and dense-baseline metrics."""
    for c in (_NETS, _DATA, _TICKET, _DENSE):
        c.clear()


def _width_key(width) -> Any:
    return tuple(width) if isinstance(width, list) else width


def _planted(cfg: dict):
    from .planting import plant

    key = (cfg["task"], cfg["depth"], _width_key(cfg["width"]), cfg["seed"], cfg["init"])

    def make():
        return plant(cfg["task"], width=cfg["width"], depth=cfg["depth"], seed=cfg["seed"], init=cfg["init"], device="cpu")

    widths = [int(v) for v in (cfg["width"] if isinstance(cfg["width"], list) else [cfg["width"]] * (cfg["depth"] - 1))]
    task = _tasks.get(cfg["task"])
    full = [task.input_dim] + widths + [task.output_dim]
    n_params = sum(a * b + b for a, b in zip(full[:-1], full[1:]))
    return _NETS.get_or(key, make, cache=n_params <= _CACHE_MAX_PARAMS)


def _data(cfg: dict):
    key = (cfg["task"], cfg["n_samples"], cfg["noise"], cfg["seed"])
    return _DATA.get_or(key, lambda: _tasks.get(cfg["task"]).data(cfg["n_samples"], cfg["noise"], derive_seed(cfg["seed"], "data")))


def _ticket_metrics(cfg: dict, net, data) -> dict:
    key = (cfg["task"], cfg["depth"], _width_key(cfg["width"]), cfg["seed"], cfg["init"], cfg["n_samples"], cfg["noise"])

    def make():
        task = _tasks.get(cfg["task"])
        ev = task.evaluate(net.ticket.forward(data.x_test), data.y_test)
        out = {"ticket_test_loss": ev["loss"]}
        if "accuracy" in ev:
            out["ticket_test_accuracy"] = ev["accuracy"]
        return out

    return _TICKET.get_or(key, make)


def _dense_key(cfg: dict) -> tuple:
    return (cfg["task"], cfg["depth"], _width_key(cfg["width"]), cfg["seed"], cfg["init"], cfg["n_samples"], cfg["noise"],
            cfg["epochs"], cfg["lr"], cfg["batch_size"], cfg["optimizer"], cfg["dtype"], cfg["device"], cfg["rescale"])


# ------------------------------------------------------------------------------------------------ metrics

def _connectivity(mask: Mask) -> dict:
    """effective_density, dead_neurons and layer_collapse from `metrics.connectivity`."""
    c = _metrics.connectivity(mask)
    return {"effective_density": float(c["effective_density"]), "dead_neurons": int(c["dead_neurons"]),
            "layer_collapse": bool(c["layer_collapse"])}


def mask_metrics(mask: Mask, net) -> dict:
    """Density, per-layer densities (found and ticket), recovery and connectivity of a mask."""
    tmask = [(wm.to(mask[0][0].device), bm.to(mask[0][0].device)) for wm, bm in net.ticket_mask]
    out: dict[str, Any] = {**_metrics.densities(mask, tmask), "ticket_density": float(net.ticket_density)}
    out.update(_metrics.flat_recovery(mask, tmask))
    out.update(_connectivity(mask))
    return out


def output_metrics(task, run: _protocols.Run, scaled: bool) -> dict:
    """test_loss/test_accuracy (fitted scale under strong), test_loss_planted_scale, test_loss_rescaled."""
    W = [w.unsqueeze(0) for w in run.weights]
    B = [b.unsqueeze(0) for b in run.biases]
    data = run.data
    out_test = _train.evaluate_outputs(W, B, data.x_test.unsqueeze(0))[0]
    m: dict[str, Any] = {}
    regression = task.kind != "classification"
    if scaled:
        out_train = _train.evaluate_outputs(W, B, data.x_train.unsqueeze(0))[0]
        if regression:
            c = _protocols.fit_regression_scale(out_train, data.y_train)
            fitted = out_test * c
            divisors = [(1.0 / v) if v != 0 else float("nan") for v in c.tolist()]
            m["output_scale_fitted"] = divisors[0] if len(divisors) == 1 else float(sum(divisors) / len(divisors))
            if len(divisors) > 1:
                for k, v in enumerate(divisors):
                    m[f"output_scale_fitted_{k}"] = v
        else:
            t = _protocols.fit_temperature(out_train, data.y_train)
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
        c = _protocols.fit_regression_scale(out_test, data.y_test)
        m["test_loss_rescaled"] = task.evaluate(out_test * c, data.y_test)["loss"]
    return m


# ------------------------------------------------------------------------------------------------ running

def _label(cfg: dict) -> str:
    return (f"{cfg['task']} depth={cfg['depth']} width={cfg['width']} {cfg['pruner']} density={cfg['density']} "
            f"{cfg['protocol']} seed={cfg['seed']}")


def _make_run(cfg: dict, device: torch.device, dtype: torch.dtype):
    # a run that cannot fit is refused before planting allocates anything (PLANTSEEK_SKIP_MEMORY_CHECK=1: run it)
    from .memory import check_fits

    check_fits(cfg, str(device), what=f"run {_label(cfg)}")
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


def _run_group(cfgs: list[dict]) -> list[SeekResult | BaseException]:
    """Run configurations that share GROUP_KEYS together."""
    c0 = cfgs[0]
    device, dtype = resolve_device(c0["device"]), resolve_dtype(c0["dtype"])
    task = _tasks.get(c0["task"])
    proto = _protocols.get(c0["protocol"])
    settings = _protocols.Settings(
        task=task, epochs=c0["epochs"], batch_size=c0["batch_size"], lr=c0["lr"], optimizer=c0["optimizer"],
        rounds=c0["rounds"], round_epochs=c0["round_epochs"], impl=c0["impl"], rescale=c0["rescale"],
        progress=any(c["progress"] for c in cfgs),
    )
    results: list[SeekResult | BaseException | None] = [None] * len(cfgs)
    runs: list[_protocols.Run | None] = [None] * len(cfgs)
    tickets: list[dict | None] = [None] * len(cfgs)
    for i, cfg in enumerate(cfgs):
        try:
            t0 = time.perf_counter()
            runs[i], tickets[i] = _make_run(cfg, device, dtype)
            runs[i].time_s += time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001
            results[i] = exc
    # dense baselines not yet cached: one per distinct key, trained in the same batch where the protocol can
    dense_runs: dict[tuple, _protocols.Run] = {}
    for i, cfg in enumerate(cfgs):
        if runs[i] is None or not cfg["dense_baseline"]:
            continue
        key = _dense_key(cfg)
        if key in _DENSE or key in dense_runs:
            continue
        r = runs[i]
        dense_runs[key] = _protocols.Run(
            label=f"dense host of {_label(cfg)}", net=r.net, data=r.data,
            train_generator=torch.Generator(device=device).manual_seed(derive_seed(cfg["seed"], "train")),
        )
    live = [r for r in runs if r is not None]
    proto.run(live, list(dense_runs.values()), settings)
    for key, d in dense_runs.items():
        if d.ok and d.weights is not None:
            W = [w.unsqueeze(0) for w in d.weights]
            B = [b.unsqueeze(0) for b in d.biases]
            out = _train.evaluate_outputs(W, B, d.data.x_test.unsqueeze(0))[0]
            ev = task.evaluate(out, d.data.y_test)
            _DENSE[key] = {"dense_test_loss": ev["loss"], **({"dense_test_accuracy": ev["accuracy"]} if "accuracy" in ev else {})}
        else:  # a diverging dense baseline is reported as NaN, it does not fail the run
            _DENSE[key] = {"dense_test_loss": float("nan"), **({"dense_test_accuracy": float("nan")} if task.kind == "classification" else {})}
    for i, cfg in enumerate(cfgs):
        r = runs[i]
        if r is None:
            continue
        if not r.ok:
            results[i] = r.error
            continue
        try:
            t0 = time.perf_counter()
            m: dict[str, Any] = {}
            m.update(output_metrics(task, r, proto.scaled))
            m.update(tickets[i])
            if cfg["dense_baseline"]:
                m.update(_DENSE.get(_dense_key(cfg), {}))
                m["dense_epochs"] = cfg["epochs"]  # the final-phase budget of every protocol (multishot rewinds)
            m["requested_density"] = r.density
            m.update(mask_metrics(r.mask, r.net))
            m.update(_metrics.flat_functional_recall(r.weights, r.biases, r.net.ticket.weights, r.net.ticket.biases,
                                                     r.data.x_test))
            m["hiding_median_percentile"] = float(r.net.hiding.get("median_percentile", float("nan")))
            for key in ("train_loss", "rescale_factor"):
                if key in r.extra:
                    m[key] = r.extra[key]
            m["output_scale"] = float(r.net.output_scale)
            r.time_s += time.perf_counter() - t0
            m["train_time_s"] = r.time_s
            results[i] = SeekResult(metrics=m, masks=r.mask, config=public_config(cfg), weights=r.weights, biases=r.biases)
        except Exception as exc:  # noqa: BLE001
            results[i] = exc
    return results  # type: ignore[return-value]


def _threads_context(cfgs: list[dict]):
    """One CPU thread for small groups (see `plantseek.train.cpu_threads_for`)."""
    c0 = cfgs[0]
    task = _tasks.get(c0["task"])
    widths = c0["width"] if isinstance(c0["width"], list) else [c0["width"]] * (c0["depth"] - 1)
    full = [task.input_dim] + list(widths) + [task.output_dim]
    work = len(cfgs) * c0["batch_size"] * sum(a * b for a, b in zip(full[:-1], full[1:]))
    return _train.cpu_threads_for(work, c0["device"])


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


def seek(
    *,
    task: str = "circle",
    depth: int = 4,
    width: int | Sequence[int] = 100,
    pruner: Any = "synflow",
    density: float | str = 0.1,
    protocol: str = "singleshot",
    epochs: int = 10,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "float32",
    lr: float = 1e-3,
    batch_size: int = 32,
    optimizer: str = "adam",
    rounds: int = 10,
    round_epochs: int = 5,
    scope: str | None = None,
    prune_bias: bool = True,
    n_samples: int = 10_000,
    noise: float = 0.01,
    pruning_samples: int = 40,
    init: str = "he-scaled",
    dense_baseline: bool = True,
    progress: bool = True,
    impl: str = "auto",
    pruner_options: dict | None = None,
    rescale: str = "fit",
) -> SeekResult:
    """Plant, prune, train (or not: strong) and measure one configuration; raises on failure.

    Arguments (defaults = the paper's): task="circle", depth=4, width=100, pruner="synflow" (a name or a
    configured pruner from `plantseek.pruners.get`), density=0.1 (a float in (0, 1] or "ticket"),
    protocol="singleshot" | "multishot" | "strong", epochs=10, seed=0, device="auto", dtype="float32",
    lr=1e-3, batch_size=32, optimizer="adam", rounds=10, round_epochs=5, scope=None (the pruner's default;
    "global" or "layer"), prune_bias=True, n_samples=10000, noise=0.01, pruning_samples=40 (for pruners that
    score on data), init="he-scaled", dense_baseline=True, progress=True, impl="auto" ("dense", "sparse"),
    pruner_options=None (with a pruner name), rescale="fit" (the function-preserving rescale before each weak
    training phase, `plantseek.rescale`; "fit-even" without the neuron balancing; "none" is the paper's protocol).
    """
    kwargs = dict(locals())
    res = seek_batch([kwargs])[0]
    if isinstance(res, BaseException):
        raise res
    return res
