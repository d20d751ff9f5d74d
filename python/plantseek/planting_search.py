"""Planting search: for each ticket neuron, the best-matching unused host neuron (native kernel + reference).

Both implementations follow one exact recipe so that they choose the same neurons:
for ticket neuron t (in order) the target vector v is (bias_vals[t] if has_bias[t]) followed by
vals[indptr[t]:indptr[t+1]]; for an unused host neuron k, u is (host_bias[k] if has_bias[t]) followed by
host_weight[k, cols[indptr[t]:indptr[t+1]]]. Sums run in that order.
- Sign match: every u_i has the (nonzero) sign of v_i. Among matching k: lam = <u,v>/<v,v>,
  dist = sum_i |u_i - lam v_i|; the smallest dist wins, ties to the lowest k. Exception: when more than one
  matching k fits exactly (dist <= 1e-12 sum_i |u_i|, always so for a neuron with a single input), the one
  with the median lam wins (sorted by (lam, k), index (n - 1) // 2): otherwise the lowest index would pick a
  random scale and scales would drift apart through identity chains (measured: a deep helix's output weights
  came out 80x larger than any host weight).
- No k matches (typical for neurons with many inputs): over all unused k, lam = median(|u|) / median(|v|)
  (the median of an even count is the mean of the two middle values, (a + b) / 2), so the planted
  magnitudes look like the host's; dist = sum_i ||u_i| - lam |v_i||; same rule.
- lam that is not finite or not > 0 becomes 1.0. An empty v takes the lowest unused k with lam = 1.
The chosen k is marked used (in place) before the next ticket neuron is matched.
"""
from __future__ import annotations

import numpy as np
import torch

from . import native


def _as_numpy(a, dtype) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def plant_search(host_weight, host_bias, indptr, cols, vals, bias_vals, has_bias, used) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Match ticket neurons to host neurons; returns (chosen int64, scale float64, sign_matched uint8) and
    updates `used` (uint8 numpy array, one entry per host neuron) in place. Native when available."""
    hw = np.ascontiguousarray(_as_numpy(host_weight, np.float64))
    hb = np.ascontiguousarray(_as_numpy(host_bias, np.float64))
    ip = np.ascontiguousarray(_as_numpy(indptr, np.int64))
    cl = np.ascontiguousarray(_as_numpy(cols, np.int64))
    vl = np.ascontiguousarray(_as_numpy(vals, np.float64))
    bv = np.ascontiguousarray(_as_numpy(bias_vals, np.float64))
    hbias = np.ascontiguousarray(_as_numpy(has_bias, np.uint8))
    if not (isinstance(used, np.ndarray) and used.dtype == np.uint8 and used.flags.c_contiguous):
        raise ValueError("used must be a C-contiguous uint8 numpy array (it is updated in place)")
    ext = native.cpu_module()
    if ext is not None:
        chosen, scale, matched = ext.plant_search(hw, hb, ip, cl, vl, bv, hbias, used)
        return np.asarray(chosen), np.asarray(scale), np.asarray(matched)
    return plant_search_reference(hw, hb, ip, cl, vl, bv, hbias, used)


def plant_search_reference(host_weight, host_bias, indptr, cols, vals, bias_vals, has_bias, used) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NumPy reference of `plant_search`, vectorised over candidate host neurons."""
    T = len(indptr) - 1
    if T > int((used == 0).sum()):
        raise ValueError(f"{T} ticket neurons but only {int((used == 0).sum())} unused host neurons")
    chosen = np.zeros(T, dtype=np.int64)
    scale = np.ones(T, dtype=np.float64)
    matched = np.zeros(T, dtype=np.uint8)
    for t in range(T):
        free = np.flatnonzero(used == 0)
        c = cols[indptr[t]:indptr[t + 1]]
        parts_v = ([bias_vals[t:t + 1]] if has_bias[t] else []) + [vals[indptr[t]:indptr[t + 1]]]
        v = np.concatenate(parts_v)
        if v.size == 0:
            k = int(free[0])
            chosen[t], scale[t] = k, 1.0
            used[k] = 1
            continue
        parts_u = ([host_bias[free][:, None]] if has_bias[t] else []) + [host_weight[free][:, c]]
        u = np.concatenate(parts_u, axis=1)  # (F, s)
        vv = _seq_sum(v * v)
        ok = np.all(np.sign(u) == np.sign(v)[None, :], axis=1)
        if ok.any():
            uu, vvec, cand = u[ok], v, free[ok]
            lam = _seq_sum(uu * vvec[None, :]) / vv
            dist = _seq_sum(np.abs(uu - lam[:, None] * vvec[None, :]))
            matched[t] = 1
            exact = dist <= 1e-12 * _seq_sum(np.abs(uu))
            if int(exact.sum()) > 1:
                order = np.lexsort((cand[exact], lam[exact]))  # by lam, then k
                mid = order[(len(order) - 1) // 2]
                k, lam_k = int(cand[exact][mid]), float(lam[exact][mid])
                chosen[t], scale[t] = k, (lam_k if np.isfinite(lam_k) and lam_k > 0 else 1.0)
                used[k] = 1
                continue
        else:
            uu, vvec, cand = np.abs(u), np.abs(v), free
            lam = np.median(uu, axis=1) / np.median(vvec)
            dist = _seq_sum(np.abs(uu - lam[:, None] * vvec[None, :]))
        j = int(np.argmin(dist))  # argmin returns the first minimum: lowest k among ties
        k = int(cand[j])
        lam_k = float(lam[j])
        if not np.isfinite(lam_k) or lam_k <= 0:
            lam_k = 1.0
        chosen[t], scale[t] = k, lam_k
        used[k] = 1
    return chosen, scale, matched


def _seq_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis strictly left to right (so the reference rounds exactly like the C++ loop)."""
    if a.ndim == 1:
        total = np.float64(0.0)
        for x in a:
            total = total + x
        return total
    total = np.zeros(a.shape[:-1], dtype=np.float64)
    for i in range(a.shape[-1]):
        total = total + a[..., i]
    return total
