"""The pruner interface, the score-pruner framework and the registry.

A pruner turns a planted network (whose weights may be trained ones) and the task data into a mask: one
``(weight_mask, bias_mask)`` pair of bool tensors per layer, on the network's device::

    masks = pruner.prune(net, data, density, scope="global", prune_bias=True, generator=None, mask=None)

Most pruners only *score*: a `ScorePruner` implements ``scores(net, data, generator, mask)`` returning one
``(weight_scores, bias_scores)`` pair per layer and the framework keeps the highest scores with exact counts
(see `selection`), the scope, the bias option, the current mask and the ``iterations`` schedule. Pruners
that need more control (edge-popup, the ticket oracle) override `prune` itself.
"""
from __future__ import annotations

import inspect
import numbers
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from ..kernels.checks import describe, layer_pairs
from ..masks import Mask, check_mask
from . import selection
from .selection import SCOPES, kept_count
from ..arguments import parse_density
from ..plugins import EntryPoints

__all__ = [
    "Pruner", "ScorePruner", "register", "get", "available", "descriptions", "check_density", "parse_density",
    "check_keeps_one", "check_kept", "prunable_counts", "default_scope",
    "effective_parameters", "forward", "network_forward", "default_loss", "pruning_set", "device_generator", "kept_count",
]


# ------------------------------------------------------------------------------------------------ validation

def check_density(density: Any, net=None, *, scope: str = "global", prune_bias: bool = True) -> float:
    """A density as a float in (0, 1]; ``"ticket"`` means the planted ticket's own density (needs ``net``).

    With ``net``, a density that keeps no parameter at all (in ``scope``, with ``prune_bias``) is refused."""
    d = parse_density(density)
    if d == "ticket":
        if net is None:
            raise ValueError('density="ticket" needs the planted network')
        d = float(net.ticket_density)
    if net is not None:
        check_keeps_one(d, prunable_counts(net, prune_bias), scope)
    return d


def prunable_counts(net, prune_bias: bool = True) -> list[int]:
    """The number of prunable parameters of each layer (weights, plus biases when they are prunable)."""
    return [w.numel() + (b.numel() if prune_bias else 0) for w, b in zip(net.weights, net.biases)]


def check_keeps_one(density: float, counts: Sequence[int], scope: str = "global") -> None:
    """ValueError naming the smallest density that keeps a parameter when ``density`` keeps none.

    ``counts``: prunable parameters per layer; scope ``"layer"`` keeps ``kept_count`` of each layer."""
    counts = [int(n) for n in counts]
    if scope == "layer":
        if not counts or any(kept_count(density, n) for n in counts):
            return
        n = max(counts)
        what = f"no prunable parameter in any layer of this network (scope='layer'; the largest layer has {n})"
    else:
        n = sum(counts)
        if n == 0 or kept_count(density, n):
            return
        what = f"none of the {n} prunable parameters of this network"
    raise ValueError(f"density {density:g} keeps {what}; the smallest density that keeps one is {1.0 / n:.3g} (1/{n})")


def default_scope(pruner: Any) -> str:
    """The scope a pruner (a name, class or instance) prunes in when none is given: the default of its
    ``prune`` method's ``scope`` argument, else ``"global"``."""
    if isinstance(pruner, str):
        pruner = _registry().get(pruner)
    try:
        param = inspect.signature(pruner.prune).parameters.get("scope")
    except (AttributeError, TypeError, ValueError):
        param = None
    default = param.default if param is not None else None
    return default if default in SCOPES else "global"


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(map(repr, SCOPES))}, got {scope!r}")
    return scope


def current_mask(net, mask: Mask | None) -> Mask:
    """The validated current mask on the network's device (a fresh full mask when ``mask`` is None)."""
    if mask is None:
        return [
            (torch.ones(w.shape, dtype=torch.bool, device=w.device), torch.ones(b.shape, dtype=torch.bool, device=b.device))
            for w, b in zip(net.weights, net.biases)
        ]
    mask = check_mask(mask, net.weights, net.biases)
    return [(wm.to(net.device), bm.to(net.device)) for wm, bm in mask]


# ------------------------------------------------------------------------------------------------ helpers

def effective_parameters(net, mask: Mask | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The network's (weight, bias) pairs with pruned entries set to zero (detached copies)."""
    if mask is None:
        return [(w.detach().clone(), b.detach().clone()) for w, b in zip(net.weights, net.biases)]
    return [(w.detach() * wm, b.detach() * bm) for (w, b), (wm, bm) in zip(zip(net.weights, net.biases), mask)]


def forward(params: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """The ReLU network of ``params`` (``(out, in)`` weights) applied to ``x``; no ReLU after the last layer."""
    h = x
    last = len(params) - 1
    for i, (w, b) in enumerate(params):
        h = F.linear(h, w, b)
        if i < last:
            h = torch.relu(h)
    return h


def network_forward(net, params: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """``params`` applied to ``x`` by ``net``'s own layer sequence when it defines ``forward_params(params, x)``
    (convolutional networks, `plantseek.image`), else by the MLP `forward`: the hook that lets every pruner
    score Conv2d layers too (their masks are 4-D bool tensors in the same (weight_mask, bias_mask) pairs)."""
    fn = getattr(net, "forward_params", None)
    return fn(params, x) if callable(fn) else forward(params, x)


def default_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The task loss as `Task.loss` defines it: cross-entropy for integer labels, MSE for float targets."""
    if not targets.is_floating_point():
        return F.cross_entropy(outputs, targets)
    return F.mse_loss(outputs, targets.to(outputs.dtype).reshape(outputs.shape))


def pruning_set(net, data, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` training samples (inputs, targets) on the network's device, inputs in its dtype.

    The training set is an i.i.d. draw from the task's seeded generator, so its first ``n`` samples are a
    random sample of the task that is the same on every device (the paper's code used 40).
    """
    if data is None:
        raise ValueError("this pruner scores on data: pass the task data (a TaskData)")
    n_train = int(data.x_train.shape[0])
    if n < 1:
        raise ValueError(f"pruning_samples must be at least 1, got {n}")
    n = min(int(n), n_train)
    x = data.x_train[:n].to(device=net.device, dtype=net.dtype)
    y = data.y_train[:n]
    y = y.to(device=net.device, dtype=net.dtype) if y.is_floating_point() else y.to(device=net.device)
    return x, y


def _normalise(device: torch.device) -> torch.device:
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    if device.type == "cpu":
        return torch.device("cpu")
    return device


def device_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """A generator on ``device``: ``generator`` itself when it lives there, one seeded from it otherwise
    (a fixed seed 0 when None, so that pruning without a generator is deterministic)."""
    device = _normalise(torch.device(device))
    if generator is not None and _normalise(torch.device(generator.device)) == device:
        return generator
    if generator is None:
        seed = 0
    else:  # one 62-bit seed drawn from the given generator (a one-element tensor on its device)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


# ------------------------------------------------------------------------------------------------ interface

def check_reachable(current: Mask, density: float, scope: str, prune_bias: bool) -> None:
    """ValueError unless the current mask still keeps at least the parameters that ``density`` asks for."""
    selection._check_counts(current, density, scope, prune_bias)


def check_kept(mask: Mask, density: float, name: str, *, previous: Mask | None = None, scope: str = "global",
               prune_bias: bool = True, exact: bool = True) -> None:
    """ValueError naming pruner ``name`` unless ``mask`` keeps every bias that ``previous`` keeps when
    ``prune_bias`` is False and, when ``exact``, exactly ``kept_count(density, n)`` prunable parameters in each
    scope group (the rule `plantseek.protocols` applies to every pruner's masks)."""
    if not prune_bias:
        for i, (_, bm) in enumerate(mask):
            if not bool(bm.all() if previous is None else torch.equal(bm, previous[i][1].to(bm.device))):
                raise ValueError(f"pruner {name!r} pruned biases of layer {i} although prune_bias=False (biases "
                                 f"are not prunable then and must all be kept)")
    if not exact:
        return
    groups = [mask] if scope == "global" else [[pair] for pair in mask]
    for i, group in enumerate(groups):
        kept, total = selection.prunable_count(group, prune_bias)
        want = kept_count(density, total)
        if kept != want:
            where = "" if scope == "global" else f" in layer {i}"
            nested = " (within the previous mask)" if previous is not None else ""
            raise ValueError(
                f"pruner {name!r} kept {kept} of {total} prunable parameters{where}{nested} at density {density:g}, "
                f"expected exactly {want} = round(density x {total}) (scope={scope!r}, prune_bias={prune_bias}); a "
                f"pruner that keeps another count must say so (the class attribute exact = False, or "
                f"from_module(..., exact=False))"
            )


class Pruner:
    """Base class of all pruners. Subclasses implement `prune` (or derive from `ScorePruner`)."""

    name: str = ""
    #: whether the pruner needs the task data (the CLI and the protocols pass it in any case)
    needs_data: bool = False
    #: whether its masks keep exactly round(density x prunable count) per scope (the protocols check it);
    #: False for pruners that keep something else (the ticket oracle): what they keep is reported
    exact: bool = True

    def __init__(self, **options: Any) -> None:
        if options:
            raise ValueError(f"pruner {self.name or type(self).__name__!r} takes no options {sorted(options)}")
        self.options: dict[str, Any] = {}

    def _set_options(self, **options: Any) -> None:
        """Record the configured options (as attributes and in ``self.options``, used in names and keys)."""
        if not hasattr(self, "options"):
            self.options = {}
        for k, v in options.items():
            setattr(self, k, v)
            self.options[k] = v

    def prune(
        self,
        net,
        data,
        density: float | str,
        *,
        scope: str = "global",
        prune_bias: bool = True,
        generator: torch.Generator | None = None,
        mask: Mask | None = None,
    ) -> Mask:
        """Masks keeping ``round(density * prunable count)`` parameters per scope (a list of pairs)."""
        raise NotImplementedError(f"pruner {self.name or type(self).__name__!r} does not implement prune(net, data, "
                                  f"density, ...); override it, or derive from ScorePruner and write scores()")

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items() if not callable(v))
        return f"{self.name or type(self).__name__}({opts})"

    @classmethod
    def describe(cls) -> str:
        """The first line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""


def _score_tensor(scores, param: torch.Tensor, name: str, layer: int, part: str) -> torch.Tensor:
    """One layer's weight or bias scores as a real tensor on the parameter's device, or a ValueError naming
    the pruner and what it returned."""
    where = f"pruner {name!r} layer {layer}: the {part} scores are"
    expected = f"expected real numbers (floating-point or integer) shaped like the layer's {part} tensor"
    if scores is None or (isinstance(scores, torch.Tensor) and scores.is_meta):
        raise ValueError(f"{where} {describe(scores)}; {expected}")
    try:
        t = torch.as_tensor(scores, device=param.device)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{where} {describe(scores)}, not numbers ({exc}); {expected}") from None
    if t.is_complex() or t.dtype == torch.bool:
        raise ValueError(f"{where} {str(t.dtype).replace('torch.', '')}; {expected}")
    return t


class ScorePruner(Pruner):
    """A pruner defined by scores: keeps the highest-scoring parameters.

    Subclasses implement ``scores(self, net, data, generator, mask)`` and return one ``(weight_scores,
    bias_scores)`` pair per layer, shaped like ``net.weights[i]`` / ``net.biases[i]`` (higher = keep). ``mask``
    is the current mask (all True at the start); already-pruned parameters are never kept again whatever
    their score. A ``scores`` method that does not accept ``mask`` is called without it.

    Option ``iterations`` (R, default 1): prune in R rounds to densities d0^(1 - r/R) * density^(r/R),
    r = 1..R (d0 = density of the starting mask, 1 without one), rescoring the network masked by the
    previous round each time; the masks of the rounds are nested.
    """

    default_iterations: int = 1

    def __init__(self, iterations: int | None = None) -> None:
        self.options = {}
        it = self.default_iterations if iterations is None else iterations
        if isinstance(it, bool) or not isinstance(it, numbers.Integral) or int(it) < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        self._set_options(iterations=int(it))

    def scores(self, net, data, generator: torch.Generator, mask: Mask) -> list[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError(f"score pruner {self.name or type(self).__name__!r} does not implement "
                                  f"scores(net, data, generator, mask)")

    # -- framework
    def _call_scores(self, net, data, generator, mask):
        try:
            params = inspect.signature(self.scores).parameters
        except (TypeError, ValueError):
            params = {"mask": None}
        if "mask" in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            out = self.scores(net, data, generator, mask=mask)
        else:
            out = self.scores(net, data, generator)
        return self._check_scores(net, out)

    def _check_scores(self, net, out):
        name = self.name or type(self).__name__
        out = layer_pairs(out, net.depth, f"the scores that pruner {name!r} returned",
                          what="(weight_scores, bias_scores) pair")
        checked = []
        for i, (pair, w, b) in enumerate(zip(out, net.weights, net.biases)):
            ws, bs = (_score_tensor(s, t, name, i, part) for s, t, part in zip(pair, (w, b), ("weight", "bias")))
            if tuple(ws.shape) != tuple(w.shape) or tuple(bs.shape) != tuple(b.shape):
                raise ValueError(
                    f"pruner {name!r} layer {i}: score shapes {tuple(ws.shape)}/{tuple(bs.shape)} do not match "
                    f"the parameters' {tuple(w.shape)}/{tuple(b.shape)}"
                )
            if bool(torch.isnan(ws).any()) or bool(torch.isnan(bs).any()):
                raise ValueError(f"pruner {name!r} produced NaN scores in layer {i}")
            checked.append((ws, bs))
        common = None
        for pair in checked:
            for t in pair:
                common = t.dtype if common is None else torch.promote_types(common, t.dtype)
        if any(t.dtype != common for pair in checked for t in pair):  # one flat vector per scope: one dtype
            checked = [(ws.to(common), bs.to(common)) for ws, bs in checked]
        return checked

    def prune(self, net, data, density, *, scope="global", prune_bias=True, generator=None, mask=None) -> Mask:
        density = check_density(density, net, scope=scope, prune_bias=bool(prune_bias))
        check_scope(scope)
        current = current_mask(net, mask)
        gen = device_generator(generator, net.device)
        kept0, total = selection.prunable_count(current, bool(prune_bias))
        d0 = kept0 / total if total else 1.0
        rounds = int(self.options.get("iterations", 1))
        check_reachable(current, density, scope, bool(prune_bias))
        for r in range(1, rounds + 1):
            if r == rounds:
                d_r = density
            else:
                d_r = (d0 ** (1.0 - r / rounds)) * (density ** (r / rounds)) if d0 > 0 else density
            if self._nothing_to_prune(current, d_r, scope, bool(prune_bias)):
                continue
            scores = self._call_scores(net, data, gen, current)
            current = selection.select(scores, d_r, current, scope=scope, prune_bias=bool(prune_bias))
        return [(wm.clone(), bm.clone()) for wm, bm in current] if mask is not None else current

    @staticmethod
    def _nothing_to_prune(current: Mask, density: float, scope: str, prune_bias: bool) -> bool:
        """True when the target counts equal what the current mask keeps in every scope (no scoring needed)."""
        groups = [current] if scope == "global" else [[pair] for pair in current]
        for g in groups:
            kept, total = selection.prunable_count(g, prune_bias)
            if kept_count(density, total) != kept:
                return False
        return True


# ------------------------------------------------------------------------------------------------ registry

_REGISTRY: dict[str, type] = {}


def _adopt(name: str, obj: Any) -> None:
    """An entry point that names an unregistered Pruner subclass registers it under the entry point's name."""
    if isinstance(obj, type) and issubclass(obj, Pruner) and obj not in _REGISTRY.values():
        register(name)(obj)


_PLUGINS = EntryPoints("plantseek.pruners", "pruner", _adopt)


def _registry() -> dict[str, type]:
    """The registry, with the installed plugins (entry points of ``plantseek.pruners``) loaded on first use."""
    _PLUGINS.load()
    return _REGISTRY


def register(name: str) -> Callable[[type], type]:
    """Class decorator adding a `Pruner` subclass to the registry under ``name`` (sets ``cls.name``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"a pruner name must be a non-empty string, got {name!r}")

    def wrap(cls: type) -> type:
        if not (isinstance(cls, type) and issubclass(cls, Pruner)):
            raise TypeError(f"register({name!r}) needs a Pruner subclass, got {cls!r}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"pruner {name!r} is already registered (by {_REGISTRY[name].__qualname__})")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available() -> list[str]:
    """Names of the registered pruners (sorted), installed plugins included."""
    return sorted(_registry())


def descriptions() -> dict[str, str]:
    """One line per registered pruner (first docstring line), for ``plantseek pruners``."""
    registry = _registry()
    return {name: registry[name].describe() for name in available()}


def get(name: str | Pruner, **options: Any) -> Pruner:
    """A configured pruner: ``get("synflow", iterations=1)``. Unknown names raise ValueError listing the known
    ones; unknown options raise ValueError listing the pruner's options. A Pruner instance passes through."""
    if isinstance(name, Pruner):
        if options:
            raise ValueError("options can only be given with a pruner name, not with a configured pruner")
        return name
    registry = _registry()
    if not isinstance(name, str) or name not in registry:
        raise ValueError(f"unknown pruner {name!r}; available: {', '.join(available())}")
    cls = registry[name]
    sig = inspect.signature(cls.__init__)
    params = {k: p for k, p in sig.parameters.items() if k != "self"}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_any:
        unknown = sorted(set(options) - set(params))
        if unknown:
            known = [k for k, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
            raise ValueError(
                f"pruner {name!r} has no option(s) {', '.join(map(repr, unknown))}; "
                f"its options: {', '.join(known) if known else 'none'}"
            )
    return cls(**options)
