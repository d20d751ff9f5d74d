"""Input validation of the sparse-linear bindings: bad arguments raise, never crash (hypothesis fuzz)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantseek import native

ext = native.cpu_module()
pytestmark = pytest.mark.skipif(ext is None, reason="native core not built")


def _csr(rng, M, n_out, n_in, density):
    mask = rng.random((M * n_out, n_in)) < density
    rows, cols = np.nonzero(mask)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=M * n_out))]).astype(np.int64)
    return indptr, cols.astype(np.int64)


def test_forward_validation_messages():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 4, 5))
    indptr, cols = _csr(rng, 1, 3, 5, 0.5)
    vals = rng.normal(size=len(cols))
    y, xt = ext.sparse_linear_forward(x, indptr, cols, vals, None, 3)
    assert y.shape == (1, 4, 3) and xt.shape == (1, 5, 16)
    with pytest.raises(TypeError, match="x must have dtype"):
        ext.sparse_linear_forward(x.astype(np.int32), indptr, cols, vals, None, 3)
    with pytest.raises(TypeError, match="vals"):
        ext.sparse_linear_forward(x, indptr, cols, vals.astype(np.float32), None, 3)
    with pytest.raises(ValueError, match="x must have shape"):
        ext.sparse_linear_forward(x[0], indptr, cols, vals, None, 3)
    with pytest.raises(ValueError, match="C-contiguous"):
        ext.sparse_linear_forward(np.zeros((1, 8, 5))[:, ::2], indptr, cols, vals, None, 3)
    with pytest.raises(ValueError, match="indptr must have shape"):
        ext.sparse_linear_forward(x, indptr, cols, vals, None, 4)
    if len(cols):
        bad = cols.copy()
        bad[-1] = 5
        with pytest.raises(ValueError, match="out of range"):
            ext.sparse_linear_forward(x, indptr, bad, vals, None, 3)
    bad_ptr = indptr.copy()
    bad_ptr[1] = bad_ptr[2] + 1
    with pytest.raises(ValueError, match="indptr"):
        ext.sparse_linear_forward(x, bad_ptr, cols, vals, None, 3)
    with pytest.raises(ValueError, match="bias"):
        ext.sparse_linear_forward(x, indptr, cols, vals, np.zeros((1, 4)), 3)
    with pytest.raises(TypeError, match="numpy array"):
        ext.sparse_linear_forward(x.tolist(), indptr, cols, vals, None, 3)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), M=st.integers(1, 3), B=st.integers(0, 20), n_in=st.integers(0, 9),
       n_out=st.integers(0, 9), dtype=st.sampled_from([np.float32, np.float64]),
       corrupt=st.sampled_from(["none", "ptr_start", "ptr_end", "col", "perm", "xt_shape", "gy_dtype",
                                "noncontig", "csc_rows"]))
def test_backward_fuzz_raises_or_works(seed, M, B, n_in, n_out, dtype, corrupt):
    rng = np.random.default_rng(seed)
    indptr, cols = _csr(rng, M, n_out, n_in, 0.4)
    nnz = len(cols)
    vals = rng.normal(size=nnz).astype(dtype)
    x = rng.normal(size=(M, B, n_in)).astype(dtype)
    _, xt = ext.sparse_linear_forward(x, indptr, cols, vals, None, n_out)
    # CSC structure
    rows = np.repeat(np.arange(M * n_out), np.diff(indptr))
    m = rows // max(n_out, 1)
    j = rows - m * n_out
    key = (m * n_in + cols) * max(n_out, 1) + j
    perm = np.argsort(key, kind="stable").astype(np.int64)
    csc_rows = j[perm].astype(np.int64)
    csc_indptr = np.concatenate([[0], np.cumsum(np.bincount(m * n_in + cols, minlength=M * n_in))]).astype(np.int64)
    gy = rng.normal(size=(M, B, n_out)).astype(dtype)
    expect_error = False
    if corrupt == "ptr_start":
        indptr = indptr.copy()
        indptr[0] = 1
        expect_error = True
    elif corrupt == "ptr_end" and nnz:
        indptr = indptr.copy()
        indptr[-1] = nnz + 1
        expect_error = True
    elif corrupt == "col" and nnz:
        cols = cols.copy()
        cols[0] = -1
        expect_error = True
    elif corrupt == "perm" and nnz:
        perm = perm.copy()
        perm[0] = nnz
        expect_error = True
    elif corrupt == "csc_rows" and nnz:
        csc_rows = csc_rows.copy()
        csc_rows[0] = n_out
        expect_error = True
    elif corrupt == "xt_shape":
        xt = np.zeros((M, n_in + 1, xt.shape[2]), dtype)
        expect_error = True
    elif corrupt == "gy_dtype":
        gy = gy.astype(np.float64 if dtype == np.float32 else np.float32)
        expect_error = True
    elif corrupt == "noncontig" and gy.size > 1 and B > 1:
        gy = np.ascontiguousarray(np.concatenate([gy, gy], axis=1))[:, ::2]
        expect_error = True
    args = (gy, xt, indptr, cols, vals, csc_indptr, csc_rows, perm, n_in)
    if expect_error:
        with pytest.raises((ValueError, TypeError)):
            ext.sparse_linear_backward(*args)
        return
    gx, gv = ext.sparse_linear_backward(*args)
    W = np.zeros((M * n_out, n_in), dtype=np.float64)
    W[rows, cols] = vals
    W = W.reshape(M, n_out, n_in)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    np.testing.assert_allclose(gx, np.einsum("mbo,moi->mbi", gy.astype(np.float64), W), rtol=tol, atol=tol)
    want_gv = np.einsum("mbo,mbi->moi", gy.astype(np.float64), x.astype(np.float64)).reshape(M * n_out, n_in)[rows, cols]
    np.testing.assert_allclose(gv, want_gv, rtol=tol, atol=tol)
