"""Planting search: for each ticket neuron, the best-matching unused host neuron (dispatcher and NumPy reference).

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

Backends: the native kernel of ``plantseek._C`` (arrays on the CPU; tensors on any device are copied there)
and `plant_search_reference` (NumPy; what ``PLANTSEEK_NATIVE=0`` runs). There is no CUDA kernel. Both check
their arguments alike first (`_check_problem`, ArgumentError naming the argument).

C++: csrc/planting_search.{h,cpp}, csrc/bindings/planting_search.cpp. Tests: tests/kernels/test_planting_search.py.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import native
from .checks import ArgumentError, fail

# dispatcher -> its reference (tests/kernels/test_layout.py checks every concept module has such pairs)
KERNELS = {"plant_search": "plant_search_reference"}

Result = tuple[np.ndarray, np.ndarray, np.ndarray]


def _as_numpy(a, dtype) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(a, dtype=dtype))


def plant_search(host_weight, host_bias, indptr, cols, vals, bias_vals, has_bias, used) -> Result:
    """Match ticket neurons to host neurons; returns (chosen int64, scale float64, sign_matched uint8) and
    updates `used` (uint8 numpy array, one entry per host neuron) in place. Native when available.

    The ticket neurons' inputs are CSR rows: ticket neuron t reads host inputs ``cols[indptr[t]:indptr[t+1]]``
    with target values ``vals[...]``, and its bias ``bias_vals[t]`` when ``has_bias[t]``."""
    args = _check_problem(host_weight, host_bias, indptr, cols, vals, bias_vals, has_bias, used)
    ext = native.cpu_module()
    if ext is not None:
        chosen, scale, matched = ext.plant_search(*args)
        return np.asarray(chosen), np.asarray(scale), np.asarray(matched)
    return _plant_search_numpy(*args)


def _check_problem(host_weight, host_bias, indptr, cols, vals, bias_vals, has_bias, used) -> tuple:
    """The arguments as contiguous arrays of the kernel's dtypes, checked: shapes that agree, CSR rows within
    the host's inputs, `used` a writeable uint8 array with enough unused host neurons."""
    if not (isinstance(used, np.ndarray) and used.dtype == np.uint8 and used.flags.c_contiguous
            and used.flags.writeable):
        raise fail("used", "be a writeable C-contiguous uint8 numpy array (it is updated in place)", used)
    hw, hb = _as_numpy(host_weight, np.float64), _as_numpy(host_bias, np.float64)
    ip, cl = _as_numpy(indptr, np.int64), _as_numpy(cols, np.int64)
    vl, bv = _as_numpy(vals, np.float64), _as_numpy(bias_vals, np.float64)
    hbias = _as_numpy(has_bias, np.uint8)
    if hw.ndim != 2:
        raise fail("host_weight", "have shape (n_out, n_in)", hw)
    n_out, n_in = hw.shape
    if ip.ndim != 1 or len(ip) < 1:
        raise fail("indptr", "have shape (T + 1,): one row pointer per ticket neuron and the end", ip)
    T = len(ip) - 1
    for name, a, n in (("host_bias", hb, n_out), ("cols", cl, None), ("bias_vals", bv, T), ("has_bias", hbias, T),
                       ("used", used, n_out)):
        if a.ndim != 1 or (n is not None and len(a) != n):
            raise fail(name, f"have shape ({'*' if n is None else n},)", a)
    if vl.shape != cl.shape:
        raise fail("vals", f"have shape ({len(cl)},) like cols", vl)
    if ip[0] != 0 or ip[-1] != len(cl) or bool((np.diff(ip) < 0).any()):
        raise ArgumentError(f"indptr must start at 0, never decrease and end at len(cols) = {len(cl)}, got "
                            f"{ip.tolist() if len(ip) <= 10 else ip}")
    bad = np.flatnonzero((cl < 0) | (cl >= n_in))
    if len(bad):
        raise ArgumentError(f"cols[{bad[0]}] = {cl[bad[0]]} is out of range [0, {n_in}) (the host's inputs)")
    free = int((used == 0).sum())
    if T > free:
        raise ArgumentError(f"{T} ticket neurons but only {free} unused host neurons (used has {n_out - free} set)")
    return hw, hb, ip, cl, vl, bv, hbias, used


def plant_search_reference(host_weight, host_bias, indptr, cols, vals, bias_vals, has_bias, used) -> Result:
    """NumPy reference of `plant_search`, vectorised over candidate host neurons."""
    return _plant_search_numpy(*_check_problem(host_weight, host_bias, indptr, cols, vals, bias_vals, has_bias, used))


def _plant_search_numpy(host_weight, host_bias, indptr, cols, vals, bias_vals, has_bias, used) -> Result:
    T = len(indptr) - 1
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
