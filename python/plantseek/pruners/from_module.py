"""Pruners written against a `torch.nn.Module`: ``from_module(fn, name=...)`` makes ``fn(module, data,
density, generator)`` a registered plantseek pruner.

plantseek hands ``fn`` the network as a plain module (`PlantedNetwork.to_module`: ``nn.Linear`` layers with
ReLUs between them; a convolutional network's own module of ``nn.Conv2d`` / ``nn.Linear`` layers,
`plantseek.image`), with the parameters that the current mask has pruned already set to zero. ``fn`` prunes it
in place (and returns None) or returns a module of the same structure; plantseek reads each layer's weight
and bias masks back from the first of:

1. a parametrization (``torch.nn.utils.parametrize``): the ``mask`` tensors of its parametrizations
   (``torch.ao.pruning``'s FakeSparsity has one); without one, the nonzeros of the parametrized tensor;
2. a ``weight_mask`` / ``bias_mask`` buffer (``torch.nn.utils.prune``);
3. the nonzeros of the parameter itself (pruning by zeroing).

The masks are nested in the current mask and, unless the pruner is registered with ``exact=False``, must keep
exactly ``round(density x prunable count)`` parameters (`base.check_kept`, the rule of every pruner).

``fn`` also gets ``scope``, ``prune_bias`` and ``mask`` (the current mask) as keyword arguments when it takes
them; a ``scope`` default becomes the pruner's default scope. Its other keyword arguments (with defaults) are
the pruner's options: ``pruners.get(name, alpha=2)``, ``pruner_options`` in ``seek`` and sweep files.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..kernels.checks import describe
from ..masks import Mask
from . import base
from .base import Pruner, check_density, check_kept, check_reachable, check_scope, current_mask, device_generator
from .selection import SCOPES

__all__ = ["from_module", "ModulePruner", "read_masks"]

_STANDARD = ("module", "data", "density", "generator")
_PASSED = ("scope", "prune_bias", "mask")  # handed to fn when it takes them
_RESERVED = {"name", "exact", "options", "needs_data", "fn"}


class ModulePruner(Pruner):
    """The base of the pruners that `from_module` makes (one subclass per wrapped function)."""

    fn: Callable[..., Any]
    needs_data = True
    fn_scope: str = "global"  # the scope of a function without a `scope` argument, else its default
    takes: frozenset = frozenset()  # which of scope, prune_bias, mask the function takes
    option_defaults: dict = {}
    any_options: bool = False  # the function takes **kwargs

    def __init__(self, **options: Any) -> None:
        name = self.name or type(self).__name__
        unknown = sorted(set(options) - set(self.option_defaults)) if not self.any_options else []
        taken = sorted(set(options) & (set(_PASSED) | _RESERVED))
        if taken:
            raise ValueError(f"pruner {name!r}: {', '.join(map(repr, taken))} cannot be options (plantseek passes "
                             f"scope, prune_bias and mask itself, and uses {', '.join(sorted(_RESERVED))})")
        if unknown:
            known = ", ".join(self.option_defaults) or "none"
            raise ValueError(f"pruner {name!r} has no option(s) {', '.join(map(repr, unknown))}; its options: {known}")
        self.options = {**self.option_defaults, **options}

    def prune(self, net, data, density, *, scope="global", prune_bias=True, generator=None, mask=None) -> Mask:
        return self._prune(net, data, density, scope=scope, prune_bias=prune_bias, generator=generator, mask=mask)

    def _prune(self, net, data, density, *, scope, prune_bias, generator, mask) -> Mask:
        name = self.name or type(self).__name__
        prune_bias = bool(prune_bias)
        density = check_density(density, net, scope=scope, prune_bias=prune_bias)
        check_scope(scope)
        if self.exact and scope != self.fn_scope and "scope" not in self.takes:
            raise ValueError(f"pruner {name!r} prunes with scope={self.fn_scope!r} only: its function "
                             f"{_label(self.fn)} takes no `scope` argument, so scope={scope!r} cannot be asked of it")
        current = current_mask(net, mask)
        check_reachable(current, density, scope, prune_bias)
        module = _module_of(net, None if mask is None else current, name)
        extra = {"scope": scope, "prune_bias": prune_bias, "mask": [(a.clone(), b.clone()) for a, b in current]}
        kwargs = {k: v for k, v in extra.items() if k in self.takes}
        out = type(self).fn(module, data, density, device_generator(generator, net.device), **kwargs, **self.options)
        found = read_masks(module if out is None else out, net, name)
        found = [(wm & cw, bm & cb) for (wm, bm), (cw, cb) in zip(found, current)]
        check_kept(found, density, name, previous=None if mask is None else current, scope=scope,
                   prune_bias=prune_bias, exact=self.exact)
        return found


def from_module(fn: Callable[..., Any] | None = None, *, name: str, exact: bool = True):
    """Register ``fn(module, data, density, generator)`` as the pruner ``name`` and return its class.

    ``fn`` prunes the `torch.nn.Module` it is given (torch.nn.utils.prune, parametrizations or zeroing; see the
    module docstring for how the masks are read back) to keep ``density`` of the prunable parameters.
    ``exact=False``: the pruner may keep another count (what it keeps is reported as ``kept_density``).
    Without ``fn``, a decorator: ``@from_module(name="my-l1")``.

    Ties: plantseek's own pruners keep, among equal scores, the lowest flat index (weight 0, bias 0, weight 1,
    ...); a wrapped function breaks them its own way (``torch.nn.utils.prune.L1Unstructured`` prunes the
    entries that ``torch.topk(largest=False)`` returns, whose choice among equal magnitudes is unspecified), so
    its masks can differ from the built-in equivalent only where scores tie at the threshold.
    """
    if fn is None:
        return lambda f: from_module(f, name=name, exact=exact)
    if not isinstance(name, str) or not name:
        raise ValueError(f"from_module: name must be a non-empty string, got {name!r}")
    if not isinstance(exact, bool):
        raise ValueError(f"from_module({name!r}): exact must be True or False, got {exact!r}")
    if not callable(fn):
        raise TypeError(f"from_module({name!r}) needs a function fn(module, data, density, generator), "
                        f"got {describe(fn)}")
    attrs = _signature_facts(fn, name)
    doc = inspect.getdoc(fn) or f"{_label(fn)}: a pruner on a torch.nn.Module (plantseek.pruners.from_module)"
    cls = type(_class_name(name), (ModulePruner,), {
        **attrs, "fn": staticmethod(fn), "exact": exact, "__doc__": doc,
        "__module__": getattr(fn, "__module__", None) or __name__,
    })
    _replace_reimported(name, fn)
    return base.register(name)(cls)


def _signature_facts(fn: Callable[..., Any], name: str) -> dict:
    """What the pruner class needs to know of ``fn``'s signature: passed keywords, options, default scope,
    and the ``__init__`` / ``prune`` signatures that show them (pruners.get checks options against them)."""
    where = f"from_module({name!r}): {_label(fn)}"
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise TypeError(f"{where} has no signature that plantseek can read") from None
    params = list(sig.parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = positional[len(_STANDARD):] + [p for p in params if p.kind is p.KEYWORD_ONLY]
    any_options = any(p.kind is p.VAR_KEYWORD for p in params)
    takes = frozenset(p.name for p in rest if p.name in _PASSED) | (frozenset(_PASSED) if any_options else frozenset())
    options = [p for p in rest if p.name not in _PASSED]
    for p in options:
        if p.default is p.empty or p.name in _RESERVED:
            why = "has no default" if p.default is p.empty else "is a name plantseek uses"
            raise TypeError(f"{where}: its argument {p.name!r} {why}; the arguments after (module, data, density, "
                            f"generator) are the pruner's options and need defaults (or are scope, prune_bias, mask)")
    try:
        sig.bind(*_STANDARD)
    except TypeError:
        raise TypeError(f"{where} must take (module, data, density, generator); its signature is {sig}") from None
    scope_default = getattr(sig.parameters.get("scope"), "default", None)
    fn_scope = scope_default if isinstance(scope_default, str) and scope_default in SCOPES else "global"

    def __init__(self, **opts):
        ModulePruner.__init__(self, **opts)

    init_params = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    init_params += [p.replace(kind=p.KEYWORD_ONLY) for p in options]
    if any_options:
        init_params.append(inspect.Parameter("options", inspect.Parameter.VAR_KEYWORD))
    __init__.__signature__ = inspect.Signature(init_params)

    def prune(self, net, data, density, *, scope=fn_scope, prune_bias=True, generator=None, mask=None):
        return self._prune(net, data, density, scope=scope, prune_bias=prune_bias, generator=generator, mask=mask)

    return {"__init__": __init__, "prune": prune, "takes": takes, "any_options": any_options,
            "option_defaults": {p.name: p.default for p in options}, "fn_scope": fn_scope}


def _replace_reimported(name: str, fn: Callable[..., Any]) -> None:
    """A module imported again (a notebook cell run twice, a Dask worker) registers the same function anew:
    the new class replaces the old one. Any other pruner of that name stays an error (`register`)."""
    old = base._REGISTRY.get(name)
    if old is not None and issubclass(old, ModulePruner) and _identity(old.fn) == _identity(fn):
        del base._REGISTRY[name]


def _identity(fn) -> tuple:
    return getattr(fn, "__module__", None), getattr(fn, "__qualname__", None) or repr(fn)


def _label(fn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__name__


def _class_name(name: str) -> str:
    return "FromModule_" + "".join(c if c.isalnum() else "_" for c in name)


def _module_of(net, mask: Mask | None, name: str) -> nn.Module:
    to_module = getattr(net, "to_module", None)
    if not callable(to_module):
        raise ValueError(f"pruner {name!r} prunes a torch.nn.Module, but the network ({type(net).__name__}) has no "
                         f"to_module()")
    return to_module(mask)


# ------------------------------------------------------------------------------------------------ reading masks

def read_masks(module: Any, net, name: str = "module") -> Mask:
    """The (weight_mask, bias_mask) pairs of ``module``'s Linear/Conv layers, in order, on the network's device;
    ValueError naming pruner ``name`` and the layer when the module's structure is not the network's or a mask
    cannot be read (wrong shape, values other than 0/1, NaN)."""
    if not isinstance(module, nn.Module):
        raise ValueError(f"pruner {name!r}: its function returned {describe(module)}; expected None (the module it "
                         f"was given, pruned in place) or a torch.nn.Module with the network's layers")
    layers = _layers(module)
    depth = len(net.weights)
    if len(layers) != depth:
        found = ", ".join(f"{n!r} ({type(m).__name__})" for n, m in layers) or "none"
        raise ValueError(f"pruner {name!r}: the module it returned has {len(layers)} Linear/Conv layers ({found}), "
                         f"the network has {depth}; return the module plantseek handed over, pruned")
    masks = []
    for i, ((lname, layer), w, b) in enumerate(zip(layers, net.weights, net.biases)):
        where = f"pruner {name!r} layer {i} ({lname!r}, {type(layer).__name__})"
        pair = tuple(_read(layer, part, tuple(t.shape), where) for part, t in (("weight", w), ("bias", b)))
        masks.append((pair[0].to(net.device), pair[1].to(net.device)))
    return masks


def _layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """The Linear and convolution layers of ``module`` in order (not those inside a parametrization)."""
    return [(qualname or type(m).__name__, m) for qualname, m in module.named_modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and "parametrizations" not in qualname.split(".")]


def _read(layer: nn.Module, part: str, shape: tuple, where: str) -> torch.Tensor:
    """One parameter's mask: from its parametrizations, its ``<part>_mask`` buffer, or its nonzeros."""
    if parametrize.is_parametrized(layer, part):
        masks = [p.mask for p in layer.parametrizations[part] if isinstance(getattr(p, "mask", None), torch.Tensor)]
        if masks:
            out = None
            for k, m in enumerate(masks):
                got = _as_bool(m, shape, f"{where}: the mask of parametrization {k} of its {part}")
                out = got if out is None else out & got
            return out
        return _nonzero(getattr(layer, part), shape, f"{where}: its parametrized {part}")
    buffer = getattr(layer, f"{part}_mask", None)
    if isinstance(buffer, torch.Tensor):
        return _as_bool(buffer, shape, f"{where}: its {part}_mask buffer")
    value = getattr(layer, part, None)
    if value is None:
        raise ValueError(f"{where} has no {part}; the network's layer has one of shape {shape}")
    return _nonzero(value, shape, f"{where}: its {part}")


def _check_tensor(t: Any, shape: tuple, label: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.is_meta:
        raise ValueError(f"{label} is {describe(t)}; expected a tensor of shape {shape}")
    if tuple(t.shape) != shape:
        raise ValueError(f"{label} has shape {tuple(t.shape)}, the network's has {shape}: return a module of the "
                         f"network's structure")
    if t.is_complex():
        raise ValueError(f"{label} is complex; expected a bool mask (or real parameters)")
    return t.detach()


def _as_bool(t: Any, shape: tuple, label: str) -> torch.Tensor:
    """A mask tensor (bool, or 0/1 numbers as torch.nn.utils.prune writes them) as a bool tensor."""
    t = _check_tensor(t, shape, label)
    if t.dtype == torch.bool:
        return t.clone()
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError(f"{label} has NaN entries; a mask is bool, or 0 and 1")
    other = t[(t != 0) & (t != 1)]
    if other.numel():
        shown = ", ".join(f"{v:g}" for v in other.flatten()[:3].tolist())
        raise ValueError(f"{label} is not a mask: it holds {other.numel()} value(s) other than 0 and 1 ({shown}, ...); "
                         f"a mask is bool, or 0 and 1")
    return t != 0


def _nonzero(t: Any, shape: tuple, label: str) -> torch.Tensor:
    """The mask of a parameter pruned by zeroing: its nonzero entries (NaN is neither kept nor pruned)."""
    t = _check_tensor(t, shape, label)
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError(f"{label} has {int(torch.isnan(t).sum())} NaN entries; with no mask buffer or "
                         f"parametrization the mask is read from its exact zeros, and a NaN is neither kept nor pruned")
    return t != 0
