"""Pruning-score kernels: Python wrappers of the native core next to their pure-PyTorch references.

Conventions shared by every function here:

- A *network* is given by per-layer lists ``weights`` (``(out, in)`` tensors) and ``biases`` (``(out,)``).
  **Stacked** form: the same lists with a leading network dimension, ``(M, out, in)`` and ``(M, out)``: M
  networks of one shape, handled in one call (the form the batched trainer uses). Results come back in the
  form they were given.
- Scores and masks are lists with one ``(weight_part, bias_part)`` pair per layer (the mask structure of
  `plantseek.masks`). A bias part of ``None`` in scores means "biases are not prunable".
- The flat order of parameters, used to break ties, is weight 0, bias 0, weight 1, bias 1, ... with each
  tensor row-major. Among equal scores the lowest flat index is kept.
- ``PLANTSEEK_NATIVE=0`` forces the references; CUDA tensors use the references (PyTorch ops on the device).

Functions: `magnitude_scores`, `grad_times_weight_scores`, `synflow_scores`, `synflow_prune`,
`global_topk`, each with a ``*_reference`` twin where the native path differs.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from . import native

Pairs = list[tuple[torch.Tensor, torch.Tensor]]


# --------------------------------------------------------------------------------------------- helpers


def _threads() -> int:
    return max(1, torch.get_num_threads())


def _split_params(weights, biases):
    """Accept (weights, biases) lists or one list of (w, b) pairs; return two lists."""
    if biases is None and len(weights) and isinstance(weights[0], (tuple, list)):
        return [p[0] for p in weights], [p[1] for p in weights]
    if biases is None:
        raise ValueError("biases are required (or pass one list of (weight, bias) pairs)")
    if len(weights) != len(biases):
        raise ValueError(f"{len(weights)} weight tensors but {len(biases)} bias tensors")
    return list(weights), list(biases)


def _check_network(weights, biases, name="weights"):
    """Validate shapes of a plain or stacked network; returns (stacked, M, widths)."""
    if len(weights) == 0:
        raise ValueError(f"{name} must hold at least one layer")
    stacked = weights[0].dim() == 3
    M = int(weights[0].shape[0]) if stacked else 1
    widths = [int(weights[0].shape[-1])]
    for l, (w, b) in enumerate(zip(weights, biases)):
        if not isinstance(w, torch.Tensor) or not isinstance(b, torch.Tensor):
            raise TypeError(f"layer {l}: weights and biases must be tensors")
        if w.dim() != (3 if stacked else 2):
            raise ValueError(f"layer {l}: weight has shape {tuple(w.shape)}; all layers must be "
                             f"{'(M, out, in)' if stacked else '(out, in)'}")
        if stacked and w.shape[0] != M:
            raise ValueError(f"layer {l}: {w.shape[0]} networks, layer 0 has {M}")
        if w.shape[-1] != widths[-1]:
            raise ValueError(f"layer {l}: weight takes {w.shape[-1]} inputs but the previous layer has {widths[-1]} outputs")
        expect_b = (M, w.shape[-2]) if stacked else (w.shape[-2],)
        if tuple(b.shape) != tuple(expect_b):
            raise ValueError(f"layer {l}: bias has shape {tuple(b.shape)}, expected {expect_b}")
        widths.append(int(w.shape[-2]))
    return stacked, M, widths


def _check_masks(masks, weights, biases):
    if masks is None:
        return [(torch.ones(w.shape, dtype=torch.bool, device=w.device),
                 torch.ones(b.shape, dtype=torch.bool, device=b.device)) for w, b in zip(weights, biases)]
    if len(masks) != len(weights):
        raise ValueError(f"masks have {len(masks)} layers, the network has {len(weights)}")
    for l, ((wm, bm), w, b) in enumerate(zip(masks, weights, biases)):
        if wm.shape != w.shape or bm.shape != b.shape:
            raise ValueError(f"mask layer {l}: shapes {tuple(wm.shape)}/{tuple(bm.shape)} do not match "
                             f"{tuple(w.shape)}/{tuple(b.shape)}")
        if wm.dtype != torch.bool or bm.dtype != torch.bool:
            raise TypeError(f"mask layer {l}: masks must be bool tensors")
    return [(wm, bm) for wm, bm in masks]


def _np(t: torch.Tensor, dtype=None) -> np.ndarray:
    t = t.detach()
    if dtype is not None:
        t = t.to(dtype)
    return t.cpu().contiguous().numpy()


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
    return [(w.detach().abs(), b.detach().abs()) for w, b in zip(ws, bs)]


def grad_times_weight_scores(weights, biases, weight_grads, bias_grads) -> Pairs:
    """|g * w| and |g_b * b| per layer (SNIP-style saliency), plain or stacked; a missing (None) gradient
    scores 0. Elementwise PyTorch for the same reason as `magnitude_scores`."""
    ws, bs = _split_params(weights, biases)
    out = []
    for l, (w, b) in enumerate(zip(ws, bs)):
        gw, gb = weight_grads[l], bias_grads[l]
        sw = torch.zeros_like(w) if gw is None else (gw.detach() * w.detach()).abs()
        sb = torch.zeros_like(b) if gb is None else (gb.detach() * b.detach()).abs()
        out.append((sw, sb))
    return out


# --------------------------------------------------------------------------------------------- SynFlow


def synflow_scores(weights, biases=None, masks=None) -> Pairs:
    """SynFlow scores of one network or of M stacked networks, in one native call.

    The linearised network has weights |w| * mask and biases |b| * mask and reads an all-ones input; R is
    the sum of its outputs; the score of a parameter theta is |theta| * dR/d|theta| (so masked parameters
    score 0). All quantities are non-negative, so the ReLUs are identities. Computed in float64, returned in
    the parameters' dtype. Accepts ``synflow_scores(weights, biases, masks)`` or ``synflow_scores(params)``
    with params a list of (w, b) pairs that are already masked.
    """
    ws, bs = _split_params(weights, biases)
    stacked, M, widths = _check_network(ws, bs)
    masks = _check_masks(masks, ws, bs)
    ext = _native_for(ws)
    if ext is None:
        return synflow_scores_reference(ws, bs, masks)
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
    ws, bs = _split_params(weights, biases)
    stacked, M, _ = _check_network(ws, bs)
    masks = _check_masks(masks, ws, bs)
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
    """Exact kept count at a density: Python's ``round(density * n)`` (as the pruners use it)."""
    return int(round(float(density) * int(n)))


def density_schedule(d0: float, density: float, rounds: int) -> list[float]:
    """Densities of rounds 1..R: d0^(1 - r/R) * density^(r/R), the last one exactly ``density``."""
    out = []
    for r in range(1, rounds + 1):
        if r == rounds or d0 <= 0:
            out.append(float(density))
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
        return [[kept_count(d, total)] for d in dens]
    return [[kept_count(d, sizes[l][0] + (sizes[l][1] if prune_bias else 0)) for l in range(L)] for d in dens]


def _check_scope(scope):
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")


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
    _check_scope(scope)
    if not (0.0 <= float(density) <= 1.0):
        raise ValueError(f"density must lie in [0, 1], got {density}")
    if int(rounds) < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    ws, bs = _split_params(weights, biases)
    stacked, M, widths = _check_network(ws, bs)
    full = masks is None
    if full:  # every network starts dense: no mask tensors needed, one shared all-ones array per layer
        counts = [[(widths[l + 1] * widths[l], widths[l + 1]) for l in range(len(ws))] for _ in range(M)]
    else:
        masks = _check_masks(masks, ws, bs)
        counts = _mask_counts(masks, stacked, M)
    keep = _schedule_counts(counts[0], widths, density, int(rounds), scope, prune_bias)
    _check_reachable(counts, keep[-1], scope, prune_bias)
    ext = _native_for(ws)
    if ext is None:
        return synflow_prune_reference(ws, bs, density, rounds, None if full else masks, scope, prune_bias)
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
    out_w, out_b = ext.synflow(W_lists, B_lists, WM, BM, group, int(rounds), flat_keep, _threads())
    dev = ws[0].device
    result = []
    for l in range(L):
        tw = [torch.from_numpy(out_w[m][l]) for m in range(M)]
        tb = [torch.from_numpy(out_b[m][l]) for m in range(M)]
        result.append(((torch.stack(tw) if stacked else tw[0]).to(dev), (torch.stack(tb) if stacked else tb[0]).to(dev)))
    return result


def _check_reachable(counts, final_keep, scope, prune_bias):
    for m, per_layer in enumerate(counts):
        have_layers = [kw + (kb if prune_bias else 0) for kw, kb in per_layer]
        have = [sum(have_layers)] if scope == "global" else have_layers
        for g, (k, h) in enumerate(zip(final_keep, have)):
            if k > h:
                where = "in total" if scope == "global" else f"in layer {g}"
                raise ValueError(f"network {m}: the target keeps {k} parameters {where} but the starting mask keeps "
                                 f"only {h}; pruned parameters never come back (lower the density)")


def synflow_prune_reference(weights, biases, density: float, rounds: int = 100, masks=None, scope: str = "global",
                            prune_bias: bool = True) -> Pairs:
    """Reference of `synflow_prune`: autograd scores (`synflow_scores_reference`) and `global_topk_reference`
    per round, looped over the networks."""
    _check_scope(scope)
    ws, bs = _split_params(weights, biases)
    stacked, M, widths = _check_network(ws, bs)
    masks = _check_masks(masks, ws, bs)
    keep = _schedule_counts(_mask_counts(masks, stacked, M)[0], widths, density, int(rounds), scope, prune_bias)
    per_net = []
    for m in range(M):
        w_m = [_per_network(w, stacked, M)[m] for w in ws]
        b_m = [_per_network(b, stacked, M)[m] for b in bs]
        cur = [(_per_network(wm, stacked, M)[m].clone(), _per_network(bm, stacked, M)[m].clone()) for wm, bm in masks]
        for r in range(int(rounds)):
            scores = synflow_scores_reference(w_m, b_m, cur)
            if not prune_bias:
                scores = [(sw, None) for sw, _ in scores]
            k = keep[r][0] if scope == "global" else keep[r]
            cur = global_topk_reference(scores, k, eligible=cur, scope=scope)
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

    NaN scores raise ValueError. Native (one call for all M networks) on the CPU, `global_topk_reference`
    elsewhere.
    """
    if isinstance(scores, torch.Tensor):
        return _topk_flat(scores, k, eligible)
    _check_scope(scope)
    seg_scores, seg_elig, group, counts, stacked, M = _topk_layout(scores, eligible, scope)
    ks = _resolve_k(k, density, counts, scope)
    ext = _native_for([seg_scores[0]])
    if ext is None or seg_scores[0].dtype not in (torch.float32, torch.float64):
        return global_topk_reference(scores, k, eligible, density=density, scope=scope)
    dtype = seg_scores[0].dtype
    per_net_scores = [[_np(_per_network(s, stacked, M)[m].reshape(-1) if stacked else s.reshape(-1), dtype)
                       for s in seg_scores] for m in range(M)]
    per_net_elig = None
    if eligible is not None:
        per_net_elig = [[_np(_per_network(e, stacked, M)[m].reshape(-1) if stacked else e.reshape(-1))
                         for e in seg_elig] for m in range(M)]
    out = ext.topk_masks(per_net_scores, group, ks, per_net_elig, _threads())
    return _masks_from_segments(out, scores, eligible, stacked, M)


def _topk_flat(scores, k, eligible):
    if k is None:
        raise ValueError("k is required for a flat score tensor")
    k = int(k)
    flat = scores.detach().reshape(-1)
    if eligible is not None:
        if eligible.shape != scores.shape or eligible.dtype != torch.bool:
            raise ValueError("eligible must be a bool tensor shaped like scores")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    ext = _native_for([flat])
    if ext is None or flat.dtype not in (torch.float32, torch.float64):
        return _topk_flat_reference(scores, k, eligible)
    el = None if eligible is None else [[_np(eligible.reshape(-1))]]
    n_el = flat.numel() if eligible is None else int(eligible.sum())
    if k > n_el:
        raise ValueError(f"cannot keep {k} parameters: only {n_el} are eligible")
    out = ext.topk_masks([[_np(flat)]], [0], [k], el, _threads())
    return torch.from_numpy(out[0][0]).reshape(scores.shape).to(scores.device)


def _topk_flat_reference(scores, k, eligible):
    flat = scores.detach().reshape(-1)
    if torch.isnan(flat).any():
        raise ValueError("scores contain NaN")
    el = torch.ones_like(flat, dtype=torch.bool) if eligible is None else eligible.reshape(-1).to(flat.device)
    n_el = int(el.sum())
    if k > n_el:
        raise ValueError(f"cannot keep {k} parameters: only {n_el} are eligible")
    order = torch.sort(flat, descending=True, stable=True).indices
    order = order[torch.sort((~el[order]).to(torch.uint8), stable=True).indices]  # eligible first, order kept
    keep = torch.zeros_like(el)
    keep[order[:k]] = True
    return keep.reshape(scores.shape)


def _topk_layout(scores, eligible, scope):
    if len(scores) == 0:
        raise ValueError("scores must hold at least one layer")
    stacked = scores[0][0].dim() == 3
    M = int(scores[0][0].shape[0]) if stacked else 1
    seg_scores, seg_elig, group, counts = [], [], [], []
    L = len(scores)
    if eligible is not None and len(eligible) != L:
        raise ValueError(f"eligible has {len(eligible)} layers, scores have {L}")
    for l, (sw, sb) in enumerate(scores):
        g = 0 if scope == "global" else l
        parts = [(sw, 0)] + ([(sb, 1)] if sb is not None else [])
        layer_count = 0
        for t, j in parts:
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"scores layer {l}: expected tensors")
            seg_scores.append(t)
            group.append(g)
            if eligible is not None:
                e = eligible[l][j]
                if e.shape != t.shape or e.dtype != torch.bool:
                    raise ValueError(f"eligible layer {l}: must be bool tensors shaped like the scores")
                seg_elig.append(e)
            layer_count += t.numel() // M
        if scope == "global":
            counts = [counts[0] + layer_count] if counts else [layer_count]
        else:
            counts.append(layer_count)
    return seg_scores, seg_elig, group, counts, stacked, M


def _resolve_k(k, density, counts, scope):
    if (k is None) == (density is None):
        raise ValueError("give exactly one of k and density")
    if density is not None:
        if not (0.0 <= float(density) <= 1.0):
            raise ValueError(f"density must lie in [0, 1], got {density}")
        return [kept_count(density, n) for n in counts]
    if scope == "global":
        if isinstance(k, (list, tuple)):
            raise ValueError("scope='global' takes one int k")
        ks = [int(k)]
    else:
        if not isinstance(k, (list, tuple)) or len(k) != len(counts):
            raise ValueError(f"scope='layer' takes one k per layer ({len(counts)} ints)")
        ks = [int(v) for v in k]
    for v, n in zip(ks, counts):
        if v < 0 or v > n:
            raise ValueError(f"k = {v} is outside [0, {n}]")
    return ks


def _masks_from_segments(out, scores, eligible, stacked, M):
    result = []
    s = 0
    for l, (sw, sb) in enumerate(scores):
        per = []
        for t in ([sw] + ([sb] if sb is not None else [])):
            arrs = [torch.from_numpy(out[m][s]) for m in range(M)]
            shape = t.shape
            per.append((torch.stack(arrs) if stacked else arrs[0]).reshape(shape).to(t.device))
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
        return _topk_flat_reference(scores, int(k), eligible)
    _check_scope(scope)
    seg_scores, seg_elig, group, counts, stacked, M = _topk_layout(scores, eligible, scope)
    ks = _resolve_k(k, density, counts, scope)
    n_groups = len(ks)
    seg_out = [[None] * len(seg_scores) for _ in range(M)]
    for m in range(M):
        for g in range(n_groups):
            idx = [s for s in range(len(seg_scores)) if group[s] == g]
            flat = torch.cat([(seg_scores[s][m] if stacked else seg_scores[s]).reshape(-1) for s in idx])
            el = None
            if eligible is not None:
                el = torch.cat([(seg_elig[s][m] if stacked else seg_elig[s]).reshape(-1) for s in idx])
            keep = _topk_flat_reference(flat, ks[g], el)
            off = 0
            for s in idx:
                n = seg_scores[s].numel() // M
                seg_out[m][s] = keep[off:off + n]
                off += n
    result = []
    s = 0
    for l, (sw, sb) in enumerate(scores):
        per = []
        for t in ([sw] + ([sb] if sb is not None else [])):
            parts = [seg_out[m][s] for m in range(M)]
            per.append((torch.stack(parts) if stacked else parts[0]).reshape(t.shape))
            s += 1
        if sb is None:
            per.append(None)
        result.append(per)
    return _fill_bias(result, scores, eligible)


# --------------------------------------------------------------------------------------------- CUDA launches
# Thin launchers of plantseek._C_cuda: tensors are checked here (device, dtype, contiguity) and handed over as
# device pointers with the current stream of their device.


def _cuda_ext():
    ext = native.cuda_module()
    if ext is None:
        raise RuntimeError("the CUDA kernels are not available (plantseek._C_cuda did not load or PLANTSEEK_NATIVE=0)")
    return ext


def _stream(device) -> int:
    return int(torch.cuda.current_stream(device).cuda_stream)


def _dtype_name(dtype: torch.dtype) -> str:
    if dtype == torch.float32:
        return "float32"
    if dtype == torch.float64:
        return "float64"
    raise TypeError(f"CUDA sparse kernels support float32 and float64, got {dtype}")


def _require_cuda(t: torch.Tensor, name: str, device, dtype=None) -> torch.Tensor:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    if dtype is not None and t.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {t.dtype}")
    return t.contiguous()


def _cuda_sparse_forward(x: torch.Tensor, vals: torch.Tensor, s) -> torch.Tensor:
    """y (M, B, out) = x W^T on the GPU for the CSR structure `s` (plantseek.nn.CsrStructure)."""
    ext = _cuda_ext()
    dev = x.device
    x = _require_cuda(x, "x", dev)
    vals = _require_cuda(vals, "vals", dev, x.dtype)
    M, B, n_in = x.shape
    y = torch.empty(M, B, s.n_out, dtype=x.dtype, device=dev)
    with torch.cuda.device(dev):
        ext.spmm(x.data_ptr(), s.indptr.data_ptr(), s.cols.data_ptr(), vals.data_ptr(), 0, y.data_ptr(), M, B,
                 s.n_out, n_in, _dtype_name(x.dtype), _stream(dev))
    return y


def _cuda_sparse_backward(gy: torch.Tensor, x: torch.Tensor, vals: torch.Tensor, s, need_x: bool, need_w: bool):
    """(grad_x or None, grad_vals or None) on the GPU: SpMM through the CSC structure, SDDMM at kept entries."""
    ext = _cuda_ext()
    dev = gy.device
    gy = _require_cuda(gy, "grad_y", dev)
    x = _require_cuda(x, "x", dev, gy.dtype)
    M, B, n_out = gy.shape
    n_in = x.shape[2]
    name = _dtype_name(gy.dtype)
    gx = gvals = None
    with torch.cuda.device(dev):
        stream = _stream(dev)
        if need_x:
            vals_csc = torch.empty_like(vals)
            if vals.numel():
                ext.gather(vals.data_ptr(), s.csc_perm.data_ptr(), vals_csc.data_ptr(), vals.numel(), name, stream)
            gx = torch.empty(M, B, n_in, dtype=gy.dtype, device=dev)
            ext.spmm(gy.data_ptr(), s.csc_indptr.data_ptr(), s.csc_rows.data_ptr(), vals_csc.data_ptr(), 0,
                     gx.data_ptr(), M, B, n_in, n_out, name, stream)
        if need_w:
            gvals = torch.empty_like(vals)
            ext.sddmm(gy.data_ptr(), x.data_ptr(), s.rows.data_ptr(), s.cols.data_ptr(), gvals.data_ptr(),
                      vals.numel(), B, n_out, n_in, name, stream)
    return gx, gvals


def _pointer_table(tensors, device) -> torch.Tensor:
    return torch.tensor([t.data_ptr() for t in tensors], dtype=torch.int64, device=device)


def cuda_overlap_counts(found: Sequence[Pairs], reference: Pairs):
    """`plantseek.masks.overlap_counts` for masks on a CUDA device: (inter (M, S), kept (M, S), ref_kept (S,)),
    int64 CPU tensors, segments weight 0, bias 0, ... One kernel launch for all masks and segments."""
    ext = _cuda_ext()
    dev = reference[0][0].device
    ref_segs = [t.reshape(-1).contiguous() for pair in reference for t in pair]
    segs = []
    for m, mask in enumerate(found):
        mine = [t.reshape(-1).contiguous() for pair in mask for t in pair]
        if len(mine) != len(ref_segs) or any(a.numel() != b.numel() for a, b in zip(mine, ref_segs)):
            raise ValueError(f"found mask {m} does not have the reference's structure")
        for t in mine:
            _require_cuda(t, f"found mask {m}", dev, torch.bool)
        segs.extend(mine)
    for t in ref_segs:
        _require_cuda(t, "reference mask", dev, torch.bool)
    M, S = len(found), len(ref_segs)
    sizes = [t.numel() for t in ref_segs]
    inter = torch.zeros(M, S, dtype=torch.int64, device=dev)
    kept = torch.zeros(M, S, dtype=torch.int64, device=dev)
    # empty segments may have a null pointer; the kernel never reads them
    with torch.cuda.device(dev):
        found_tab = _pointer_table(segs, dev)
        ref_tab = _pointer_table(ref_segs, dev)
        size_tab = torch.tensor(sizes, dtype=torch.int64, device=dev)
        ext.overlap_bytes(found_tab.data_ptr(), ref_tab.data_ptr(), size_tab.data_ptr(), max(sizes) if sizes else 0,
                          M, S, inter.data_ptr(), kept.data_ptr(), _stream(dev))
        ref_kept = torch.stack([t.sum() for t in ref_segs]) if S else torch.zeros(0, dtype=torch.int64, device=dev)
    return inter.cpu(), kept.cpu(), ref_kept.to(torch.int64).cpu()


def cuda_reachability(masks_list: Sequence[Pairs], widths: Sequence[int]):
    """Reachability counts (kept, effective, dead) for masks on a CUDA device; see
    `plantseek.metrics.reachability_counts`. One launch per layer and pass for all masks."""
    ext = _cuda_ext()
    dev = masks_list[0][0][0].device
    M, L = len(masks_list), len(widths) - 1
    wsegs = [[m[l][0].contiguous() for m in masks_list] for l in range(L)]
    bsegs = [[m[l][1].contiguous() for m in masks_list] for l in range(L)]
    for l in range(L):
        for t in wsegs[l] + bsegs[l]:
            _require_cuda(t, f"mask layer {l}", dev, torch.bool)
    kept = torch.zeros(M, 2 * L, dtype=torch.int64, device=dev)
    eff = torch.zeros(M, 2 * L, dtype=torch.int64, device=dev)
    dead = torch.zeros(M, max(L - 1, 0), dtype=torch.int64, device=dev)
    with torch.cuda.device(dev):
        stream = _stream(dev)
        wtab = [_pointer_table(wsegs[l], dev) for l in range(L)]
        btab = [_pointer_table(bsegs[l], dev) for l in range(L)]
        fwd = [torch.ones(M, widths[0], dtype=torch.uint8, device=dev)]
        for l in range(L):
            fwd.append(torch.empty(M, widths[l + 1], dtype=torch.uint8, device=dev))
            ext.reach_forward(wtab[l].data_ptr(), btab[l].data_ptr(), fwd[l].data_ptr(), fwd[l + 1].data_ptr(), M,
                              widths[l], widths[l + 1], kept.data_ptr(), L, l, stream)
        bout = torch.ones(M, widths[L], dtype=torch.uint8, device=dev)
        for l in range(L - 1, -1, -1):
            bin_ = torch.empty(M, widths[l], dtype=torch.uint8, device=dev)
            ext.reach_backward(wtab[l].data_ptr(), btab[l].data_ptr(), fwd[l].data_ptr(), bout.data_ptr(),
                               bin_.data_ptr(), M, widths[l], widths[l + 1], eff.data_ptr(),
                               dead.data_ptr() if l >= 1 else 0, L, l, stream)
            bout = bin_
    return kept.cpu(), eff.cpu(), dead.cpu()
