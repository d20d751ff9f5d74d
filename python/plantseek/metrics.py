"""Mask metrics: recovery of the planted ticket and connectivity (effective density, dead neurons, collapse).

Every function accepts one mask (a list of ``(weight_mask, bias_mask)`` bool pairs, see `plantseek.masks`),
a list of masks, or a stacked mask (tensors with a leading network dimension M); for more than one mask it
returns a list with one result per mask. CPU masks use the native kernels of `plantseek._C` (bit-packed
popcounts, reachability); CUDA masks use `plantseek._C_cuda` when it is built, and the PyTorch references
otherwise. ``PLANTSEEK_NATIVE=0`` forces the references.

Definitions
-----------
Recovery of a found mask F against the ticket mask T, per layer (weights and biases together) and overall:
``precision = |F & T| / |F|`` (0 when F keeps nothing), ``recall = |F & T| / |T|`` (1 when T is empty),
``f1 = 2 p r / (p + r)`` (0 when p + r = 0), ``jaccard = |F & T| / |F | T|`` (1 when both are empty).
The ``weight_*`` entries count weights only. ``ticket_survived`` is True when every ticket parameter is kept.

Functional recall (`functional_recall`, from weights and inputs rather than masks) sees equivalent tickets:
a ticket neuron counts as recovered when a neuron of the same layer of the found network has the same
activations on the test inputs up to a positive factor (cosine similarity >= 0.99). A host holds other
tickets (for relu any path of positive weights is one), and positional recall calls such a find a miss.

Connectivity: inputs are sources, and so is every neuron whose bias is kept. A neuron is *forward-live*
when a source reaches it through kept weights and *backward-live* when it reaches an output through kept
weights (outputs are backward-live). A kept weight (j, i) is *effective* when input i is forward-live and
neuron j backward-live; a kept bias is effective when its neuron is backward-live.
``effective_density = effective parameters / all parameters`` (weights and biases). A hidden neuron is
*dead* when it is not both forward- and backward-live. ``layer_collapse`` is True when some layer keeps no
weight at all (any layer: MLP and Conv2d/Linear masks alike).

The flat keys of results (`flat_recovery`, `densities`, `flat_functional_recall`) are declared in
`plantseek.metric_schema`.
"""
from __future__ import annotations

from typing import Sequence

import torch

from . import native
from .kernels import checks
from .kernels import masks as mask_kernels
from .kernels import sparse_linear as sparse_kernels

Mask = list[tuple[torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------------------------- input forms


def _is_single(obj) -> bool:
    return len(obj) > 0 and isinstance(obj[0], (tuple, list)) and len(obj[0]) == 2 and isinstance(obj[0][0], torch.Tensor)


def _as_mask_list(obj, name: str) -> tuple[list[Mask], bool]:
    """(list of masks, whether the caller gave several)."""
    obj = checks.check_list(name, obj, "(weight_mask, bias_mask) pairs, or of masks")
    if _is_single(obj):
        wm0 = obj[0][0]
        if wm0.dim() == 3:  # stacked
            M = int(wm0.shape[0])
            if M < 1:
                raise checks.ArgumentError(f"{name} must stack at least one mask (M >= 1), got shape "
                                            f"{tuple(wm0.shape)}")
            for l, pair in enumerate(obj):
                wm, bm = checks.check_pair(f"{name}[{l}]", pair, "a (weight_mask, bias_mask) pair")
                checks.check_tensor(f"{name}[{l}][0]", wm, "bool", shape=(M, None, None))
                checks.check_tensor(f"{name}[{l}][1]", bm, "bool", shape=(M, None))
            return [[(wm[m], bm[m]) for wm, bm in obj] for m in range(M)], True
        return [list(obj)], False
    out = []
    for i, m in enumerate(obj):
        if not _is_single(m):
            raise checks.ArgumentError(f"{name}[{i}] must be a mask (a list of (weight_mask, bias_mask) pairs), "
                                        f"got {type(m).__name__}")
        out.append(list(m))
    return out, True


# --------------------------------------------------------------------------------------------- recovery


def _ratio(num: int, den: int, empty: float) -> float:
    return float(num) / float(den) if den else empty


def _scores(inter: int, found: int, ticket: int) -> dict:
    p = _ratio(inter, found, 0.0)
    r = _ratio(inter, ticket, 1.0)
    f1 = 2 * p * r / (p + r) if (p + r) > 0 else 0.0
    union = found + ticket - inter
    return {"precision": p, "recall": r, "f1": f1, "jaccard": _ratio(inter, union, 1.0),
            "kept": int(found), "ticket": int(ticket), "intersection": int(inter)}


def recovery(found_masks, ticket_mask: Mask):
    """Precision, recall, F1 and Jaccard of found mask(s) against the ticket mask (see the module docstring);
    MLP or Conv2d/Linear masks.

    Returns a dict (one mask) or a list of dicts: overall ``precision``, ``recall``, ``f1``, ``jaccard``,
    ``kept``, ``ticket``, ``intersection``; the same for weights only as ``weight_precision`` ...
    ``weight_jaccard``; ``ticket_survived``; and ``layers``: one dict per layer (weights and biases).
    """
    found, many = _as_mask_list(found_masks, "found_masks")
    mask_kernels.check_structure(found, "found_masks", chained=False)
    mask_kernels.check_structure([list(ticket_mask)], "ticket_mask", chained=False)
    if len(ticket_mask) != len(found[0]):
        raise ValueError(f"ticket_mask has {len(ticket_mask)} layers, found masks have {len(found[0])}")
    for l, ((wm, bm), (tw, tb)) in enumerate(zip(found[0], ticket_mask)):
        if wm.shape != tw.shape or bm.shape != tb.shape:
            raise ValueError(f"layer {l}: found shapes {tuple(wm.shape)}/{tuple(bm.shape)} differ from the ticket's "
                             f"{tuple(tw.shape)}/{tuple(tb.shape)}")
    inter, kept, ref = mask_kernels.overlap_counts(found, list(ticket_mask))
    L = len(ticket_mask)
    results = []
    for m in range(len(found)):
        layers = []
        for l in range(L):
            layers.append(_scores(int(inter[m, 2 * l] + inter[m, 2 * l + 1]), int(kept[m, 2 * l] + kept[m, 2 * l + 1]),
                                  int(ref[2 * l] + ref[2 * l + 1])))
        overall = _scores(int(inter[m].sum()), int(kept[m].sum()), int(ref.sum()))
        w = _scores(int(inter[m, 0::2].sum()), int(kept[m, 0::2].sum()), int(ref[0::2].sum()))
        res = dict(overall)
        for key in ("precision", "recall", "f1", "jaccard"):
            res["weight_" + key] = w[key]
        res["ticket_survived"] = overall["intersection"] == overall["ticket"]
        res["layers"] = layers
        results.append(res)
    return results if many else results[0]


# --------------------------------------------------------------------------------------------- connectivity


def connectivity(masks) -> dict | list[dict]:
    """Everything about reachability in one pass: ``effective_density``, ``effective`` (count), ``total``,
    ``layer_effective`` (per layer, weights + biases), ``dead_neurons`` (total), ``layer_dead`` (per hidden
    layer), ``layer_collapse``, ``kept``."""
    ms, many = _as_mask_list(masks, "masks")
    kept, eff, dead = mask_kernels.reachability(ms, "masks")
    total = sum(wm.numel() + bm.numel() for wm, bm in ms[0])
    out = []
    for m in range(len(ms)):
        L = kept.shape[1] // 2
        out.append({
            "effective_density": float(eff[m].sum()) / total if total else 0.0,
            "effective": int(eff[m].sum()),
            "kept": int(kept[m].sum()),
            "total": int(total),
            "layer_effective": [int(eff[m, 2 * l] + eff[m, 2 * l + 1]) for l in range(L)],
            "dead_neurons": int(dead[m].sum()),
            "layer_dead": [int(v) for v in dead[m].tolist()],
            "layer_collapse": bool((kept[m, 0::2] == 0).any()),
        })
    return out if many else out[0]


def effective_density(masks):
    """Fraction of all parameters (weights and biases) that lie on some input-to-output path."""
    res = connectivity(masks)
    return [r["effective_density"] for r in res] if isinstance(res, list) else res["effective_density"]


def dead_neurons(masks):
    """Number of hidden neurons not on any input-to-output path (a kept bias makes a neuron a source)."""
    res = connectivity(masks)
    return [r["dead_neurons"] for r in res] if isinstance(res, list) else res["dead_neurons"]


def layer_collapse(masks):
    """True when some layer keeps no weight (the network output is then constant in its input); MLP or
    Conv2d/Linear masks. `connectivity` reports the same rule for MLP masks."""
    ms, many = _as_mask_list(masks, "masks")
    mask_kernels.check_structure(ms, "masks", chained=False)
    out = [any(not bool(wm.any()) for wm, _ in m) for m in ms]
    return out if many else out[0]


RECOVERY_KEYS = ("precision", "recall", "f1", "jaccard")


def flat_recovery(mask: Mask, ticket_mask: Mask) -> dict:
    """`recovery` of one mask as the flat keys of results: overall, `*_layer_{l}`, and ticket_survived."""
    rec = recovery(mask, ticket_mask)
    out = {key: float(rec[key]) for key in RECOVERY_KEYS}
    for l, layer in enumerate(rec["layers"]):
        out.update({f"{key}_layer_{l}": float(layer[key]) for key in RECOVERY_KEYS})
    out["ticket_survived"] = bool(rec["ticket_survived"])
    return out


def densities(mask: Mask, ticket_mask: Mask) -> dict:
    """Kept fractions: `kept_density` (weights and biases), `weight_density`, and per layer
    `layer_density_{l}` beside the ticket's `ticket_layer_density_{l}` (weights); `kept_params`, the count."""
    n_w = sum(wm.numel() for wm, _ in mask)
    n_all = n_w + sum(bm.numel() for _, bm in mask)
    k_w = sum(int(wm.sum()) for wm, _ in mask)
    k_all = k_w + sum(int(bm.sum()) for _, bm in mask)
    out = {"kept_density": k_all / n_all, "kept_params": k_all, "weight_density": k_w / n_w}
    for l, ((wm, _), (twm, _)) in enumerate(zip(mask, ticket_mask)):
        out[f"layer_density_{l}"] = int(wm.sum()) / wm.numel()
        out[f"ticket_layer_density_{l}"] = int(twm.sum()) / twm.numel()
    return out


# --------------------------------------------------------------------------------------------- functional recall

FUNCTIONAL_THRESHOLD = 0.99  # cosine similarity that counts as "the same activations up to a positive factor"
FUNCTIONAL_MAX_POINTS = 1000


def layer_activations(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                      x: torch.Tensor) -> list[torch.Tensor]:
    """Each layer's activations (N, width) of an MLP on inputs x (N, in): post-ReLU for the hidden layers, the
    network outputs (pre-activation) for the last."""
    out, h = [], x
    for l, (w, b) in enumerate(zip(weights, biases)):
        h = torch.nn.functional.linear(h, w, b)
        if l < len(weights) - 1:
            h = torch.relu(h)
        out.append(h)
    return out


def _unit_columns(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Columns scaled to unit norm (zero columns stay zero) and which columns are nonzero."""
    norms = a.norm(dim=0)
    nonzero = norms > 0
    return a / torch.where(nonzero, norms, torch.ones_like(norms)), nonzero


def functional_recall(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                      ticket_weights: Sequence[torch.Tensor], ticket_biases: Sequence[torch.Tensor],
                      x: torch.Tensor, *, threshold: float = FUNCTIONAL_THRESHOLD,
                      max_points: int = FUNCTIONAL_MAX_POINTS) -> dict:
    """Fraction of the ticket's neurons that the found network computes, up to a positive factor.

    `weights`/`biases`: the found network as measured (zero where pruned; trained for weak protocols).
    `ticket_weights`/`ticket_biases`: the ticket (its own `Ticket.weights`, or the host masked by the ticket
    mask: both give each ticket neuron up to a positive factor). A ticket neuron of layer l is recovered when
    some neuron of layer l of the found network has activations on `x` whose cosine similarity with the
    ticket neuron's is >= `threshold` (post-ReLU for hidden layers, outputs for the last layer; a zero vector
    matches nothing). Ticket neurons that are zero on every input are left out of the count (they compute
    nothing there; so the host-sized masked form counts only ticket neurons). At most `max_points` inputs
    are used: evenly spaced rows of `x`, so the choice is deterministic. One matmul of normalised
    activations per layer, on the found weights' device in their dtype (at least float32).

    Returns ``functional_recall`` (recovered / counted over all layers; 1 when nothing is counted),
    ``recovered``, ``ticket_neurons`` and ``layers``: one such dict per layer.
    """
    if len(weights) != len(ticket_weights) or len(biases) != len(weights) or len(ticket_biases) != len(ticket_weights):
        raise ValueError(f"the found network has {len(weights)} weight and {len(biases)} bias layers, the ticket "
                         f"{len(ticket_weights)} and {len(ticket_biases)}: they must agree")
    if weights[0].shape[1] != ticket_weights[0].shape[1] or weights[-1].shape[0] != ticket_weights[-1].shape[0]:
        raise ValueError(f"found network maps {weights[0].shape[1]} -> {weights[-1].shape[0]}, the ticket "
                         f"{ticket_weights[0].shape[1]} -> {ticket_weights[-1].shape[0]}")
    if not (0.0 < float(threshold) <= 1.0):
        raise ValueError(f"threshold must be in (0, 1], got {threshold!r}")
    if isinstance(max_points, bool) or int(max_points) < 1:
        raise ValueError(f"max_points must be an integer >= 1, got {max_points!r}")
    units = TicketUnits(ticket_weights, ticket_biases, x, max_points=max_points)
    return units.recall(weights, biases, threshold=threshold)


class TicketUnits:
    """The ticket's unit-norm activations on (at most `max_points` evenly spaced rows of) `x`, computed once,
    so that `recall` can measure many found networks against the same ticket (a recall curve over training)."""

    def __init__(self, ticket_weights: Sequence[torch.Tensor], ticket_biases: Sequence[torch.Tensor],
                 x: torch.Tensor, *, max_points: int = FUNCTIONAL_MAX_POINTS) -> None:
        n = x.shape[0]
        if n > max_points:
            x = x[torch.arange(int(max_points), device=x.device) * n // int(max_points)]
        self.x = x.detach()
        self.n_in, self.n_out = ticket_weights[0].shape[1], ticket_weights[-1].shape[0]
        self.n_layers = len(ticket_weights)
        tdev = ticket_weights[0].device
        with torch.no_grad():
            ticket = layer_activations([w.detach().to(tdev, torch.float64) for w in ticket_weights],
                                       [b.detach().to(tdev, torch.float64) for b in ticket_biases],
                                       x.detach().to(tdev, torch.float64))
        self.units = []
        for t in ticket:
            t_unit, t_live = _unit_columns(t)
            self.units.append(t_unit[:, t_live])
        self._cast: dict = {}

    def recall(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], *,
               threshold: float = FUNCTIONAL_THRESHOLD) -> dict:
        """`functional_recall`'s answer for the found network `weights`/`biases`."""
        if len(weights) != self.n_layers or len(biases) != len(weights):
            raise ValueError(f"the found network has {len(weights)} weight and {len(biases)} bias layers, the "
                             f"ticket {self.n_layers}: they must agree")
        if weights[0].shape[1] != self.n_in or weights[-1].shape[0] != self.n_out:
            raise ValueError(f"found network maps {weights[0].shape[1]} -> {weights[-1].shape[0]}, the ticket "
                             f"{self.n_in} -> {self.n_out}")
        device, dtype = weights[0].device, torch.promote_types(weights[0].dtype, torch.float32)
        if (device, dtype) not in self._cast:
            self._cast[(device, dtype)] = (self.x.to(device, dtype), [u.to(device, dtype) for u in self.units])
        x, units = self._cast[(device, dtype)]
        with torch.no_grad():
            found = layer_activations([w.detach().to(device, dtype) for w in weights],
                                      [b.detach().to(device, dtype) for b in biases], x)
            layers = []
            for f, t_unit in zip(found, units):
                f_unit, _ = _unit_columns(f)
                counted = int(t_unit.shape[1])
                hit = int(((t_unit.T @ f_unit) >= threshold).any(dim=1).sum()) if counted and f.shape[1] else 0
                layers.append({"functional_recall": _ratio(hit, counted, 1.0), "recovered": hit,
                               "ticket_neurons": counted})
        hit, counted = sum(d["recovered"] for d in layers), sum(d["ticket_neurons"] for d in layers)
        return {"functional_recall": _ratio(hit, counted, 1.0), "recovered": hit, "ticket_neurons": counted,
                "layers": layers}


class StackedTicketUnits:
    """The `TicketUnits` of M networks (one ticket each), padded into stacked tensors once, so that the
    functional recall of M stacked found networks costs one batched matmul per layer (the recall curves of
    a batch of runs). A padded ticket column is zero: its cosine is 0, below any threshold, so it never
    counts as recovered."""

    def __init__(self, units: Sequence[TicketUnits]) -> None:
        if not units:
            raise ValueError("StackedTicketUnits needs at least one TicketUnits")
        self.members = list(units)
        n_layers = {u.n_layers for u in self.members}
        points = {tuple(u.x.shape) for u in self.members}
        if len(n_layers) != 1 or len(points) != 1:
            raise ValueError(f"the tickets must have the same depth and point count to stack, got depths "
                             f"{sorted(n_layers)} and point shapes {sorted(points)}")
        self.counted = [[int(u.units[l].shape[1]) for u in self.members] for l in range(self.members[0].n_layers)]
        self._cast: dict = {}

    def _stacked(self, device, dtype):
        if (device, dtype) not in self._cast:
            x = torch.stack([u.x.to(device, dtype) for u in self.members])
            units = []
            for l, counted in enumerate(self.counted):
                t = torch.zeros((len(self.members), x.shape[1], max(counted)), dtype=dtype, device=device)
                for m, u in enumerate(self.members):
                    t[m, :, :counted[m]] = u.units[l].to(device, dtype)
                units.append(t.transpose(1, 2).contiguous())  # (M, ticket units, points)
            self._cast[(device, dtype)] = (x, units)
        return self._cast[(device, dtype)]

    def recall(self, weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], rows: Sequence[int] | None = None,
               *, threshold: float = FUNCTIONAL_THRESHOLD) -> list[float]:
        """``functional_recall`` of stacked found networks (M', out, in): row i against member ``rows[i]``
        (default: row m against member m), as `TicketUnits.recall` gives it for each alone."""
        device, dtype = weights[0].device, torch.promote_types(weights[0].dtype, torch.float32)
        x, units = self._stacked(device, dtype)
        rows = list(range(len(self.members))) if rows is None else list(rows)
        if len(rows) != weights[0].shape[0]:
            raise ValueError(f"{weights[0].shape[0]} stacked networks but {len(rows)} rows")
        if rows != list(range(len(self.members))):
            pick = torch.tensor(rows, device=device)
            x, units = x.index_select(0, pick), [t.index_select(0, pick) for t in units]
        ws = [w.detach().to(device, dtype) for w in weights]
        bs = [b.detach().to(device, dtype) for b in biases]
        sparse = _sparse_forward(ws)
        with torch.no_grad():  # in chunks of networks whose activations stay in cache
            hit = torch.cat([_hits(x[i:i + RECALL_CHUNK], [t[i:i + RECALL_CHUNK] for t in units],
                                   [w[i:i + RECALL_CHUNK] for w in ws], [b[i:i + RECALL_CHUNK] for b in bs],
                                   sparse, threshold) for i in range(0, len(rows), RECALL_CHUNK)])
        counted = [sum(c[m] for c in self.counted) for m in rows]
        return [_ratio(int(n), c, 1.0) for n, c in zip(hit.tolist(), counted)]


def _hits(x, units, ws, bs, sparse: bool, threshold: float) -> torch.Tensor:
    """Recovered ticket units per stacked found network (`StackedTicketUnits.recall` on one chunk)."""
    hit = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
    h, n = x, x.shape[1]
    if sparse:  # the found networks' nonzero weights only, feature-major throughout (`kernels.sparse_linear`)
        h = sparse_kernels.to_feature_major(x)  # (M', in, Bp), padding lanes zero
        lanes = h.shape[2]
    for l, (w, b) in enumerate(zip(ws, bs)):
        relu = l < len(ws) - 1
        if sparse:
            st = sparse_kernels.build_structure(w != 0)
            h = sparse_kernels.sparse_linear_fm(h, w.reshape(-1)[st.pos], st, n, b.contiguous(), relu)
        else:
            h = torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))
            if relu:
                h = torch.relu(h)
        if not units[l].shape[1]:
            continue
        if sparse:  # unit rows over the points (the zero padding lanes add nothing to norms or dots); the
            # cosines as dots divided by the found units' norms: no pass dividing every activation
            norms = h.norm(dim=2, keepdim=True)  # (M', found units, 1)
            t = units[l] if lanes == n else torch.nn.functional.pad(units[l], (0, lanes - n))
            cos = torch.bmm(h, t.transpose(1, 2)) / torch.where(norms > 0, norms, torch.ones_like(norms))
            hit += (cos >= threshold).any(dim=1).sum(dim=1)
        else:
            f_unit, _ = _unit_columns_stacked(h)
            hit += (torch.bmm(units[l], f_unit) >= threshold).any(dim=2).sum(dim=1)
    return hit


# networks per chunk of `StackedTicketUnits.recall` (width 100, 250 points: about 1.6 MB of activations a layer)
RECALL_CHUNK = 16

# Below this fraction of nonzero weights the stacked recall runs the found networks through the native sparse
# kernels (the curves of sparse runs: density 0.01 at width 100 computes 60x fewer multiply-adds than dense).
SPARSE_RECALL_DENSITY = 0.1


def _sparse_forward(weights: list[torch.Tensor]) -> bool:
    if weights[0].device.type != "cpu" or native.cpu_module() is None:
        return False
    nonzero = sum(int(torch.count_nonzero(w)) for w in weights)
    return nonzero < SPARSE_RECALL_DENSITY * sum(w.numel() for w in weights)


def _unit_columns_stacked(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`_unit_columns` of each network of (M, N, width) activations."""
    norms = a.norm(dim=1, keepdim=True)
    nonzero = norms > 0
    return a / torch.where(nonzero, norms, torch.ones_like(norms)), nonzero


def flat_functional_recall(weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor],
                           ticket_weights: Sequence[torch.Tensor], ticket_biases: Sequence[torch.Tensor],
                           x: torch.Tensor) -> dict:
    """`functional_recall` as the flat keys of results: ``functional_recall`` and
    ``functional_recall_layer_{l}``."""
    fr = functional_recall(weights, biases, ticket_weights, ticket_biases, x)
    out = {"functional_recall": float(fr["functional_recall"])}
    out.update({f"functional_recall_layer_{l}": float(d["functional_recall"]) for l, d in enumerate(fr["layers"])})
    return out
