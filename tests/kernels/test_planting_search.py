"""plantseek.kernels.planting_search: the dispatcher on every backend against its NumPy reference (bit for bit),
its argument checks, and the native binding's own validation."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plantseek import native
from plantseek.kernels import planting_search

from kernel_helpers import FIXTURE_OK
from validation_helpers import names

ext = native.cpu_module()
needs_native = pytest.mark.skipif(ext is None, reason="native core not built")


def _problem(seed, n_out, n_in, T, max_deg, zero_frac=0.0):
    rng = np.random.default_rng(seed)
    hw = rng.normal(size=(n_out, n_in))
    hb = rng.normal(size=n_out)
    if zero_frac:
        hw[rng.random(hw.shape) < zero_frac] = 0.0
    deg = rng.integers(0, max_deg + 1, size=T)
    deg = np.minimum(deg, n_in)
    indptr = np.concatenate([[0], np.cumsum(deg)]).astype(np.int64)
    cols = np.concatenate([rng.choice(n_in, size=int(k), replace=False) for k in deg] + [np.zeros(0)]).astype(np.int64)
    vals = rng.normal(size=len(cols))
    bias_vals = rng.normal(size=T)
    has_bias = (rng.random(T) < 0.5).astype(np.uint8)
    used = (rng.random(n_out) < 0.2).astype(np.uint8)
    used[: T + 1] = 0  # enough free neurons
    return hw, hb, indptr, cols, vals, bias_vals, has_bias, used


def _on(backend, hw, hb):
    """The host's parameters as the backend's tensors (the search reads them on the CPU)."""
    return (hw, hb) if backend.name == "reference" else (torch.from_numpy(hw).to(backend.device),
                                                         torch.from_numpy(hb).to(backend.device))


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(seed=st.integers(0, 10_000), n_out=st.integers(1, 60), n_in=st.integers(1, 30),
       max_deg=st.integers(0, 12), zero_frac=st.sampled_from([0.0, 0.3]))
def test_native_matches_reference(backend, seed, n_out, n_in, max_deg, zero_frac):
    T = int(np.random.default_rng(seed).integers(0, max(1, n_out // 2) + 1))
    hw, hb, indptr, cols, vals, bv, hbias, used = _problem(seed, n_out, n_in, T, max_deg, zero_frac)
    u_native, u_ref = used.copy(), used.copy()
    got = planting_search.plant_search(*_on(backend, hw, hb), indptr, cols, vals, bv, hbias, u_native)
    want = planting_search.plant_search_reference(hw, hb, indptr, cols, vals, bv, hbias, u_ref)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), w)  # bit-for-bit, including the scales
    np.testing.assert_array_equal(u_native, u_ref)


def test_large_problem_is_threaded_and_identical(backend):
    hw, hb, indptr, cols, vals, bv, hbias, used = _problem(3, 2000, 300, 40, 40)
    u1, u2 = used.copy(), used.copy()
    if backend.name == "cpu":  # the binding with two threads
        got = ext.plant_search(hw, hb, indptr, cols, vals, bv, hbias, u1, n_threads=2)
    else:
        got = planting_search.plant_search(*_on(backend, hw, hb), indptr, cols, vals, bv, hbias, u1)
    want = planting_search.plant_search_reference(hw, hb, indptr, cols, vals, bv, hbias, u2)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(np.asarray(g), w)


def test_arguments_are_checked(backend):
    """The dispatcher and the reference name the bad argument alike on every backend."""
    hw, hb, indptr, cols, vals, bv, hbias, used = _problem(0, 10, 5, 3, 3)
    hw, hb = _on(backend, hw, hb)
    bad_cols = cols.copy()
    bad_cols[0] = 99
    cases = [
        ("host_weight", (hw[0], hb, indptr, cols, vals, bv, hbias, used)),
        ("host_bias", (hw, hb[:-1], indptr, cols, vals, bv, hbias, used)),
        ("indptr", (hw, hb, indptr[::-1].copy(), cols, vals, bv, hbias, used)),
        ("cols", (hw, hb, indptr, bad_cols, vals, bv, hbias, used)),
        ("vals", (hw, hb, indptr, cols, vals[:-1], bv, hbias, used)),
        ("bias_vals", (hw, hb, indptr, cols, vals, bv[:-1], hbias, used)),
        ("has_bias", (hw, hb, indptr, cols, vals, bv, hbias[:-1], used)),
        ("used", (hw, hb, indptr, cols, vals, bv, hbias, used.astype(np.int64))),
        ("used", (hw, hb, indptr, cols, vals, bv, hbias, used[:-1].copy())),
    ]
    for fn in (planting_search.plant_search, planting_search.plant_search_reference):
        for name, args in cases:
            with names(name):
                fn(*args)
        with pytest.raises(ValueError, match="unused host neurons"):
            fn(hw, hb, indptr, cols, vals, bv, hbias, np.ones(10, np.uint8))


@needs_native
def test_validation_errors():
    hw, hb, indptr, cols, vals, bv, hbias, used = _problem(0, 10, 5, 3, 3)
    with pytest.raises(TypeError, match="host_weight"):
        ext.plant_search(hw.astype(np.float32), hb, indptr, cols, vals, bv, hbias, used)
    with pytest.raises(ValueError, match="C-contiguous"):
        ext.plant_search(np.asfortranarray(hw), hb, indptr, cols, vals, bv, hbias, used)
    with pytest.raises(ValueError, match="host_bias"):
        ext.plant_search(hw, hb[:-1], indptr, cols, vals, bv, hbias, used)
    bad = cols.copy()
    if len(bad):
        bad[0] = 99
        with pytest.raises(ValueError, match="cols"):
            ext.plant_search(hw, hb, indptr, bad, vals, bv, hbias, used)
    with pytest.raises(ValueError, match="unused host neurons"):
        ext.plant_search(hw, hb, indptr, cols, vals, bv, hbias, np.ones(10, np.uint8))
    with pytest.raises(TypeError, match="numpy array"):
        ext.plant_search([1.0], hb, indptr, cols, vals, bv, hbias, used)
