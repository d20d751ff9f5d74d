"""Pruning scores: magnitude, |grad x weight| and SynFlow scores, iterative SynFlow pruning and exact top-k masks
(dispatchers and PyTorch references side by side).

Conventions shared by every function here:

- A *network* is given by per-layer lists ``weights`` (``(out, in)`` tensors) and ``biases`` (``(out,)``).
  **Stacked** form: the same lists with a leading network dimension, ``(M, out, in)`` and ``(M, out)``: M
  networks of one shape, handled in one call (the form the batched trainer uses). Results come back in the
  form they were given.
- Scores and masks are lists with one ``(weight_part, bias_part)`` pair per layer (the mask structure of
  `plantseek.masks`). A bias part of ``None`` in scores means "biases are not prunable".
- The flat order of parameters, used to break ties, is weight 0, bias 0, weight 1, bias 1, ... with each
  tensor row-major. Among equal scores the lowest flat index is kept.
- Backends: the native kernels of ``plantseek._C`` for CPU tensors; the references (PyTorch ops on the
  tensors' device) for CUDA tensors and under ``PLANTSEEK_NATIVE=0``. There is no CUDA kernel for scores.
- Arguments are checked before any work, alike on every backend and in the references: networks are
  non-empty lists of finite floating-point tensors on one device (M >= 1 when stacked), masks bool tensors of
  the parameters' shapes, scores real tensors, densities finite in [0, 1], counts integers in range. A bad one
  raises `ArgumentError` naming the argument, e.g. ``weights[1]``, what it got and what is allowed
  (`plantseek.kernels.checks`); booleans go through `plantseek.arguments`.

Functions: `magnitude_scores`, `grad_times_weight_scores`, `synflow_scores`, `synflow_prune`,
`global_topk`, `rows_topk`, `rows_kth_largest` and `score_search` (edge-popup's batched search), each with a ``*_reference`` twin where the native path differs; `kept_count` and
`density_schedule` (the pruners' exact counts and schedule).

C++: csrc/scores.{h,cpp}, csrc/bindings/scores.cpp. Tests: tests/kernels/test_scores.py.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from .. import native
from ..arguments import check_bool
from .checks import (ArgumentError, check_int, check_list, check_mask, check_pair, check_real, check_scope,
                     check_tensor, fail, value_range)

Pairs = list[tuple[torch.Tensor, torch.Tensor]]

# dispatcher -> its reference (tests/kernels/test_layout.py checks every concept module has such pairs)
KERNELS = {"synflow_scores": "synflow_scores_reference", "synflow_prune": "synflow_prune_reference",
           "global_topk": "global_topk_reference", "rows_topk": "rows_topk_reference",
           "rows_kth_largest": "rows_kth_largest_reference", "score_search": "score_search_reference"}


# --------------------------------------------------------------------------------------------- helpers


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _split_params(weights, biases):
    """Accept (weights, biases) lists or one list of (w, b) pairs; return two lists."""
    if biases is None:
        pairs = check_list("weights", weights, "weight tensors (with biases) or of (weight, bias) pairs")
        if not isinstance(pairs[0], (tuple, list)):
            raise ArgumentError("biases are required (or pass one list of (weight, bias) pairs as weights)")
        pairs = [check_pair(f"weights[{l}]", p) for l, p in enumerate(pairs)]
        return [p[0] for p in pairs], [p[1] for p in pairs]
    ws = check_list("weights", weights, "weight tensors")
    bs = check_list("biases", biases, "bias tensors")
    if len(ws) != len(bs):
        raise ArgumentError(f"biases must hold one tensor per layer of weights ({len(ws)}), got {len(bs)}")
    return ws, bs


def _check_network(weights, biases):
    """Validate a plain or stacked network: finite floating-point tensors on one device with chained shapes;
    returns (stacked, M, widths)."""
    w0 = check_tensor("weights[0]", weights[0])
    if w0.dim() not in (2, 3):
        raise fail("weights[0]", "have shape (out, in), or (M, out, in) for M stacked networks", w0)
    stacked = w0.dim() == 3
    M = int(w0.shape[0]) if stacked else 1
    if M < 1:
        raise fail("weights[0]", "hold at least one network (M >= 1) in its leading dimension", w0)
    lead = (M,) if stacked else ()
    widths = [int(w0.shape[-1])]
    for l, (w, b) in enumerate(zip(weights, biases)):
        check_tensor(f"weights[{l}]", w, shape=lead + (None, widths[-1]), device=w0.device, finite=True)
        widths.append(int(w.shape[-2]))
        check_tensor(f"biases[{l}]", b, shape=lead + (widths[-1],), device=w0.device, finite=True)
    return stacked, M, widths


def _full_masks(weights, biases):
    return [(torch.ones(w.shape, dtype=torch.bool, device=w.device),
             torch.ones(b.shape, dtype=torch.bool, device=b.device)) for w, b in zip(weights, biases)]


def _check_masks(masks, weights, biases):
    if masks is None:
        return _full_masks(weights, biases)
    return check_mask("masks", masks, [(tuple(w.shape), tuple(b.shape)) for w, b in zip(weights, biases)],
                      weights[0].device)


def _np(t: torch.Tensor, dtype=None) -> np.ndarray:
    t = t.detach()
    if dtype is not None:
        t = t.to(dtype)
    return t.cpu().contiguous().numpy()


def _per_network_arrays(segments: list[np.ndarray], M: int) -> list[list[np.ndarray]]:
    """Per network its flat views of contiguous (stacked when M > 1, or M == 1 either way) segment arrays."""
    return [[a.reshape(M, -1)[m] for a in segments] for m in range(M)]


def _per_network(t: torch.Tensor, stacked: bool, M: int):
    return [t[m] for m in range(M)] if stacked else [t]


def _native_for(tensors) -> object | None:
    dev = tensors[0].device
    if dev.type != "cpu":
        return None
    return native.cpu_module()


# --------------------------------------------------------------------------------------------- simple scores


def magnitude_scores(weights, biases=None) -> Pairs:
    """|w| and |b| per layer (plain or stacked; one list of (w, b) pairs also accepted).

    Elementwise PyTorch: one op per layer already covers all M stacked networks, so there is no native
    version (it would only add a copy)."""
    ws, bs = _split_params(weights, biases)
    _check_network(ws, bs)
    return [(w.detach().abs(), b.detach().abs()) for w, b in zip(ws, bs)]


def grad_times_weight_scores(weights, biases, weight_grads, bias_grads) -> Pairs:
    """|g * w| and |g_b * b| per layer (SNIP-style saliency), plain or stacked; a missing (None) gradient
    scores 0. Elementwise PyTorch for the same reason as `magnitude_scores`."""
    ws, bs = _split_params(weights, biases)
    _check_network(ws, bs)
    weight_grads = _check_grads("weight_grads", weight_grads, ws)
    bias_grads = _check_grads("bias_grads", bias_grads, bs)
    out = []
    for l, (w, b) in enumerate(zip(ws, bs)):
        gw, gb = weight_grads[l], bias_grads[l]
        sw = torch.zeros_like(w) if gw is None else (gw.detach() * w.detach()).abs()
        sb = torch.zeros_like(b) if gb is None else (gb.detach() * b.detach()).abs()
        out.append((sw, sb))
    return out


def _check_grads(name, grads, params):
    """One gradient per parameter tensor: None, or a finite floating-point tensor of its shape and device."""
    grads = check_list(name, grads, "gradient tensors or None", min_len=0)
    if len(grads) != len(params):
        raise ArgumentError(f"{name} must hold one gradient (or None) per layer ({len(params)}), got {len(grads)}")
    for l, (g, p) in enumerate(zip(grads, params)):
        if g is not None:
            check_tensor(f"{name}[{l}]", g, shape=tuple(p.shape), device=p.device, finite=True)
    return grads


# --------------------------------------------------------------------------------------------- SynFlow


def synflow_scores(weights, biases=None, masks=None) -> Pairs:
    """SynFlow scores of one network or of M stacked networks, in one native call.

    The linearised network has weights |w| * mask and biases |b| * mask and reads an all-ones input; R is
    the sum of its outputs; the score of a parameter theta is |theta| * dR/d|theta| (so masked parameters
    score 0). All quantities are non-negative, so the ReLUs are identities. Computed in float64, returned in
    the parameters' dtype. Accepts ``synflow_scores(weights, biases, masks)`` or ``synflow_scores(params)``
    with params a list of (w, b) pairs that are already masked. ValueError for non-finite parameters and for
    networks whose flow overflows float64 (the scores would be inf or NaN).
    """
    ws, bs, masks, stacked, M, widths = _synflow_problem(weights, biases, masks)
    ext = _native_for(ws)
    if ext is None:
        return _synflow_scores_torch(ws, bs, masks, stacked, M)
    dtype = ws[0].dtype
    L = len(ws)
    args = [[_np(_per_network(t, stacked, M)[m], torch.float64) for t in tensors] for tensors in (ws, bs)
            for m in range(M)]
    W_lists, B_lists = args[:M], args[M:]
    WM = [[_np(_per_network(wm, stacked, M)[m]) for wm, _ in masks] for m in range(M)]
    BM = [[_np(_per_network(bm, stacked, M)[m]) for _, bm in masks] for m in range(M)]
    group = [0] * (2 * L)
    out_w, out_b = ext.synflow(W_lists, B_lists, WM, BM, group, 0, [], _threads())
    result = []
    for l in range(L):
        sw = [torch.from_numpy(out_w[m][l]) for m in range(M)]
        sb = [torch.from_numpy(out_b[m][l]) for m in range(M)]
        tw = torch.stack(sw) if stacked else sw[0]
        tb = torch.stack(sb) if stacked else sb[0]
        result.append((tw.to(dtype), tb.to(dtype)))
    return result


def synflow_scores_reference(weights, biases=None, masks=None) -> Pairs:
    """PyTorch autograd reference of `synflow_scores`, looped over the networks (float64)."""
    ws, bs, masks, stacked, M, _ = _synflow_problem(weights, biases, masks)
    return _synflow_scores_torch(ws, bs, masks, stacked, M)


def _synflow_problem(weights, biases, masks):
    """Validated (ws, bs, masks, stacked, M, widths) of `synflow_scores` and its reference."""
    ws, bs = _split_params(weights, biases)
    stacked, M, widths = _check_network(ws, bs)
    masks = _check_masks(masks, ws, bs)
    _check_flow(ws, bs, masks, stacked, M)
    return ws, bs, masks, stacked, M, widths


_FLOW_LIMIT = 1e300  # below float64's 1.8e308 by a margin for the rounding of long sums


def _check_flow(ws, bs, masks, stacked, M):
    """ArgumentError when the synaptic flow comes near float64's limit: infinite activations or backward
    signals of the linearised network make scores inf or NaN. Pruning only removes non-negative path
    products, so the check of the starting mask holds for every later round. ``masks`` None: all kept.
    A bound from each layer's largest |w| and |b| settles ordinary networks; the exact passes run only when
    the bound is near the limit."""
    def max_abs(t):
        lo, hi = value_range(t) if t.numel() else (0.0, 0.0)
        return max(-lo, hi)

    h = g = 1.0
    for w, b in zip(ws, bs):
        h = w.shape[-1] * max_abs(w) * h + max_abs(b)
    for w in ws[:0:-1]:  # the backward signal reaches the inputs of layers L-1 .. 1
        g = w.shape[-2] * max_abs(w) * g
    if h < _FLOW_LIMIT and g < _FLOW_LIMIT:
        return

    def linear(l):  # |w| and |b| of layer l, masked, with a network dimension
        w, b = ws[l].detach().to(torch.float64).abs(), bs[l].detach().to(torch.float64).abs()
        if masks is not None:
            w, b = w.masked_fill(~masks[l][0], 0.0), b.masked_fill(~masks[l][1], 0.0)
        return (w, b) if stacked else (w.unsqueeze(0), b.unsqueeze(0))

    def below_limit(v, what, l):
        bad = ~(v < _FLOW_LIMIT).all(dim=1)
        if bool(bad.any()):
            m = int(bad.nonzero()[0])
            raise ArgumentError(f"weights: the synaptic flow of network {m} overflows float64 ({what} of layer {l} "
                                f"exceed {_FLOW_LIMIT:.0e}); SynFlow needs products of |w| along paths below that, "
                                f"so scale the weights down")

    with torch.no_grad():
        h = torch.ones(M, ws[0].shape[-1], dtype=torch.float64, device=ws[0].device)
        for l in range(len(ws)):
            w, b = linear(l)
            h = torch.bmm(w, h.unsqueeze(-1)).squeeze(-1) + b
            below_limit(h, "the outputs", l)
        g = torch.ones(M, ws[-1].shape[-2], dtype=torch.float64, device=ws[0].device)
        for l in range(len(ws) - 1, 0, -1):
            g = torch.bmm(linear(l)[0].transpose(1, 2), g.unsqueeze(-1)).squeeze(-1)
            below_limit(g, "the gradients at the inputs", l)


def _synflow_scores_torch(ws, bs, masks, stacked, M) -> Pairs:
    """The autograd scores of validated arguments."""
    dtype = ws[0].dtype
    per_net = []
    for m in range(M):
        leaves = []
        for l in range(len(ws)):
            w = _per_network(ws[l], stacked, M)[m].detach().double()
            b = _per_network(bs[l], stacked, M)[m].detach().double()
            wm = _per_network(masks[l][0], stacked, M)[m]
            bm = _per_network(masks[l][1], stacked, M)[m]
            leaves.append(((w.abs() * wm).requires_grad_(True), (b.abs() * bm).requires_grad_(True)))
        with torch.enable_grad():
            h = torch.ones(1, ws[0].shape[-1], dtype=torch.float64, device=ws[0].device)
            for i, (w, b) in enumerate(leaves):
                h = h @ w.t() + b
                if i < len(leaves) - 1:
                    h = torch.relu(h)
            r = h.sum()
            flat = [t for pair in leaves for t in pair]
            grads = torch.autograd.grad(r, flat)
        per_net.append([((w * grads[2 * i]).abs().detach(), (b * grads[2 * i + 1]).abs().detach())
                        for i, (w, b) in enumerate(leaves)])
    out = []
    for l in range(len(ws)):
        if stacked:
            out.append((torch.stack([p[l][0] for p in per_net]).to(dtype), torch.stack([p[l][1] for p in per_net]).to(dtype)))
        else:
            out.append((per_net[0][l][0].to(dtype), per_net[0][l][1].to(dtype)))
    return out


def kept_count(density: float, n: int) -> int:
    """Exact kept count at a density in [0, 1] of n >= 0 parameters: Python's ``round(density * n)`` (as the
    pruners use it)."""
    return _kept(check_real("density", density, 0, 1), check_int("n", n, 0))


def _kept(density: float, n: int) -> int:
    """`kept_count` of arguments already validated (the schedules and `global_topk` call it per round)."""
    return int(round(density * n))


def density_schedule(d0: float, density: float, rounds: int) -> list[float]:
    """Densities of rounds 1..R: d0^(1 - r/R) * density^(r/R), the last one exactly ``density`` (d0 and
    density in [0, 1], rounds >= 1)."""
    d0 = check_real("d0", d0, 0, 1)
    density = check_real("density", density, 0, 1)
    rounds = check_int("rounds", rounds, 1)
    out = []
    for r in range(1, rounds + 1):
        if r == rounds or d0 <= 0:
            out.append(density)
        else:
            out.append((d0 ** (1.0 - r / rounds)) * (density ** (r / rounds)))
    return out


def _groups(widths, scope, prune_bias):
    L = len(widths) - 1
    group = []
    for l in range(L):
        g = 0 if scope == "global" else l
        group += [g, g if prune_bias else -1]
    return group, (1 if scope == "global" else L)


def _mask_counts(masks, stacked, M):
    """Kept (weights, biases) per network and layer: counts[m][l] = (kw, kb)."""
    per_layer = []
    for wm, bm in masks:
        if stacked:
            kw = wm.reshape(M, -1).count_nonzero(dim=1).tolist()
            kb = bm.reshape(M, -1).count_nonzero(dim=1).tolist()
        else:
            kw, kb = [int(wm.count_nonzero())], [int(bm.count_nonzero())]
        per_layer.append((kw, kb))
    return [[(per_layer[l][0][m], per_layer[l][1][m]) for l in range(len(masks))] for m in range(M)]


def _schedule_counts(counts0, widths, density, rounds, scope, prune_bias):
    """keep counts (rounds x groups) per the pruners' schedule, from network 0's starting density."""
    L = len(widths) - 1
    sizes = [(widths[l + 1] * widths[l], widths[l + 1]) for l in range(L)]
    kept0 = sum(kw + (kb if prune_bias else 0) for kw, kb in counts0)
    total = sum(nw + (nb if prune_bias else 0) for nw, nb in sizes)
    d0 = kept0 / total if total else 1.0
    dens = density_schedule(d0, density, rounds)
    if scope == "global":
        return [[_kept(d, total)] for d in dens]
    return [[_kept(d, sizes[l][0] + (sizes[l][1] if prune_bias else 0)) for l in range(L)] for d in dens]


def synflow_prune(weights, biases, density: float, rounds: int = 100, masks=None, scope: str = "global",
                  prune_bias: bool = True) -> Pairs:
    """Iterative SynFlow for one network or M stacked networks in one native call; returns the masks.

    Round r = 1..R scores the network masked by the previous round's mask (`synflow_scores`) and keeps, in
    each scope ("global": all layers; "layer": each layer), ``round(d_r * n)`` of the parameters the mask
    still keeps (pruned parameters never come back), with d_r = d0^(1 - r/R) * density^(r/R) (d0 the
    starting density, d_R = density exactly); ties go to the lowest flat index. With ``prune_bias=False``
    biases are neither counted nor pruned. The schedule is computed from network 0's starting mask (give
    all networks the same starting density).
    """
    ws, bs, masks, stacked, M, widths, keep, rounds, prune_bias = _prune_problem(
        weights, biases, density, rounds, masks, scope, prune_bias)
    full = masks is None
    ext = _native_for(ws)
    if ext is None:
        return _synflow_prune_torch(ws, bs, _full_masks(ws, bs) if full else masks, stacked, M, keep, scope,
                                    prune_bias)
    L = len(ws)
    group, _ = _groups(widths, scope, prune_bias)
    W_lists = [[_np(_per_network(w, stacked, M)[m], torch.float64) for w in ws] for m in range(M)]
    B_lists = [[_np(_per_network(b, stacked, M)[m], torch.float64) for b in bs] for m in range(M)]
    if full:
        ones_w = [np.ones((widths[l + 1], widths[l]), dtype=bool) for l in range(L)]
        ones_b = [np.ones(widths[l + 1], dtype=bool) for l in range(L)]
        WM, BM = [ones_w] * M, [ones_b] * M
    else:
        WM = [[_np(_per_network(wm, stacked, M)[m]) for wm, _ in masks] for m in range(M)]
        BM = [[_np(_per_network(bm, stacked, M)[m]) for _, bm in masks] for m in range(M)]
    flat_keep = [k for row in keep for k in row]
    out_w, out_b = ext.synflow(W_lists, B_lists, WM, BM, group, rounds, flat_keep, _threads())
    dev = ws[0].device
    result = []
    for l in range(L):
        tw = [torch.from_numpy(out_w[m][l]) for m in range(M)]
        tb = [torch.from_numpy(out_b[m][l]) for m in range(M)]
        result.append(((torch.stack(tw) if stacked else tw[0]).to(dev), (torch.stack(tb) if stacked else tb[0]).to(dev)))
    return result


def _prune_problem(weights, biases, density, rounds, masks, scope, prune_bias):
    """Validated arguments of `synflow_prune` and its reference, with the keep counts of every round:
    (ws, bs, masks or None, stacked, M, widths, keep, rounds, prune_bias)."""
    check_scope(scope)
    density = check_real("density", density, 0, 1)
    rounds = check_int("rounds", rounds, 1)
    prune_bias = check_bool("prune_bias", prune_bias)
    ws, bs = _split_params(weights, biases)
    stacked, M, widths = _check_network(ws, bs)
    if masks is None:  # every network starts dense: no mask tensors needed
        counts = [[(widths[l + 1] * widths[l], widths[l + 1]) for l in range(len(ws))] for _ in range(M)]
    else:
        masks = _check_masks(masks, ws, bs)
        counts = _mask_counts(masks, stacked, M)
    keep = _schedule_counts(counts[0], widths, density, rounds, scope, prune_bias)
    _check_reachable(counts, keep[-1], scope, prune_bias)
    _check_flow(ws, bs, masks, stacked, M)
    return ws, bs, masks, stacked, M, widths, keep, rounds, prune_bias


def _check_reachable(counts, final_keep, scope, prune_bias):
    for m, per_layer in enumerate(counts):
        have_layers = [kw + (kb if prune_bias else 0) for kw, kb in per_layer]
        have = [sum(have_layers)] if scope == "global" else have_layers
        for g, (k, h) in enumerate(zip(final_keep, have)):
            if k > h:
                where = "in total" if scope == "global" else f"in layer {g}"
                raise ArgumentError(f"density: network {m}: the target keeps {k} parameters {where} but the starting "
                                    f"mask keeps only {h}; pruned parameters never come back (lower the density)")


def synflow_prune_reference(weights, biases, density: float, rounds: int = 100, masks=None, scope: str = "global",
                            prune_bias: bool = True) -> Pairs:
    """Reference of `synflow_prune`: autograd scores (`synflow_scores_reference`) and `global_topk_reference`
    per round, looped over the networks."""
    ws, bs, masks, stacked, M, _, keep, _, prune_bias = _prune_problem(
        weights, biases, density, rounds, masks, scope, prune_bias)
    masks = _full_masks(ws, bs) if masks is None else masks  # validated by _prune_problem
    return _synflow_prune_torch(ws, bs, masks, stacked, M, keep, scope, prune_bias)


def _synflow_prune_torch(ws, bs, masks, stacked, M, keep, scope, prune_bias) -> Pairs:
    """The reference rounds on validated arguments (``keep``: counts per round and scope group)."""
    per_net = []
    for m in range(M):
        w_m = [_per_network(w, stacked, M)[m] for w in ws]
        b_m = [_per_network(b, stacked, M)[m] for b in bs]
        cur = [(_per_network(wm, stacked, M)[m].clone(), _per_network(bm, stacked, M)[m].clone()) for wm, bm in masks]
        for ks in keep:
            scores = _synflow_scores_torch(w_m, b_m, cur, False, 1)
            if not prune_bias:
                scores = [(sw, None) for sw, _ in scores]
            cur = _topk_torch(_layout(scores, cur, scope), ks)  # validated once, by the caller
        per_net.append(cur)
    if not stacked:
        return per_net[0]
    return [(torch.stack([p[l][0] for p in per_net]), torch.stack([p[l][1] for p in per_net])) for l in range(len(ws))]


# --------------------------------------------------------------------------------------------- top-k


def global_topk(scores, k=None, eligible=None, *, density: float | None = None, scope: str = "global"):
    """Masks keeping exactly k parameters: the largest scores, ties to the lowest flat index.

    Two forms:

    - ``global_topk(flat_scores, k, eligible=None)``: a tensor of scores (any shape) and an int k; returns a
      bool tensor of the same shape with exactly k True among the ``eligible`` entries (bool tensor, same
      shape; default all). ValueError when k exceeds the eligible count.
    - ``global_topk(scores, k, eligible=None, density=None, scope="global")``: scores a list of
      (weight_scores, bias_scores) pairs (plain or stacked (M, ...)); a bias part of None means "biases are
      not prunable": they are not counted and their mask is the eligible one (all True by default).
      ``scope="global"``: k is an int (per network) over all prunable parameters; ``scope="layer"``: k is a
      list with one int per layer (weights and prunable biases of the layer together). ``density`` instead
      of k gives k = round(density * n) per scope. ``eligible`` is the current mask (pairs): ineligible
      parameters are never kept. Returns a mask (list of bool pairs), stacked when the scores are.

    Scores are real (floating-point or integer) tensors on one device; NaN scores raise ValueError, as do
    k or density that ask for more than the eligible parameters. Native (one call for all M networks) on the
    CPU, `global_topk_reference` elsewhere.
    """
    if isinstance(scores, torch.Tensor):
        return _topk_flat(scores, k, eligible)
    lay = _topk_layout(scores, eligible, scope)
    ks = _resolve_k(k, density, lay, scope)
    ext = _native_for([lay.segments[0]])
    if ext is None or lay.segments[0].dtype not in (torch.float32, torch.float64):
        return _topk_torch(lay, ks)
    dtype, M, stacked = lay.segments[0].dtype, lay.M, lay.stacked
    per_net_scores = _per_network_arrays([_np(s, dtype) for s in lay.segments], M)  # one copy per segment
    per_net_elig = None
    if lay.eligible is not None:
        per_net_elig = _per_network_arrays([_np(e) for e in lay.seg_eligible], M)
    out = ext.topk_masks(per_net_scores, lay.group, ks, per_net_elig, _threads())
    return _masks_from_segments(out, lay.pairs, lay.eligible, stacked, M)


def rows_topk(scores: torch.Tensor, k: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """A bool (M, P) mask keeping exactly k entries of each row of the (M, P) real ``scores``: the largest, ties
    to the lowest column, among the ``eligible`` ones (bool (M, P); default all). Native on the CPU for
    float32/float64 scores (`plantseek._C.rows_topk`: a bounded heap of the k best in one pass over a row, for
    the small k of SET/RigL's drop and grow); elsewhere one `torch.topk` for every row and a pass for the ties.
    ArgumentError for NaN scores or a k above some row's eligible count."""
    check_tensor("scores", scores, "real")
    if scores.dim() != 2:
        raise fail("scores", "be a (rows, entries) matrix", scores)
    M, P = scores.shape
    if eligible is not None:
        check_tensor("eligible", eligible, "bool", shape=(M, P), device=scores.device)
    k = check_int("k", k, 0)
    ext = _native_for([scores])
    if ext is not None and scores.dtype in (torch.float32, torch.float64) and M and P:
        try:
            out = ext.rows_topk(_np(scores), k, None if eligible is None else _np(eligible), _threads())
        except ValueError as exc:  # NaN or a k above a row's eligible count: the same errors as below
            raise ArgumentError(str(exc)) from None
        return torch.from_numpy(out)
    n_el = eligible.sum(dim=1) if eligible is not None else None
    fewest = P if n_el is None else (int(n_el.min()) if M else P)
    if k > fewest:
        raise ArgumentError(f"k = {k} exceeds the {fewest} eligible entries of some row")
    if bool(torch.isnan(scores).any()):
        raise ArgumentError("scores contain NaN")
    return _rows_topk(scores.detach(), k, eligible, n_el)


def _rows_topk(scores, k, eligible, n_el):
    M, P = scores.shape
    if k == 0 or M == 0:
        return torch.zeros((M, P), dtype=torch.bool, device=scores.device)
    if eligible is not None:
        n = int(n_el[0])
        if 4 * n <= P and bool((n_el == n).all()):  # few, equally many: select among them (column order kept)
            cols = eligible.nonzero()[:, 1].view(M, n)
            out = torch.zeros((M, P), dtype=torch.bool, device=scores.device)
            return out.scatter_(1, cols, _rows_topk(scores.gather(1, cols), k, None, None))
        low = torch.tensor(-torch.inf, dtype=scores.dtype, device=scores.device) if scores.is_floating_point() \
            else torch.iinfo(scores.dtype).min
        scores = torch.where(eligible, scores, low)
    if k >= P:
        return torch.ones((M, P), dtype=torch.bool, device=scores.device) if eligible is None else eligible.clone()
    top = torch.topk(scores, k, dim=1, sorted=False).values
    kth = top.min(dim=1, keepdim=True).values
    need = k - (top > kth).sum(dim=1, keepdim=True)  # how many entries equal to the k-th score to keep
    equal = scores == kth
    if eligible is not None:  # an ineligible entry ties only when the k-th score is the filler itself
        equal &= eligible
    if bool((equal.sum(dim=1, keepdim=True) == need).all()):  # no surplus ties (the usual case): one more pass
        return (scores > kth) | equal
    return (scores > kth) | (equal & (equal.cumsum(dim=1) <= need))


def rows_topk_reference(scores: torch.Tensor, k: int, eligible: torch.Tensor | None = None) -> torch.Tensor:
    """`rows_topk` one row at a time through `global_topk_reference`'s flat form (a stable sort)."""
    check_tensor("scores", scores, "real")
    if scores.dim() != 2:
        raise fail("scores", "be a (rows, entries) matrix", scores)
    rows = [_topk_flat_reference(scores[m], check_int("k", k, 0, scores.shape[1] if eligible is None
                                                       else int(eligible[m].sum())),
                                 None if eligible is None else eligible[m]) for m in range(scores.shape[0])]
    return torch.stack(rows) if rows else torch.zeros(scores.shape, dtype=torch.bool, device=scores.device)


def rows_kth_largest(values: torch.Tensor, k) -> torch.Tensor:
    """Row m's k[m]-th largest value of the (M, P) float ``values``, NaN ranked above every number (as `torch.topk`
    ranks it): edge-popup's per-run thresholds, taken before every step of its search. Native on the CPU for
    float32/float64 (`plantseek._C.rows_kth_largest`, a radix selection over each row's order keys); elsewhere
    `rows_kth_largest_reference`. ArgumentError for a k outside [1, P] or not one per row."""
    values, k = _check_kth(values, k)
    ext = _native_for([values])
    if ext is None or values.dtype not in (torch.float32, torch.float64) or values.shape[0] == 0:
        return _kth_largest_torch(values, k)
    out = ext.rows_kth_largest(_np(values), np.asarray(k, dtype=np.int64), _threads())
    return torch.from_numpy(out)


def rows_kth_largest_reference(values: torch.Tensor, k) -> torch.Tensor:
    """`rows_kth_largest` in PyTorch ops on the tensor's device: the minimum of each row's unsorted top k, one
    `torch.topk` per distinct k over the rows that ask for it (NaN, the largest, wins only a row of NaNs)."""
    return _kth_largest_torch(*_check_kth(values, k))


def _check_kth(values, k):
    check_tensor("values", values, "float")
    if values.dim() != 2:
        raise fail("values", "be a (rows, entries) matrix", values)
    M, P = values.shape
    k = check_list("k", k, "integers, one per row of values", min_len=0)
    if len(k) != M:
        raise ArgumentError(f"k must hold one count per row of values ({M}), got {len(k)}")
    return values.detach(), [check_int(f"k[{m}]", v, 1, P) for m, v in enumerate(k)]


def _kth_largest_torch(flat: torch.Tensor, k: list[int]) -> torch.Tensor:
    thr = torch.empty(flat.shape[0], dtype=flat.dtype, device=flat.device)
    for kv in sorted(set(k)):
        rows = [r for r, v in enumerate(k) if v == kv]
        sub = flat if len(rows) == flat.shape[0] else flat[torch.tensor(rows, device=flat.device)]
        top = torch.topk(sub, kv, dim=1, sorted=False).values
        nan = top.isnan()
        low = torch.where(nan, math.inf, top).amin(dim=1)
        thr[torch.tensor(rows, device=flat.device)] = torch.where(nan.all(dim=1), math.nan, low)
    return thr


def _check_flat(scores, k, eligible) -> int:
    """Validate the flat form; returns k."""
    check_tensor("scores", scores, "real")
    if eligible is not None:
        check_tensor("eligible", eligible, "bool", shape=tuple(scores.shape))
    if k is None:
        raise ArgumentError("k is required for a flat score tensor")
    k = check_int("k", k, 0)
    n_el = scores.numel() if eligible is None else int(eligible.sum())
    if k > n_el:
        raise ArgumentError(f"k must be at most the number of eligible entries ({n_el}), got {k}")
    return k


def _topk_flat(scores, k, eligible):
    k = _check_flat(scores, k, eligible)
    flat = scores.detach().reshape(-1)
    ext = _native_for([flat])
    if ext is None or flat.dtype not in (torch.float32, torch.float64):
        return _topk_flat_reference(scores, k, eligible)
    el = None if eligible is None else [[_np(eligible.reshape(-1))]]
    out = ext.topk_masks([[_np(flat)]], [0], [k], el, _threads())
    return torch.from_numpy(out[0][0]).reshape(scores.shape).to(scores.device)


def _topk_flat_reference(scores, k, eligible):
    """Top-k of one flat vector; its callers have checked k against the eligible count."""
    flat = scores.detach().reshape(-1)
    if torch.isnan(flat).any():
        raise ArgumentError("scores contain NaN")
    el = torch.ones_like(flat, dtype=torch.bool) if eligible is None else eligible.reshape(-1).to(flat.device)
    order = torch.sort(flat, descending=True, stable=True).indices
    order = order[torch.sort((~el[order]).to(torch.uint8), stable=True).indices]  # eligible first, order kept
    keep = torch.zeros_like(el)
    keep[order[:k]] = True
    return keep.reshape(scores.shape)


class _Layout(NamedTuple):
    """Validated list-form arguments of `global_topk`, as segments (weight 0, bias 0 when prunable, ...)."""
    pairs: list  # the (weight_scores, bias_scores or None) pairs
    eligible: list | None  # the (weight_mask, bias_mask) pairs
    segments: list
    seg_eligible: list
    group: list  # scope group of each segment
    counts: list  # prunable parameters per group (per network)
    available: list | None  # per group: (fewest eligible over the networks, that network)
    stacked: bool
    M: int


def _topk_layout(scores, eligible, scope) -> _Layout:
    """The validated `_Layout` of the list form of `global_topk` (its public entry points)."""
    check_scope(scope)
    pairs = [check_pair(f"scores[{l}]", p, "a (weight_scores, bias_scores or None) pair")
             for l, p in enumerate(check_list("scores", scores, "(weight_scores, bias_scores) pairs"))]
    s0 = check_tensor("scores[0][0]", pairs[0][0], "real")
    stacked = s0.dim() == 3
    M = int(s0.shape[0]) if stacked else 1
    if M < 1:
        raise fail("scores[0][0]", "hold at least one network (M >= 1) in its leading dimension", s0)
    L = len(pairs)
    if eligible is not None:
        eligible = check_list("eligible", eligible, "(weight_mask, bias_mask) pairs")
        if len(eligible) != L:
            raise ArgumentError(f"eligible must hold one (weight_mask, bias_mask) pair per layer of scores ({L}), "
                                f"got {len(eligible)}")
        eligible = [check_pair(f"eligible[{l}]", p, "a (weight_mask, bias_mask) pair") for l, p in enumerate(eligible)]
    n_eligible = [0] * (1 if scope == "global" else L)
    for l, (sw, sb) in enumerate(pairs):
        g = 0 if scope == "global" else l
        for t, j in [(sw, 0)] + ([(sb, 1)] if sb is not None else []):
            check_tensor(f"scores[{l}][{j}]", t, "real", device=s0.device)
            if stacked and (t.dim() < 2 or t.shape[0] != M):
                raise fail(f"scores[{l}][{j}]", f"have shape ({M}, ...): stacked like scores[0][0]", t)
            if eligible is not None:
                e = check_tensor(f"eligible[{l}][{j}]", eligible[l][j], "bool", shape=tuple(t.shape))
                n_eligible[g] = n_eligible[g] + (e.reshape(M, -1).sum(dim=1) if stacked else e.sum().reshape(1)).cpu()
        if sb is None and eligible is not None:
            check_tensor(f"eligible[{l}][1]", eligible[l][1], "bool")
    available = None
    if eligible is not None:
        available = [(int(n.min()), int(n.argmin())) if isinstance(n, torch.Tensor) else (0, 0) for n in n_eligible]
    return _layout(pairs, eligible, scope, stacked, M, available)


def _layout(pairs, eligible, scope, stacked=False, M=1, available=None) -> _Layout:
    """The `_Layout` of arguments already validated (`_topk_layout`, the SynFlow reference rounds)."""
    segments, seg_eligible, group, counts = [], [], [], []
    for l, (sw, sb) in enumerate(pairs):
        g = 0 if scope == "global" else l
        if g == len(counts):
            counts.append(0)
        for t, j in [(sw, 0)] + ([(sb, 1)] if sb is not None else []):
            segments.append(t)
            group.append(g)
            counts[g] += t.numel() // M
            if eligible is not None:
                seg_eligible.append(eligible[l][j])
    return _Layout(list(pairs), eligible, segments, seg_eligible, group, counts, available, stacked, M)


def _resolve_k(k, density, lay: _Layout, scope) -> list[int]:
    counts = lay.counts
    if (k is None) == (density is None):
        raise ArgumentError("give exactly one of k and density")
    if density is not None:
        density = check_real("density", density, 0, 1)
        ks = [_kept(density, n) for n in counts]
    elif scope == "global":
        if isinstance(k, (list, tuple)):
            raise fail("k", "be one integer for scope='global'", k)
        ks = [check_int("k", k, 0, counts[0])]
    else:
        if not isinstance(k, (list, tuple)) or len(k) != len(counts):
            raise fail("k", f"be a list of {len(counts)} integers (one per layer) for scope='layer'", k)
        ks = [check_int(f"k[{l}]", v, 0, n) for l, (v, n) in enumerate(zip(k, counts))]
    for g, (v, (n, m)) in enumerate(zip(ks, lay.available or [])):
        if v > n:
            name = f"density {density!r}" if density is not None else ("k" if scope == "global" else f"k[{g}]")
            where = "in total" if scope == "global" else f"in layer {g}"
            raise ArgumentError(f"{name} asks to keep {v} parameters {where}, but network {m} has only {n} eligible "
                                f"ones there (ineligible parameters are never kept)")
    return ks


def _masks_from_segments(out, scores, eligible, stacked, M):
    result = []
    s = 0
    for l, (sw, sb) in enumerate(scores):
        per = []
        for t in ([sw] + ([sb] if sb is not None else [])):
            arr = np.stack([out[m][s] for m in range(M)]) if M > 1 else out[0][s]
            per.append(torch.from_numpy(arr).reshape(t.shape).to(t.device))
            s += 1
        if sb is None:
            per.append(None)
        result.append(per)
    return _fill_bias(result, scores, eligible)


def _fill_bias(result, scores, eligible):
    out = []
    for l, (wm, bm) in enumerate(result):
        if bm is None:
            w = scores[l][0]
            bshape = w.shape[:-1]
            bm = (eligible[l][1].clone() if eligible is not None
                  else torch.ones(bshape, dtype=torch.bool, device=w.device))
        out.append((wm, bm))
    return out


def global_topk_reference(scores, k=None, eligible=None, *, density: float | None = None, scope: str = "global"):
    """Reference of `global_topk` with one stable sort per scope and network (any device)."""
    if isinstance(scores, torch.Tensor):
        return _topk_flat_reference(scores, _check_flat(scores, k, eligible), eligible)
    lay = _topk_layout(scores, eligible, scope)
    return _topk_torch(lay, _resolve_k(k, density, lay, scope))


def _topk_torch(lay: _Layout, ks) -> list:
    seg_scores, seg_elig, group, stacked, M = lay.segments, lay.seg_eligible, lay.group, lay.stacked, lay.M
    seg_out = [[None] * len(seg_scores) for _ in range(M)]
    for m in range(M):
        for g in range(len(ks)):
            idx = [s for s in range(len(seg_scores)) if group[s] == g]
            flat = torch.cat([(seg_scores[s][m] if stacked else seg_scores[s]).reshape(-1) for s in idx])
            el = None
            if lay.eligible is not None:
                el = torch.cat([(seg_elig[s][m] if stacked else seg_elig[s]).reshape(-1) for s in idx])
            keep = _topk_flat_reference(flat, ks[g], el)
            off = 0
            for s in idx:
                n = seg_scores[s].numel() // M
                seg_out[m][s] = keep[off:off + n]
                off += n
    result = []
    s = 0
    for l, (sw, sb) in enumerate(lay.pairs):
        per = []
        for t in ([sw] + ([sb] if sb is not None else [])):
            parts = [seg_out[m][s] for m in range(M)]
            per.append((torch.stack(parts) if stacked else parts[0]).reshape(t.shape))
            s += 1
        if sb is None:
            per.append(None)
        result.append(per)
    return _fill_bias(result, lay.pairs, lay.eligible)


# --------------------------------------------------------------------------------------------- edge-popup's search


class ScoreSearch:
    """Edge-popup's batched straight-through search over buffers it owns, for M stacked networks of one shape:
    ``forward(k)`` writes every scored parameter's effective weights (kept ones as they are, the others zero)
    for the current scores, ``step(lr, first)`` one SGD step of the scores from the gradients the caller wrote
    into its ``grads`` buffers. Native on the CPU for float32/float64 (`plantseek._C.ScoreSearch`: two calls a
    step instead of about fifteen elementwise passes per layer); ``reference=True``, or elsewhere, the same
    arithmetic in PyTorch ops.

    scores: per parameter an (M, R, C) contiguous float tensor, updated in place; weights: the same shapes;
    eligible: per parameter a bool tensor of that shape (the current mask) or None (everything eligible);
    grads: per parameter an (M, R, C) tensor of the scores' dtype, any strides (a transposed product's buffer);
    groups: lists of parameter indices that compete in one top-k (a layer, or every layer in the global scope).
    The effective weight is weight * (keep + (|s| - |s|)) with keep = |s| >= the group's k-th largest eligible
    |s| of the run; the step is g = (weight * sgn(s)) * grad, g += weight_decay * s, heavy-ball momentum (the first
    step copies g), s += -lr * momentum: the roundings of `plantseek.optim.sgd_step_`."""

    def __init__(self, scores, weights, eligible, grads, groups, *, momentum: float, weight_decay: float,
                 reference: bool = False) -> None:
        scores = check_list("scores", scores, "score tensors")
        J = len(scores)
        for name, seq in (("weights", weights), ("eligible", eligible), ("grads", grads)):
            if len(check_list(name, seq, "tensors", min_len=0)) != J:
                raise ArgumentError(f"{name} must hold one entry per scored parameter ({J}), got {len(seq)}")
        s0 = check_tensor("scores[0]", scores[0], "float")
        if s0.dim() != 3:
            raise fail("scores[0]", "have shape (M, R, C)", s0)
        M, dev, dt = s0.shape[0], s0.device, s0.dtype
        for j in range(J):
            s = check_tensor(f"scores[{j}]", scores[j], "float")
            if s.dim() != 3 or s.shape[0] != M or s.device != dev or s.dtype != dt or not s.is_contiguous():
                raise fail(f"scores[{j}]", f"be a contiguous (M={M}, R, C) {dt} tensor on {dev}", s)
            for name, t, kind in (("weights", weights[j], "float"), ("grads", grads[j], "float")):
                t = check_tensor(f"{name}[{j}]", t, kind)
                if t.shape != s.shape or t.dtype != dt or t.device != dev or (name == "weights" and not t.is_contiguous()):
                    raise fail(f"{name}[{j}]", f"be a {'contiguous ' if name == 'weights' else ''}{tuple(s.shape)} "
                               f"{dt} tensor on {dev}", t)
            if eligible[j] is not None:
                e = check_tensor(f"eligible[{j}]", eligible[j], "bool")
                if e.shape != s.shape or e.device != dev or not e.is_contiguous():
                    raise fail(f"eligible[{j}]", f"be None or a contiguous {tuple(s.shape)} bool tensor on {dev}", e)
        groups = [list(g) for g in check_list("groups", groups, "lists of parameter indices")]
        seen = sorted(j for g in groups for j in g)
        if seen != list(range(J)):
            raise ArgumentError(f"groups must hold every parameter index 0..{J - 1} exactly once, got {groups}")
        self.M = M
        self.scores, self.weights, self.eligible, self.grads = list(scores), list(weights), list(eligible), list(grads)
        self.groups = groups
        self.momentum_, self.weight_decay = float(check_real("momentum", momentum, 0)), float(check_real("weight_decay", weight_decay, 0))
        self.group_of, self.offset = [0] * J, [0] * J
        sizes = []
        for g, members in enumerate(groups):
            off = 0
            for j in members:
                self.group_of[j], self.offset[j] = g, off
                off += scores[j][0].numel()
            sizes.append(off)
        self.mags = [torch.empty((M, P), dtype=dt, device=dev) for P in sizes]
        for j in range(J):
            self._write_mags(j)
        self.buffers = [torch.zeros_like(s) for s in scores]
        self.effective = [torch.empty_like(s) for s in scores]
        self._thresholds: list[torch.Tensor] = []
        ext = None if reference or dt not in (torch.float32, torch.float64) else _native_for([s0])
        self._native = None if ext is None else ext.ScoreSearch(
            [s.detach().numpy() for s in self.scores], [b.numpy() for b in self.buffers], [w.detach().numpy() for w in self.weights],
            [None if e is None else e.numpy() for e in self.eligible], [e.numpy() for e in self.effective],
            [g.detach().numpy() for g in self.grads], [m.numpy() for m in self.mags], self.group_of, self.offset)

    @property
    def native(self) -> bool:
        return self._native is not None

    def _write_mags(self, j: int) -> None:
        s, e = self.scores[j].detach(), self.eligible[j]
        a = s.abs() if e is None else torch.where(e, s.abs(), -math.inf)
        off = self.offset[j]
        self.mags[self.group_of[j]][:, off:off + s[0].numel()] = a.reshape(self.M, -1)

    def forward(self, k: np.ndarray) -> list[torch.Tensor]:
        """The effective weights (the `effective` buffers) for counts ``k``, (groups, M) int64: k[g][m] of group
        g's eligible magnitudes kept in run m (in [1, the group's size]; ties at the threshold keep a few more)."""
        if self._native is not None:
            self._native.forward(k, _threads())
            return self.effective
        k = np.asarray(k, dtype=np.int64)
        if k.shape != (len(self.groups), self.M):
            raise ArgumentError(f"k must have shape ({len(self.groups)}, {self.M}), got {k.shape}")
        self._thresholds = []
        for g, mags in enumerate(self.mags):
            thr = rows_kth_largest_reference(mags, k[g].tolist())
            self._thresholds.append(thr)
            for j in self.groups[g]:
                a = self.scores[j].detach().abs()
                keep = a >= thr.view(-1, 1, 1)
                if self.eligible[j] is not None:
                    keep &= self.eligible[j]
                torch.mul(self.weights[j], keep.to(a.dtype) + (a - a), out=self.effective[j])
        return self.effective

    def thresholds(self) -> torch.Tensor:
        """The last `forward`'s thresholds, (groups, M): each group's k-th largest eligible magnitude per run."""
        if self._native is not None:
            return torch.from_numpy(self._native.thresholds())
        return torch.stack(self._thresholds)

    def step(self, lr: float, first: bool) -> None:
        """One SGD step of every score from its ``grads`` buffer (the first step copies into the momentum)."""
        if self._native is not None:
            self._native.step(float(lr), self.momentum_, self.weight_decay, bool(first), _threads())
            return
        with torch.no_grad():
            for j, s in enumerate(self.scores):
                d = (self.weights[j] * s.sgn()).mul_(self.grads[j])
                if self.weight_decay:
                    d.add_(s, alpha=self.weight_decay)
                if self.momentum_:
                    b = self.buffers[j]
                    if first:
                        b.copy_(d)
                    else:
                        b.mul_(self.momentum_).add_(d)
                    s.add_(b, alpha=-float(lr))
                else:
                    s.add_(d, alpha=-float(lr))
                self._write_mags(j)


def score_search(scores, weights, eligible, grads, groups, *, momentum: float, weight_decay: float) -> ScoreSearch:
    """Edge-popup's batched search (`ScoreSearch`), native where `plantseek._C` serves the device and dtype."""
    return ScoreSearch(scores, weights, eligible, grads, groups, momentum=momentum, weight_decay=weight_decay)


def score_search_reference(scores, weights, eligible, grads, groups, *, momentum: float,
                           weight_decay: float) -> ScoreSearch:
    """`score_search` in PyTorch ops on the tensors' device (the same roundings)."""
    return ScoreSearch(scores, weights, eligible, grads, groups, momentum=momentum, weight_decay=weight_decay,
                       reference=True)
