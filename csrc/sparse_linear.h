// Sparse masked linear layer on CSR weights, for M independent networks of one shape at once.
//
// Layout ("feature-major"): activations are (M, n, Bp): network m, feature i, then the batch, padded to
// Bp = a multiple of 16 (`padded_batch`). Each kept weight then multiplies one contiguous vector of batch
// values, and a layer's output is already the next layer's input: a chain of sparse layers needs no
// transposes. Only the first B batch lanes are meaningful; the forward pass computes the padding lanes
// too (they never mix with the others) and the backward pass treats the gradient's padding as zero.
//
// Weights: network m's rows are m*n_out .. m*n_out+n_out-1 of one CSR matrix (indptr has M*n_out + 1
// entries, cols index the n_in inputs, vals hold the kept weights in CSR order). The backward pass also
// walks the same entries by input (the CSC structure: csc_perm[e'] is the CSR entry that CSC entry e'
// holds). Callers validate the structure once (the binding's SparsePattern) and reuse it every step.
#pragma once

#include <cstdint>

namespace plantseek {

// Padded batch length of the feature-major buffers.
inline int64_t padded_batch(int64_t B) { return (B + 15) / 16 * 16; }

struct CsrView {
    const int64_t* indptr;  // (M * n_rows + 1,)
    const int64_t* cols;    // (nnz,)
    int64_t n_rows;         // rows per network
    int64_t n_cols;         // columns per network
};

// yt (M, n_out, Bp) = W xt (+ bias broadcast over the batch), then ReLU when `relu` (NaN stays NaN, as
// torch.relu); the padding lanes B..Bp-1 of yt are set to zero. xt is (M, n_in, Bp); bias is (M, n_out)
// or null.
template <class T>
void sparse_fm_forward(const T* xt, int64_t M, int64_t B, int64_t Bp, const CsrView& csr, const T* vals,
                       const T* bias, bool relu, T* yt, int n_threads);

// Backward of `sparse_fm_forward` for the gradient gyt (M, n_out, Bp) of its output, of which only the first
// B lanes count. With `yt` (the forward output, given when the forward applied ReLU) the gradient is first
// masked where yt <= 0 (as torch's threshold_backward). Writes any of: gxt (M, n_in, Bp) = W^T g (padding
// lanes zero), gvals[e] = <g[row(e)], xt[col(e)]> over the first B lanes, gbias (M, n_out) = sum of g over
// the batch. Null outputs are skipped.
template <class T>
void sparse_fm_backward(const T* gyt, const T* xt, const T* yt, int64_t M, int64_t B, int64_t Bp,
                        const CsrView& csr, const T* vals, const CsrView& csc, const int64_t* csc_perm, T* gxt,
                        T* gvals, T* gbias, int n_threads);

// The per-network pieces of the two passes above, for callers that walk the networks themselves (the
// network-major training step of sparse_stack.h). Pointers with an _m suffix point at network m's slice;
// `threads` run inside the network.
template <class T>
void forward_network(const T* xt_m, int64_t m, int64_t B, int64_t Bp, const CsrView& csr, const T* vals,
                     const T* bias_m, bool relu, T* yt_m, int threads);

// g (n_out, Bp) = gy_m masked where y_m <= 0 (no mask when y_m is null), padding lanes zero; gbias_m (or null)
// = its batch sums. g may be gy_m itself.
template <class T>
void gradient_network(const T* gy_m, const T* y_m, int64_t n_out, int64_t B, int64_t Bp, T* g, T* gbias_m);

// From the masked gradient g of network m: gxt_m (or null) = W^T g and network m's entries of gvals (or null).
template <class T>
void backward_network(const T* g, const T* xt_m, int64_t m, int64_t B, int64_t Bp, const CsrView& csr, const T* vals,
                      const CsrView& csc, const int64_t* csc_perm, T* gxt_m, T* gvals, int threads);

// The CSR and CSC structure of M stacked (n_out, n_in) masks (mask: M * n_out * n_in bytes, nonzero = kept).
// CSR rows are (network, output), entries in input order; rows[e] is entry e's CSR row and pos[e] its flat index
// in the mask. CSC rows are (network, input), entries in output order, and csc_perm[e'] is the CSR entry of CSC
// entry e'. `csr_count` gives nnz, for the caller to size the arrays; `csr_structure` fills them.
int64_t csr_count(const uint8_t* mask, int64_t M, int64_t n_out, int64_t n_in);
void csr_structure(const uint8_t* mask, int64_t M, int64_t n_out, int64_t n_in, int64_t* indptr, int64_t* cols,
                   int64_t* rows, int64_t* pos, int64_t* csc_indptr, int64_t* csc_rows, int64_t* csc_perm);

// xt (M, n, Bp) = x (M, B, n) with the batch moved last, padding lanes B..Bp-1 zero (cache-blocked tiles).
template <class T>
void to_feature_major(const T* x, int64_t M, int64_t B, int64_t n, int64_t Bp, T* xt, int n_threads);

// x (M, B, n) = the first B lanes of the feature-major xt (M, n, Bp), transposed back.
template <class T>
void from_feature_major(const T* xt, int64_t M, int64_t n, int64_t Bp, int64_t B, T* x, int n_threads);

}  // namespace plantseek
