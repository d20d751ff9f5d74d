"""Planting: hide a ticket inside a randomly initialised host so that the masked host computes it exactly.

Layer by layer each ticket neuron is matched to an unused host neuron whose own values at the mapped positions
have the ticket's signs and the smallest L1 distance after the best positive rescaling (`kernels.planting_search`);
those positions are overwritten and the neuron's scale recorded (ReLU is positively homogeneous). Outputs keep
their order and share one positive `output_scale` chosen by the median rule of DESIGN.md.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import arguments as _args
from . import host_init
from .device import resolve_device, resolve_dtype
from .masks import Mask, check_mask
from .kernels.planting_search import plant_search
from .tickets import Ticket

FORMAT_VERSION = 1


class LayerParameters:
    """Shape facts shared by every planted network that keeps `weights` and `biases` lists."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]

    @property
    def depth(self) -> int:
        return len(self.weights)

    @property
    def device(self) -> torch.device:
        return self.weights[0].device

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    @property
    def n_weights(self) -> int:
        return int(sum(w.numel() for w in self.weights))

    @property
    def n_params(self) -> int:
        """Prunable parameters with biases: weights plus biases."""
        return self.n_weights + int(sum(b.numel() for b in self.biases))


@dataclass
class PlantedNetwork(LayerParameters):
    """A host network carrying a planted ticket (weights `(out, in)`, float64 unless moved with `to`)."""

    weights: list[torch.Tensor]
    biases: list[torch.Tensor]
    ticket_mask: Mask
    output_scale: float
    ticket: Ticket
    hiding: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    neuron_map: list[list[int]] = field(default_factory=list)
    neuron_scales: list[list[float]] = field(default_factory=list)

    # -- shape
    @property
    def widths(self) -> list[int]:
        """[input, hidden..., output]."""
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    @property
    def ticket_density(self) -> float:
        """Ticket parameters (weights and biases) over all host parameters: the `density="ticket"` value."""
        return self.ticket.nnz / self.n_params

    @property
    def ticket_weight_density(self) -> float:
        """Ticket weights over host weights (the paper's "sparsity rho")."""
        return self.ticket.weight_nnz / self.n_weights

    def __repr__(self) -> str:
        # the dataclass repr would print every tensor
        task = self.config.get("task", self.ticket.name)
        dtype = str(self.dtype).replace("torch.", "")
        return (f"PlantedNetwork(task={task!r}, widths={self.widths}, ticket_nnz={self.ticket.nnz}, "
                f"ticket_density={self.ticket_density:.3g}, output_scale={self.output_scale:.3g}, "
                f"seed={self.config.get('seed')}, device={self.device}, dtype={dtype})")

    # -- compute
    def forward(self, x: torch.Tensor, mask: Mask | None = None) -> torch.Tensor:
        """Host output for inputs (n, in); with `mask`, pruned weights and biases count as zero."""
        if mask is not None:
            check_mask(mask, self.weights, self.biases)
        h = x.to(device=self.device, dtype=self.dtype)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if mask is not None:
                w = w * mask[i][0].to(w.device)
                b = b * mask[i][1].to(b.device)
            h = torch.nn.functional.linear(h, w, b)
            if i < self.depth - 1:
                h = torch.relu(h)
        return h

    __call__ = forward

    def to(self, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None) -> "PlantedNetwork":
        """A copy on `device` (and `dtype`); masks move along, the ticket stays a float64 CPU object."""
        dev = resolve_device(device)
        dt = self.dtype if dtype is None else resolve_dtype(dtype)
        return PlantedNetwork(
            [w.to(dev, dt) for w in self.weights],
            [b.to(dev, dt) for b in self.biases],
            [(wm.to(dev), bm.to(dev)) for wm, bm in self.ticket_mask],
            self.output_scale, self.ticket, dict(self.hiding), dict(self.config),
            self.neuron_map, self.neuron_scales,
        )

    def to_module(self, mask: Mask | None = None) -> torch.nn.Sequential:
        """A plain `torch.nn.Sequential` of Linear/ReLU layers holding copies of the (masked) parameters."""
        layers: list[torch.nn.Module] = []
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            lin = torch.nn.Linear(w.shape[1], w.shape[0], device=w.device, dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w if mask is None else w * mask[i][0])
                lin.bias.copy_(b if mask is None else b * mask[i][1])
            layers.append(lin)
            if i < self.depth - 1:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers)

    # -- persistence
    def save(self, path: str | Path) -> None:
        """Write everything (tensors on the CPU) with torch.save; read back with `plantseek.load`. Missing
        parent directories are created; a path that is a directory is a ValueError."""
        path = _args.output_file(path, "path")
        torch.save(
            {
                "format": "plantseek.PlantedNetwork",
                "version": FORMAT_VERSION,
                "weights": [w.detach().to("cpu", torch.float64) for w in self.weights],
                "biases": [b.detach().to("cpu", torch.float64) for b in self.biases],
                "ticket_mask": [(wm.cpu(), bm.cpu()) for wm, bm in self.ticket_mask],
                "output_scale": float(self.output_scale),
                "ticket": self.ticket.to_dict(),
                "hiding": self.hiding,
                "config": self.config,
                "neuron_map": self.neuron_map,
                "neuron_scales": self.neuron_scales,
            },
            str(path),
        )


def load(path: str | Path) -> PlantedNetwork:
    """Read a planted network written by `PlantedNetwork.save`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no planted network at {path}")
    try:
        d = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign files
        raise ValueError(f"{path} is not a plantseek planted network ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(d, dict) or d.get("format") != "plantseek.PlantedNetwork":
        raise ValueError(f"{path} is not a plantseek planted network")
    return _from_saved(d, str(path))


_SAVED_FIELDS = ("weights", "biases", "ticket_mask", "output_scale", "ticket")  # the rest have defaults


def _from_saved(d: dict, where: str) -> PlantedNetwork:
    """The network of a dict written by `PlantedNetwork.save`, each field checked: a ValueError names the
    file, the field and what is wrong (a crafted or damaged file fails here, not deep in a matmul)."""
    version = d.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{where}: format version {version!r} is not valid (this plantseek reads version "
                         f"{FORMAT_VERSION})")
    if version > FORMAT_VERSION:
        raise ValueError(f"{where} has format version {version}, written by a newer plantseek (this one reads "
                         f"version {FORMAT_VERSION}); upgrade plantseek")
    missing = [k for k in _SAVED_FIELDS if k not in d]
    if missing:
        raise ValueError(f"{where} lacks the field(s) {', '.join(map(repr, missing))} of a planted network; "
                         f"the file is damaged or was not written by PlantedNetwork.save")
    weights, biases, ticket_mask = d["weights"], d["biases"], d["ticket_mask"]
    for key, dim in (("weights", 2), ("biases", 1)):
        v = d[key]
        if not isinstance(v, (list, tuple)) or not v:
            raise ValueError(f"{where}: field {key!r} must be a non-empty list of tensors, got {type(v).__name__}")
        for i, t in enumerate(v):
            if not isinstance(t, torch.Tensor) or t.dim() != dim or t.dtype != torch.float64:
                got = (f"a {str(t.dtype).replace('torch.', '')} tensor of shape {tuple(t.shape)}"
                       if isinstance(t, torch.Tensor) else type(t).__name__)
                raise ValueError(f"{where}: field {key!r} layer {i} must be a {dim}-D float64 tensor (as "
                                 f"PlantedNetwork.save writes it), got {got}")
    if len(weights) != len(biases):
        raise ValueError(f"{where}: {len(weights)} weight matrices but {len(biases)} bias vectors")
    for i, (w, b) in enumerate(zip(weights, biases)):
        if b.shape[0] != w.shape[0] or (i > 0 and w.shape[1] != weights[i - 1].shape[0]):
            raise ValueError(f"{where}: layer {i} has weight {tuple(w.shape)} and bias {tuple(b.shape)}, which do "
                             f"not fit {'its bias' if b.shape[0] != w.shape[0] else f'layer {i - 1}'}")
    if not isinstance(ticket_mask, (list, tuple)) or not all(isinstance(p, (list, tuple)) and len(p) == 2
                                                             and all(isinstance(t, torch.Tensor) for t in p)
                                                             for p in ticket_mask):
        raise ValueError(f"{where}: field 'ticket_mask' must be a list of (weight_mask, bias_mask) tensor pairs")
    ticket_mask = [tuple(p) for p in ticket_mask]
    check_mask(ticket_mask, weights, biases, name=f"{where}: field 'ticket_mask'")
    scale = d["output_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"{where}: field 'output_scale' must be a positive finite number, got {scale!r}")
    try:
        ticket = Ticket.from_dict(d["ticket"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{where}: field 'ticket' is not a ticket ({exc.__class__.__name__}: {exc})") from None
    host = [weights[0].shape[1]] + [w.shape[0] for w in weights]
    if ticket.depth != len(weights) or ticket.input_dim != host[0] or ticket.output_dim != host[-1]:
        raise ValueError(f"{where}: the ticket (widths {ticket.widths}) does not fit the host (widths {host})")
    return PlantedNetwork(
        list(weights), list(biases), ticket_mask, float(scale), ticket, d.get("hiding", {}), d.get("config", {}),
        d.get("neuron_map", []), d.get("neuron_scales", []),
    )


# ------------------------------------------------------------------------------------------------ planting

def host_widths(ticket: Ticket, width: int | Sequence[int], depth: int) -> list[int]:
    """The layer widths of a host of `width` and `depth` for `ticket` (of that depth), or a ValueError naming
    the ticket's minimum widths when the host is narrower (the one rule of `plant` and the sweep files)."""
    hidden = depth - 1
    width = _args.width(width)
    if isinstance(width, int):
        ws = [width] * hidden
    else:
        ws = width
        if len(ws) != hidden:
            raise ValueError(f"width lists need one entry per hidden layer: {hidden} for depth {depth}, got {len(ws)}")
    need = ticket.widths[1:-1]
    for l, (w, n) in enumerate(zip(ws, need)):
        if w < n:
            raise ValueError(
                f"host layer {l + 1} has width {w} but the ticket needs at least {n} there "
                f"(minimum widths: {need}; use width >= {max(need) if need else 1})"
            )
    return [ticket.input_dim] + ws + [ticket.output_dim]


def plant(
    ticket: Ticket | str,
    width: int | Sequence[int] = 100,
    depth: int | None = None,
    seed: int = 0,
    init: str = "he-scaled",
    device: str | torch.device = "cpu",
) -> PlantedNetwork:
    """Plant `ticket` (a Ticket or a task name) in a host of the given width(s) and depth.

    The host is drawn on the CPU in float64 from `seed`, so one seed gives the same planted network on every
    device; the result is then moved to `device`. A deeper host than the ticket deepens the ticket first.
    """
    from . import tasks as _tasks

    task_name = None
    seed = _args.seed(seed)
    if depth is not None:
        depth = _args.depth(depth)
    if isinstance(ticket, str):
        task = _tasks.get(ticket)
        task_name = task.name
        ticket = task.ticket(task.min_depth if depth is None else depth)
    if not isinstance(ticket, Ticket):
        raise TypeError(f"plant needs a Ticket or a task name, got {type(ticket).__name__}")
    depth = ticket.depth if depth is None else depth
    if depth < ticket.depth:
        raise ValueError(f"host depth {depth} is below the ticket's depth {ticket.depth} (minimum depth: {ticket.depth})")
    if depth > ticket.depth:
        ticket = ticket.deepen(depth)
    widths = host_widths(ticket, width, depth)
    # a host that cannot fit is refused before it is drawn (PLANTSEEK_SKIP_MEMORY_CHECK=1: draw it anyway)
    from .memory import check_host_fits

    check_host_fits(widths, resolve_device(device),
                    what=f"plant({task_name or ticket.name!r}, width={width!r}, depth={depth})")
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    weights, biases = host_init.get(init)(widths, g)
    for l, (w, b) in enumerate(zip(weights, biases)):
        if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
            raise ValueError(f"init {init!r} produced non-finite values in layer {l}")

    masks: Mask = []
    neuron_map: list[list[int]] = []
    neuron_scales: list[list[float]] = []
    prev_map = list(range(ticket.input_dim))
    prev_scale = np.ones(ticket.input_dim)
    output_scale = 1.0
    for l, (Wt, bt) in enumerate(zip(ticket.weights, ticket.biases)):
        Wt_np = Wt.numpy()
        rows, cols_t = np.nonzero(Wt_np)  # row-major order: CSR of the ticket layer
        host_cols = np.asarray(prev_map, dtype=np.int64)[cols_t]
        vals = Wt_np[rows, cols_t] / prev_scale[cols_t]
        outputs = l == ticket.depth - 1
        chosen, lam, wmask, bmask = plant_layer(weights[l], biases[l], rows, host_cols, vals, bt.numpy(),
                                                outputs=outputs)
        if outputs:
            output_scale = float(lam[0]) if lam.size else 1.0
        masks.append((wmask, bmask))
        neuron_map.append(chosen.tolist())
        neuron_scales.append(lam.tolist())
        prev_map, prev_scale = chosen.tolist(), np.asarray(lam, dtype=np.float64)

    net = PlantedNetwork(
        weights, biases, masks, output_scale, ticket,
        config={"task": task_name or ticket.name, "seed": int(seed), "init": init, "widths": widths, "depth": depth},
        neuron_map=neuron_map, neuron_scales=neuron_scales,
    )
    net.hiding = hiding_statistics(net)
    dev = resolve_device(device)
    return net if dev.type == "cpu" else net.to(dev)


def plant_layer(W: torch.Tensor, b: torch.Tensor, rows: np.ndarray, host_cols: np.ndarray, vals: np.ndarray,
                bias_vals: np.ndarray, *, outputs: bool) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
    """Plant one ticket layer into a host layer in place: `W` is the host weight as a 2-D (out, columns) float64
    view, `rows`/`host_cols`/`vals` the ticket's nonzero entries in row-major order (columns already mapped into
    the host, values divided by the input neurons' scales), `bias_vals` the ticket biases.

    Hidden layers match each ticket neuron to a host neuron (`plant_search`); the output layer keeps its order
    and one scale by the median rule over the output weights (biases follow it; DESIGN.md "Planting").
    Returns (chosen host neuron per ticket neuron, its scale, weight mask shaped like `W`, bias mask).
    """
    n_t = len(bias_vals)
    has_bias = (bias_vals != 0).astype(np.uint8)
    hb = has_bias.astype(bool)
    if not outputs:
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n_t))]).astype(np.int64)
        used = np.zeros(W.shape[0], dtype=np.uint8)
        chosen, lam, _ = plant_search(W.numpy(), b.numpy(), indptr, host_cols, vals, bias_vals, has_bias, used)
    else:
        chosen = np.arange(n_t, dtype=np.int64)
        replaced, target = W.numpy()[rows, host_cols], vals
        if target.size == 0:
            replaced, target = b.numpy()[hb], bias_vals[hb]
        scale = float(np.median(np.abs(replaced)) / np.median(np.abs(target))) if target.size else 1.0
        lam = np.full(n_t, scale if np.isfinite(scale) and scale > 0 else 1.0)
    host_rows, hc = torch.from_numpy(chosen[rows]), torch.from_numpy(host_cols)
    wmask = torch.zeros(W.shape, dtype=torch.bool)
    bmask = torch.zeros(b.shape, dtype=torch.bool)
    W[host_rows, hc] = torch.from_numpy(lam[rows] * vals)
    wmask[host_rows, hc] = True
    b[torch.from_numpy(chosen[hb])] = torch.from_numpy(lam[hb] * bias_vals[hb])
    bmask[torch.from_numpy(chosen[hb])] = True
    return chosen, np.asarray(lam, dtype=np.float64), wmask, bmask


def hiding_statistics(net: PlantedNetwork) -> dict:
    """How well the ticket weights hide: per layer the median magnitude percentile of ticket weights among the
    layer's weights (0.5 = typical, near 1 = magnitude pruning would find them) and the two-sample KS statistic
    of ticket vs other weight magnitudes; plus the median percentile over all ticket weights.

    Written out rather than with scipy.stats.ks_2samp because that sorts every host weight (seconds at width
    4000); here the host magnitudes are only binned between the few sorted ticket magnitudes: O(n log k).
    """
    layers, all_pct = [], []
    for (wm, _), w in zip(net.ticket_mask, net.weights):
        mags = w.detach().abs().flatten().double()
        m = wm.flatten().to(mags.device)
        k, n = int(m.sum()), mags.numel()
        if k == 0:
            layers.append({"median_percentile": float("nan"), "ks": float("nan"), "n": 0})
            continue
        t = torch.sort(mags[m]).values  # (k,)
        # bin b of `lower` counts magnitudes in (t[b-1], t[b]]; of `upper`, magnitudes in [t[b-1], t[b])
        lower = torch.bincount(torch.searchsorted(t, mags, right=False), minlength=k + 1)
        upper = torch.bincount(torch.searchsorted(t, mags, right=True), minlength=k + 1)
        pct = torch.cumsum(lower[:k], 0).double() / n  # share of the layer <= each ticket magnitude
        # the layer without the ticket (`others`): remove the ticket's own values from both histograms
        lower_o = lower - torch.bincount(torch.searchsorted(t, t, right=False), minlength=k + 1)
        upper_o = upper - torch.bincount(torch.searchsorted(t, t, right=True), minlength=k + 1)
        n_o = n - k
        if n_o == 0:
            ks = float("nan")
        else:
            lt = torch.cumsum(upper_o[:k], 0).double() / n_o  # F_others just below t_b
            le = torch.cumsum(lower_o[:k], 0).double() / n_o  # F_others at t_b
            f_before = torch.searchsorted(t, t, right=False).double() / k  # F_ticket just below t_b
            f_at = torch.searchsorted(t, t, right=True).double() / k  # F_ticket at t_b
            ks = float(torch.maximum((f_before - lt).abs().max(), (f_at - le).abs().max()))
        layers.append({"median_percentile": float(pct.median()), "ks": ks, "n": k})
        all_pct.append(pct)
    overall = float(torch.cat(all_pct).median()) if all_pct else float("nan")
    return {"median_percentile": overall, "layers": layers}
