"""Planting of any sparse convolutional / linear ticket, given as a state dict, into a wider host module.

`plant_state_dict(ticket_state_dict, host_module, seed=...)` follows the MLP planting rule of DESIGN.md
("Planting") layer by layer, with *channels* in the role of neurons:

- the host's layer sequence is read from its leaf modules in order (a flat or nested ``nn.Sequential``):
  Conv2d and Linear layers (with biases) are the planted layers; ReLU, max / average pooling (also adaptive),
  Flatten, Identity and Dropout (identity at evaluation) may sit between them: all commute with a positive
  per-channel scale. BatchNorm in the host is rejected (its random statistics would change the planted
  function); BatchNorm in the ticket is folded into the layer before it (`fold_batch_norm_state`).
- a ticket conv filter's entries (in_channel, kh, kw) are the columns of the matching problem: the conv
  weight is reshaped to (out_ch, in_ch * kh * kw) and the column (c, i, j) of a ticket input channel c maps to
  (map[c], i, j) in the host; `plantseek.kernels.planting_search.plant_search` (native kernel) picks, for each ticket
  channel in order, the unused host channel whose own values there have the ticket's signs and the smallest
  L1 distance after the best positive rescaling lambda; those entries are overwritten with lambda x target and
  the channel's scale is lambda (the host channel then computes lambda x the ticket channel, before and after
  ReLU and pooling).
- at the flatten step a channel maps to its block of H x W flattened features (feature c * HW + p of the
  ticket goes to map[c] * HW + p of the host, with the channel's scale);
- the output layer keeps the ticket's unit order and one shared positive ``output_scale`` chosen by the
  median rule (median magnitude of the planted output weights = median magnitude of the host values they
  replace), so class decisions of the planted ticket are exact.

The masked host (`PlantedModule.forward(x, mask=ticket_mask)`) computes ``output_scale x ticket(x)``
exactly up to rounding (float64: 1e-9 relative, tested). Every other host value keeps its random value.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..device import resolve_device, resolve_dtype
from ..masks import Mask, check_mask
from ..planting import LayerParameters, plant_layer

DTYPE = torch.float64

_PASSTHROUGH = (nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Flatten,
                nn.Identity)
_IGNORED = (nn.Dropout, nn.Dropout2d)
_BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)


# ------------------------------------------------------------------------------------------------ layer sequence

@dataclass
class Op:
    """One step of a layer sequence: ``kind`` is "conv", "linear" (planted layers, ``index`` = their position
    among the planted layers) or "module" (a parameter-free module called as it is)."""

    kind: str
    name: str
    module: nn.Module
    index: int | None = None


def layer_sequence(module: nn.Module) -> list[Op]:
    """The leaf modules of ``module`` in order as `Op`s; ValueError for anything that cannot be planted."""
    ops: list[Op] = []
    n = 0
    for name, m in module.named_modules():
        if len(list(m.children())) > 0:
            continue
        label = name or type(m).__name__
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.padding_mode != "zeros":
                raise ValueError(f"layer {label!r}: only Conv2d with groups=1 and zero padding can be planted")
            if m.bias is None:
                raise ValueError(f"layer {label!r}: the host needs biases in every Conv2d/Linear layer (bias=True)")
            ops.append(Op("conv", label, m, n))
            n += 1
        elif isinstance(m, nn.Linear):
            if m.bias is None:
                raise ValueError(f"layer {label!r}: the host needs biases in every Conv2d/Linear layer (bias=True)")
            ops.append(Op("linear", label, m, n))
            n += 1
        elif isinstance(m, _BATCHNORM):
            raise ValueError(
                f"layer {label!r}: hosts with BatchNorm cannot be planted (random running statistics would change "
                "the planted function); build the host without BatchNorm and fold the ticket's BatchNorm into its "
                "convolutions (plantseek.image.planting.fold_batch_norm)"
            )
        elif isinstance(m, _IGNORED):
            continue  # identity at evaluation; the functional forward skips it
        elif isinstance(m, _PASSTHROUGH):
            ops.append(Op("module", label, m))
        else:
            raise ValueError(
                f"layer {label!r} ({type(m).__name__}) cannot be planted through: supported are Conv2d, Linear, ReLU, "
                "MaxPool2d, AvgPool2d, AdaptiveAvg/MaxPool2d, Flatten, Identity, Dropout"
            )
    if n == 0:
        raise ValueError("the host module has no Conv2d or Linear layer")
    return ops


def run_ops(ops: Sequence[Op], params: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
    """The layer sequence applied to ``x`` with the given (weight, bias) per planted layer."""
    h = x
    for op in ops:
        if op.kind == "conv":
            w, b = params[op.index]
            m = op.module
            h = F.conv2d(h, w, b, m.stride, m.padding, m.dilation, m.groups)
        elif op.kind == "linear":
            w, b = params[op.index]
            h = F.linear(h, w, b)
        else:
            h = op.module(h)
    return h


def infer_input_shape(ops: Sequence[Op], in_channels: int, params, max_size: int = 512) -> tuple[int, ...]:
    """The smallest square input (C, S, S) for which the sequence runs (shape propagation on meta tensors)."""
    meta = [(w.to("meta"), b.to("meta")) for w, b in params]
    if ops[0].kind == "linear":
        return (int(params[0][0].shape[1]),)
    for s in range(1, max_size + 1):
        try:
            run_ops(ops, meta, torch.empty(1, in_channels, s, s, device="meta", dtype=meta[0][0].dtype))
        except (RuntimeError, ValueError):
            continue
        return (in_channels, s, s)
    raise ValueError(f"no square input up to {max_size} pixels fits the host's layer sequence; pass input_shape")


# ------------------------------------------------------------------------------------------------ ticket state dicts

def _group_state(state: Mapping[str, torch.Tensor]) -> list[tuple[str, dict]]:
    groups: dict[str, dict] = {}
    for key, value in state.items():
        prefix, _, leaf = key.rpartition(".")
        groups.setdefault(prefix, {})[leaf] = value
    return list(groups.items())


def fold_batch_norm_state(state: Mapping[str, torch.Tensor], eps: float = 1e-5) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """A ticket state dict as a list of (name, weight, bias) float64 layers, BatchNorm folded into the layer
    before it (W' = W g / sqrt(var + eps) per output, b' = (b - mean) g / sqrt(var + eps) + beta; a missing bias
    counts as zero). Entries are read in the state dict's order (registration order of the modules)."""
    layers: list[list] = []
    for prefix, g in _group_state(state):
        label = prefix or "<root>"
        if "running_mean" in g:
            if not layers:
                raise ValueError(f"ticket entry {label!r}: a BatchNorm with no Conv2d/Linear layer before it to fold into")
            mean = torch.as_tensor(g["running_mean"], dtype=DTYPE)
            var = torch.as_tensor(g["running_var"], dtype=DTYPE)
            gamma = torch.as_tensor(g.get("weight", torch.ones_like(mean)), dtype=DTYPE)
            beta = torch.as_tensor(g.get("bias", torch.zeros_like(mean)), dtype=DTYPE)
            _, w, b = layers[-1]
            if w.shape[0] != mean.shape[0]:
                raise ValueError(f"ticket entry {label!r}: BatchNorm of {mean.shape[0]} features after a layer with {w.shape[0]} outputs")
            s = gamma / torch.sqrt(var + eps)
            layers[-1][1] = w * s.reshape((-1,) + (1,) * (w.dim() - 1))
            layers[-1][2] = (b - mean) * s + beta
            continue
        if "weight" not in g:
            extra = sorted(set(g) - {"num_batches_tracked"})
            if extra:
                raise ValueError(f"ticket entry {label!r} ({', '.join(extra)}) is neither a Conv2d/Linear layer nor a BatchNorm")
            continue
        w = torch.as_tensor(g["weight"]).detach().to("cpu", DTYPE)
        if w.dim() not in (2, 4):
            raise ValueError(f"ticket entry {label!r}: weight of shape {tuple(w.shape)} is neither Linear (2-D) nor Conv2d (4-D)")
        b = g.get("bias")
        b = torch.zeros(w.shape[0], dtype=DTYPE) if b is None else torch.as_tensor(b).detach().to("cpu", DTYPE)
        if b.shape != (w.shape[0],):
            raise ValueError(f"ticket entry {label!r}: bias of shape {tuple(b.shape)} for {w.shape[0]} outputs")
        layers.append([label, w.clone(), b.clone()])
    for label, w, b in layers:
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise ValueError(f"ticket layer {label!r} has non-finite values")
    return [tuple(x) for x in layers]


def fold_batch_norm(module: nn.Module, eps: float | None = None) -> nn.Sequential:
    """A BatchNorm-free copy of a sequential module (evaluation semantics): every BatchNorm is folded into the
    Conv2d/Linear before it (which gains a bias if it had none); other leaves are kept in order."""
    leaves = [m for m in copy.deepcopy(module).modules() if len(list(m.children())) == 0]  # never the original
    out: list[nn.Module] = []
    for m in leaves:
        if isinstance(m, _BATCHNORM):
            prev = out[-1] if out else None
            if not isinstance(prev, (nn.Conv2d, nn.Linear)):
                raise ValueError("fold_batch_norm: a BatchNorm must directly follow a Conv2d or Linear layer")
            e = m.eps if eps is None else eps
            with torch.no_grad():
                s = m.weight / torch.sqrt(m.running_var + e) if m.affine else 1.0 / torch.sqrt(m.running_var + e)
                beta = m.bias if m.affine else torch.zeros_like(m.running_mean)
                b0 = prev.bias if prev.bias is not None else torch.zeros_like(m.running_mean)
                prev.weight.mul_(s.reshape((-1,) + (1,) * (prev.weight.dim() - 1)))
                new_b = (b0 - m.running_mean) * s + beta
                if prev.bias is None:
                    prev.bias = nn.Parameter(new_b.clone())
                else:
                    prev.bias.copy_(new_b)
            continue
        out.append(m)
    return nn.Sequential(*out)


# ------------------------------------------------------------------------------------------------ the networks

class ConvNetwork(LayerParameters):
    """A network of Conv2d / Linear layers in a fixed layer sequence, seen as the pruners see an MLP: lists of
    ``weights`` (conv (out, in, kh, kw), linear (out, in)) and ``biases``, ``forward(x, mask)``, and
    ``forward_params(params, x)`` that runs the sequence with other parameters (scores, edge-popup)."""

    def __init__(self, module: nn.Module, input_shape: Sequence[int] | None = None):
        self.module = module
        self.ops = layer_sequence(module)
        layers = [op.module for op in self.ops if op.kind in ("conv", "linear")]
        self.layer_names = [op.name for op in self.ops if op.kind in ("conv", "linear")]
        self.layer_kinds = [op.kind for op in self.ops if op.kind in ("conv", "linear")]
        self.weights: list[torch.Tensor] = [m.weight.detach() for m in layers]
        self.biases: list[torch.Tensor] = [m.bias.detach() for m in layers]
        if input_shape is None:
            input_shape = infer_input_shape(self.ops, int(self.weights[0].shape[1]), list(zip(self.weights, self.biases)))
        self.input_shape = tuple(int(s) for s in input_shape)

    @property
    def widths(self) -> list[int]:
        """[input channels or features, outputs of each planted layer...]."""
        return [int(self.weights[0].shape[1])] + [int(w.shape[0]) for w in self.weights]

    def params(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return list(zip(self.weights, self.biases))

    def forward_params(self, params: Sequence[tuple[torch.Tensor, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        """The layer sequence with the given (weight, bias) pairs (gradients flow through them)."""
        return run_ops(self.ops, params, x.to(device=params[0][0].device, dtype=params[0][0].dtype))

    def forward(self, x: torch.Tensor, mask: Mask | None = None) -> torch.Tensor:
        params = self.params()
        if mask is not None:
            check_mask(mask, self.weights, self.biases)
            params = [(w * wm.to(w.device), b * bm.to(b.device)) for (w, b), (wm, bm) in zip(params, mask)]
        return self.forward_params(params, x)

    __call__ = forward

    def _moved_module(self, device, dtype) -> nn.Module:
        dev = resolve_device(device)
        dt = self.dtype if dtype is None else resolve_dtype(dtype)
        return copy.deepcopy(self.module).to(device=dev, dtype=dt)

    def to(self, device="cpu", dtype=None) -> "ConvNetwork":
        return ConvNetwork(self._moved_module(device, dtype), self.input_shape)

    def to_module(self, mask: Mask | None = None) -> nn.Module:
        """A copy of the module with the (masked) parameters."""
        m = copy.deepcopy(self.module)
        if mask is not None:
            with torch.no_grad():
                layers = [op.module for op in layer_sequence(m) if op.kind in ("conv", "linear")]
                for layer, (wm, bm) in zip(layers, mask):
                    layer.weight.mul_(wm.to(layer.weight.device))
                    layer.bias.mul_(bm.to(layer.bias.device))
        return m


class PlantedModule(ConvNetwork):
    """A host module carrying a planted ticket: what `plant_state_dict` returns. Compatible with
    `plantseek.PlantedNetwork` where the pruners look (``weights``, ``biases``, ``ticket_mask``,
    ``output_scale``, ``ticket_density``, ``hiding``, ``neuron_map``, ``neuron_scales``, ``to``, ``forward``)."""

    def __init__(self, module, ticket_layers, ticket_mask, output_scale, *, input_shape=None, hiding=None,
                 config=None, neuron_map=None, neuron_scales=None):
        super().__init__(module, input_shape)
        self.ticket_layers: list[tuple[torch.Tensor, torch.Tensor]] = [(w, b) for w, b in ticket_layers]
        self.ticket_mask: Mask = ticket_mask
        self.output_scale = float(output_scale)
        self.hiding = dict(hiding or {})
        self.config = dict(config or {})
        self.neuron_map = neuron_map or []
        self.neuron_scales = neuron_scales or []

    @property
    def ticket_nnz(self) -> int:
        """Nonzero ticket parameters (weights and biases)."""
        return int(sum(int((w != 0).sum()) + int((b != 0).sum()) for w, b in self.ticket_layers))

    @property
    def ticket_weight_nnz(self) -> int:
        return int(sum(int((w != 0).sum()) for w, _ in self.ticket_layers))

    @property
    def ticket_density(self) -> float:
        """Ticket parameters over all host parameters (weights and biases): the ``density="ticket"`` value."""
        return self.ticket_nnz / self.n_params

    @property
    def ticket_weight_density(self) -> float:
        return self.ticket_weight_nnz / self.n_weights

    def ticket_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The ticket itself (float64, CPU parameters moved to x's device) through the host's layer sequence."""
        params = [(w.to(x.device), b.to(x.device)) for w, b in self.ticket_layers]
        return run_ops(self.ops, params, x.to(dtype=DTYPE))

    def to(self, device="cpu", dtype=None) -> "PlantedModule":
        dev = resolve_device(device)
        return PlantedModule(
            self._moved_module(device, dtype), self.ticket_layers, [(wm.to(dev), bm.to(dev)) for wm, bm in self.ticket_mask],
            self.output_scale, input_shape=self.input_shape, hiding=self.hiding, config=self.config,
            neuron_map=self.neuron_map, neuron_scales=self.neuron_scales,
        )


# ------------------------------------------------------------------------------------------------ planting

def _state_of(ticket) -> Mapping[str, torch.Tensor]:
    if isinstance(ticket, nn.Module):
        return ticket.state_dict()
    if isinstance(ticket, Mapping):
        return ticket
    raise TypeError(f"the ticket must be a state dict or an nn.Module, got {type(ticket).__name__}")


def plant_state_dict(
    ticket_state_dict: Mapping[str, torch.Tensor] | nn.Module,
    host_module: nn.Module,
    seed: int | None = 0,
    *,
    init: str | None = "he-scaled",
    input_shape: Sequence[int] | None = None,
    bn_eps: float = 1e-5,
    device: str | torch.device = "cpu",
) -> PlantedModule:
    """Plant a sparse ticket (state dict of Conv2d / Linear layers, BatchNorm folded) into a copy of ``host_module``.

    The host's parameters are re-drawn on the CPU in float64 from ``seed`` by ``init`` ("he-scaled": He normal
    weights and biases scaled as in the paper, "default": PyTorch's layer defaults; ``init=None`` keeps the
    module's own values), so a seed means the same planted network on every device; the result is then moved
    to ``device``. ``host_module`` itself is not modified. Zero entries of the ticket are not planted (the
    ticket's sparsity is its zeros). Raises ValueError naming the layer and the minimum that would work when
    the host is narrower than the ticket or has another layer sequence.
    """
    from . import models

    layers = fold_batch_norm_state(_state_of(ticket_state_dict), eps=bn_eps)
    host = copy.deepcopy(host_module).to(device="cpu", dtype=DTYPE)
    ops = layer_sequence(host)
    planted_ops = [op for op in ops if op.kind in ("conv", "linear")]
    if len(planted_ops) != len(layers):
        raise ValueError(
            f"the ticket has {len(layers)} Conv2d/Linear layers ({', '.join(l[0] for l in layers)}) but the host has "
            f"{len(planted_ops)} ({', '.join(op.name for op in planted_ops)}): host and ticket need the same layer sequence"
        )
    if init is not None:
        if init not in models.INITS:
            raise ValueError(f"unknown init {init!r}; available: {', '.join(sorted(models.INITS))} or None")
        models.INITS[init](host, torch.Generator(device="cpu").manual_seed(int(seed or 0)))
    for op in planted_ops:
        p = op.module
        if not (torch.isfinite(p.weight).all() and torch.isfinite(p.bias).all()):
            raise ValueError(f"host layer {op.name!r} has non-finite values")

    # every check first, so that a bad request changes nothing
    n_last = len(layers) - 1
    for l, ((tname, Wt, bt), op) in enumerate(zip(layers, planted_ops)):
        W = op.module.weight
        kind = "conv" if Wt.dim() == 4 else "linear"
        if kind != op.kind:
            raise ValueError(f"ticket layer {l} ({tname!r}) is {'a Conv2d' if kind == 'conv' else 'a Linear'} layer but host layer {l} ({op.name!r}) is not")
        if kind == "conv" and tuple(Wt.shape[2:]) != tuple(W.shape[2:]):
            raise ValueError(f"ticket layer {l} ({tname!r}) has kernel {tuple(Wt.shape[2:])}, host layer {op.name!r} has {tuple(W.shape[2:])}")
        unit = "output channels" if kind == "conv" else "units"
        if l == n_last and W.shape[0] != Wt.shape[0]:
            raise ValueError(f"output layer {op.name!r}: the host has {W.shape[0]} outputs, the ticket {Wt.shape[0]}: outputs keep their order, so they must agree")
        if W.shape[0] < Wt.shape[0]:
            raise ValueError(
                f"host layer {l} ({op.name!r}) has {W.shape[0]} {unit} but the ticket needs at least {Wt.shape[0]} there "
                f"(minimum per layer: {[int(x[1].shape[0]) for x in layers[:-1]]})"
            )
        if l == 0 and W.shape[1] != Wt.shape[1]:
            raise ValueError(f"input: the host's first layer takes {W.shape[1]} inputs, the ticket's {Wt.shape[1]}")
        if l > 0 and Wt.shape[1] != layers[l - 1][1].shape[0] and not (kind == "linear" and layers[l - 1][1].dim() == 4):
            raise ValueError(f"ticket layer {l} ({tname!r}) takes {Wt.shape[1]} inputs but ticket layer {l - 1} has {layers[l - 1][1].shape[0]} outputs")

    masks: Mask = []
    neuron_map: list[list[int]] = []
    neuron_scales: list[list[float]] = []
    prev_map = np.arange(layers[0][1].shape[1], dtype=np.int64)
    prev_scale = np.ones(layers[0][1].shape[1])
    prev_conv = False
    output_scale = 1.0
    with torch.no_grad():
        for l, ((tname, Wt, bt), op) in enumerate(zip(layers, planted_ops)):
            W, b = op.module.weight.data, op.module.bias.data
            if op.kind == "linear" and prev_conv:
                # flatten: ticket channel c owns features c*HW .. c*HW + HW - 1; host channel map[c] likewise
                c_t, c_h = len(prev_map), int(planted_ops[l - 1].module.weight.shape[0])
                if Wt.shape[1] % c_t or W.shape[1] % c_h or Wt.shape[1] // c_t != W.shape[1] // c_h:
                    raise ValueError(
                        f"flatten before layer {op.name!r}: the ticket has {Wt.shape[1]} features from {c_t} channels, the "
                        f"host {W.shape[1]} from {c_h}: both need the same spatial size per channel"
                    )
                hw = Wt.shape[1] // c_t
                prev_map = (prev_map[:, None] * hw + np.arange(hw)[None, :]).reshape(-1)
                prev_scale = np.repeat(prev_scale, hw)
            k_area = int(np.prod(Wt.shape[2:])) if Wt.dim() == 4 else 1
            Wt2 = Wt.reshape(Wt.shape[0], -1).numpy()
            W2 = W.reshape(W.shape[0], -1)  # a view: writes go to the host
            rows, cols_t = np.nonzero(Wt2)  # row-major: CSR order
            ci, r = cols_t // k_area, cols_t % k_area
            host_cols = prev_map[ci] * k_area + r
            vals = Wt2[rows, cols_t] / prev_scale[ci]
            outputs = l >= n_last
            chosen, lam, wmask2, bmask = plant_layer(W2, b, rows, host_cols, vals, bt.numpy(), outputs=outputs)
            if outputs:
                output_scale = float(lam[0]) if lam.size else 1.0
            wmask = wmask2.view(W.shape)
            masks.append((wmask, bmask))
            neuron_map.append(chosen.tolist())
            neuron_scales.append(np.asarray(lam, dtype=np.float64).tolist())
            prev_map, prev_scale = np.asarray(chosen, dtype=np.int64), np.asarray(lam, dtype=np.float64)
            prev_conv = op.kind == "conv"

    ticket_layers = [(w, b) for _, w, b in layers]
    net = PlantedModule(
        host, ticket_layers, masks, output_scale, input_shape=input_shape,
        config={"seed": None if seed is None else int(seed), "init": init,
                "widths": [int(w.shape[1]) for w in [planted_ops[0].module.weight]] + [int(op.module.weight.shape[0]) for op in planted_ops],
                "depth": len(planted_ops)},
        neuron_map=neuron_map, neuron_scales=neuron_scales,
    )
    from ..planting import hiding_statistics

    net.hiding = hiding_statistics(net)
    dev = resolve_device(device)
    return net if dev.type == "cpu" else net.to(dev)
