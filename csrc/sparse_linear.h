// Sparse masked linear layer on CSR weights, for M independent networks of one shape at once.
//
// Layout: x is (M, B, n_in) row-major, the weights of network m are rows m*n_out .. m*n_out+n_out-1 of one
// CSR matrix (indptr has M*n_out + 1 entries, cols index the n_in inputs, vals hold the kept weights).
// Internally the batch dimension is moved last ("transposed", padded to a multiple of 16 with zeros) so
// that each kept weight multiplies one contiguous vector of batch values.
#pragma once

#include <cstdint>

namespace plantseek {

// Padded batch length used by the transposed buffers.
inline int64_t padded_batch(int64_t B) { return (B + 15) / 16 * 16; }

struct CsrView {
    const int64_t* indptr;  // (M * n_rows + 1,)
    const int64_t* cols;    // (nnz,)
    int64_t n_rows;         // rows per network
    int64_t n_cols;         // columns per network
};

// y = x W^T + bias (bias may be null). Also writes xt (M, n_in, Bp), the padded transpose of x, which
// the backward pass needs.
template <class T>
void sparse_linear_forward(const T* x, int64_t M, int64_t B, const CsrView& csr, const T* vals,
                           const T* bias, T* y, T* xt, int n_threads);

// Backward: gx = gy W (through the CSC structure csc, whose entry e holds CSR entry csc_perm[e]) and
// gvals[e] = sum_b gy[b, row(e)] x[b, col(e)] for every kept weight e (CSR order). gx or gvals may be null.
template <class T>
void sparse_linear_backward(const T* gy, const T* xt, int64_t M, int64_t B, const CsrView& csr,
                            const T* vals, const CsrView& csc, const int64_t* csc_perm, T* gx, T* gvals,
                            int n_threads);

}  // namespace plantseek
