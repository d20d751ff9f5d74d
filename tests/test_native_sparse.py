"""The sparse-layer bindings: SparsePattern validation and the feature-major kernels against NumPy
(hypothesis fuzz). Bad arguments raise, never crash."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantseek import native

ext = native.cpu_module()
pytestmark = pytest.mark.skipif(ext is None, reason="native core not built")


def _structure(rng, M, n_out, n_in, density):
    """CSR (indptr, cols) of random masks and their CSC walk (csc_indptr, csc_rows, csc_perm), plus rows."""
    mask = rng.random((M * n_out, n_in)) < density
    rows, cols = np.nonzero(mask)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=M * n_out))]).astype(np.int64)
    m = rows // max(n_out, 1)
    j = rows - m * n_out
    key = (m * n_in + cols) * max(n_out, 1) + j
    perm = np.argsort(key, kind="stable").astype(np.int64)
    csc_rows = j[perm].astype(np.int64)
    csc_indptr = np.concatenate([[0], np.cumsum(np.bincount(m * n_in + cols, minlength=M * n_in))]).astype(np.int64)
    return dict(indptr=indptr, cols=cols.astype(np.int64), csc_indptr=csc_indptr, csc_rows=csc_rows,
                csc_perm=perm), rows


def _pattern(s, M, n_out, n_in):
    return ext.SparsePattern(s["indptr"], s["cols"], s["csc_indptr"], s["csc_rows"], s["csc_perm"], M, n_out, n_in)


def _fm(x, Bp):
    """(M, B, n) -> feature-major (M, n, Bp), padding zero."""
    M, B, n = x.shape
    out = np.zeros((M, n, Bp), dtype=x.dtype)
    out[:, :, :B] = x.transpose(0, 2, 1)
    return out


def test_pattern_validation_messages():
    rng = np.random.default_rng(0)
    s, _ = _structure(rng, 2, 3, 4, 0.5)
    pat = _pattern(s, 2, 3, 4)
    assert (pat.M, pat.n_out, pat.n_in, pat.nnz) == (2, 3, 4, len(s["cols"]))
    bad = dict(s, cols=s["cols"].copy())
    bad["cols"][0] = 4
    with pytest.raises(ValueError, match="out of range"):
        _pattern(bad, 2, 3, 4)
    with pytest.raises(ValueError, match="indptr must have shape"):
        _pattern(s, 2, 4, 4)
    bad = dict(s, csc_perm=s["csc_perm"][::-1].copy())
    with pytest.raises(ValueError, match="csc_perm"):
        _pattern(bad, 2, 3, 4)
    with pytest.raises(TypeError, match="int64"):
        _pattern(dict(s, cols=s["cols"].astype(np.int32)), 2, 3, 4)
    with pytest.raises(TypeError, match="numpy array"):
        _pattern(dict(s, cols=s["cols"].tolist()), 2, 3, 4)
    with pytest.raises(ValueError, match=">= 0"):
        _pattern(s, -1, 3, 4)


def test_kernel_argument_messages():
    rng = np.random.default_rng(1)
    s, _ = _structure(rng, 1, 3, 5, 0.5)
    pat = _pattern(s, 1, 3, 5)
    nnz = pat.nnz
    xt = _fm(rng.normal(size=(1, 4, 5)), 16)
    vals = rng.normal(size=nnz)
    yt = ext.sparse_fm_forward(xt, pat, vals, None, False, 4)
    assert yt.shape == (1, 3, 16) and np.all(yt[:, :, 4:] == 0)
    with pytest.raises(TypeError, match="xt must have dtype"):
        ext.sparse_fm_forward(xt.astype(np.int32), pat, vals, None, False, 4)
    with pytest.raises(TypeError, match="vals"):
        ext.sparse_fm_forward(xt, pat, vals.astype(np.float32), None, False, 4)
    with pytest.raises(ValueError, match="padded"):
        ext.sparse_fm_forward(xt, pat, vals, None, False, 17)
    with pytest.raises(ValueError, match="xt must have shape"):
        ext.sparse_fm_forward(xt[:, :4].copy(), pat, vals, None, False, 4)
    with pytest.raises(ValueError, match="C-contiguous"):
        ext.sparse_fm_forward(np.zeros((1, 5, 32))[:, :, ::2], pat, vals, None, False, 4)
    with pytest.raises(ValueError, match="bias"):
        ext.sparse_fm_forward(xt, pat, vals, np.zeros((1, 4)), False, 4)
    with pytest.raises(ValueError, match="batch must be >= 0"):
        ext.sparse_fm_forward(xt, pat, vals, None, False, -1)
    with pytest.raises(TypeError):
        ext.sparse_fm_forward(xt, "not a pattern", vals, None, False, 4)
    gy = np.ones_like(yt)
    with pytest.raises(ValueError, match="yt must have shape"):
        ext.sparse_fm_backward(gy, xt, yt[:, :2].copy(), pat, vals, 4)
    with pytest.raises(TypeError, match="grad_yt must have dtype"):
        ext.sparse_fm_backward(gy.astype(np.float16), xt, None, pat, vals, 4)
    with pytest.raises(ValueError, match="xt must have shape"):
        ext.sparse_fm_backward(gy, xt[:, :, :8].copy(), None, pat, vals, 4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), M=st.integers(0, 3), n_in=st.integers(0, 9), n_out=st.integers(0, 9),
       corrupt=st.sampled_from(["ptr_start", "ptr_end", "ptr_order", "col", "perm_range", "perm_dup", "perm_row",
                                "csc_rows", "csc_ptr"]))
def test_pattern_fuzz_rejects_corruption(seed, M, n_in, n_out, corrupt):
    rng = np.random.default_rng(seed)
    s, _ = _structure(rng, M, n_out, n_in, 0.5)
    s = {k: v.copy() for k, v in s.items()}
    nnz = len(s["cols"])
    if corrupt == "ptr_start":
        s["indptr"][0] = 1
    elif corrupt == "ptr_end":
        s["indptr"][-1] = nnz + 1
    elif corrupt == "ptr_order" and len(s["indptr"]) > 2 and nnz:
        k = int(np.argmax(s["indptr"] > 0))
        s["indptr"][k - 1] = s["indptr"][k] + 1
    elif corrupt == "col" and nnz:
        s["cols"][0] = -1
    elif corrupt == "perm_range" and nnz:
        s["csc_perm"][0] = nnz
    elif corrupt == "perm_dup" and nnz > 1:
        s["csc_perm"][1] = s["csc_perm"][0]
    elif corrupt == "perm_row" and nnz > 1 and not np.array_equal(np.roll(s["csc_perm"], 1), s["csc_perm"]):
        # a permutation, but entries no longer map to the CSR entry of the same (network, row, column)
        rolled = np.roll(s["csc_perm"], 1)
        rows_a = np.searchsorted(s["indptr"], s["csc_perm"], side="right")
        rows_b = np.searchsorted(s["indptr"], rolled, side="right")
        if np.array_equal(rows_a, rows_b) and np.array_equal(s["cols"][s["csc_perm"]], s["cols"][rolled]):
            return  # rolling happened to keep every mapping valid
        s["csc_perm"] = rolled
    elif corrupt == "csc_rows" and nnz:
        s["csc_rows"][0] = n_out
    elif corrupt == "csc_ptr":
        s["csc_indptr"][-1] = nnz + 1
    else:
        return  # this corruption needs entries the draw does not have
    with pytest.raises(ValueError):
        _pattern(s, M, n_out, n_in)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), M=st.integers(1, 3), B=st.integers(0, 40),
       n_in=st.sampled_from([0, 1, 5, 9, 17, 40]),  # rows of 16+ kept weights take the grouped reductions
       n_out=st.integers(0, 9), density=st.sampled_from([0.0, 0.3, 1.0]),
       dtype=st.sampled_from([np.float32, np.float64]), relu=st.booleans(), with_bias=st.booleans(),
       need=st.tuples(st.booleans(), st.booleans(), st.booleans()))
def test_kernels_match_numpy(seed, M, B, n_in, n_out, density, dtype, relu, with_bias, need):
    rng = np.random.default_rng(seed)
    s, rows = _structure(rng, M, n_out, n_in, density)
    pat = _pattern(s, M, n_out, n_in)
    cols = s["cols"]
    Bp = ext.padded_batch(B)
    x = rng.normal(size=(M, B, n_in)).astype(dtype)
    vals = rng.normal(size=len(cols)).astype(dtype)
    bias = rng.normal(size=(M, n_out)).astype(dtype) if with_bias else None
    W = np.zeros((M * n_out, n_in))
    W[rows, cols] = vals
    W = W.reshape(M, n_out, n_in)
    pre = np.einsum("mbi,moi->mbo", x.astype(np.float64), W) + (0 if bias is None else bias[:, None, :])
    want_y = np.maximum(pre, 0) if relu else pre
    tol = 1e-4 if dtype == np.float32 else 1e-10
    xt = _fm(x, Bp)
    yt = ext.sparse_fm_forward(xt, pat, vals, bias, relu, B)
    assert yt.shape == (M, n_out, Bp) and yt.dtype == dtype
    np.testing.assert_allclose(yt[:, :, :B].transpose(0, 2, 1), want_y, rtol=tol, atol=tol)
    assert np.all(yt[:, :, B:] == 0)
    gy = rng.normal(size=(M, B, n_out)).astype(dtype)
    gyt = _fm(gy, Bp)
    gyt[:, :, B:] = 7.0  # the padding of the incoming gradient must not count
    need_x, need_w, need_b = need
    gx, gv, gb = ext.sparse_fm_backward(gyt, xt, yt if relu else None, pat, vals, B, need_x, need_w, need_b)
    g = gy.astype(np.float64) * (pre > 0 if relu else 1.0)
    if need_x:
        assert gx.shape == (M, n_in, Bp) and np.all(gx[:, :, B:] == 0)
        np.testing.assert_allclose(gx[:, :, :B].transpose(0, 2, 1), np.einsum("mbo,moi->mbi", g, W), rtol=tol, atol=tol)
    else:
        assert gx is None
    if need_w:
        want_gv = np.einsum("mbo,mbi->moi", g, x.astype(np.float64)).reshape(M * n_out, n_in)[rows, cols]
        np.testing.assert_allclose(gv, want_gv, rtol=tol, atol=tol)
    else:
        assert gv is None
    if need_b:
        np.testing.assert_allclose(gb, g.sum(axis=1), rtol=tol, atol=tol)
    else:
        assert gb is None


def test_relu_keeps_nan_like_torch():
    rng = np.random.default_rng(3)
    s, _ = _structure(rng, 1, 2, 2, 1.0)
    pat = _pattern(s, 1, 2, 2)
    xt = _fm(np.array([[[np.nan, 1.0]]]), 16)
    yt = ext.sparse_fm_forward(xt, pat, np.ones(pat.nnz), None, True, 1)
    assert np.isnan(yt[0, :, 0]).all()


def test_threads_give_the_same_result():
    rng = np.random.default_rng(4)
    M, B, n = 8, 64, 128  # over the kernels' parallel-work threshold: networks run in parallel
    s, _ = _structure(rng, M, n, n, 0.3)
    pat = _pattern(s, M, n, n)
    xt = _fm(rng.normal(size=(M, B, n)), ext.padded_batch(B))
    vals = rng.normal(size=pat.nnz)
    one = ext.sparse_fm_forward(xt, pat, vals, None, True, B, 1)
    two = ext.sparse_fm_forward(xt, pat, vals, None, True, B, 2)
    np.testing.assert_array_equal(one, two)
    g = rng.normal(size=one.shape)
    for a, b in zip(ext.sparse_fm_backward(g, xt, one, pat, vals, B, True, True, True, 1),
                    ext.sparse_fm_backward(g, xt, one, pat, vals, B, True, True, True, 2)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
