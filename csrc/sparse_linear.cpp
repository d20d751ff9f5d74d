#include "sparse_linear.h"

#include <algorithm>
#include <vector>

#include "common.h"

namespace plantseek {

namespace {

constexpr int64_t kChunk = 64;  // batch elements handled per accumulator block
constexpr int64_t kLanes = 16;  // independent partial sums in the SDDMM dot products

// xt[m, c, r] = x[m, r, c] for r < R, 0 for R <= r < Rp.
template <class T>
void transpose_pad(const T* x, int64_t M, int64_t R, int64_t C, T* xt, int64_t Rp, int threads) {
    constexpr int64_t tile = 32;
    const int64_t col_tiles = (C + tile - 1) / tile;
    const int64_t items = M * col_tiles;
#pragma omp parallel for schedule(static) num_threads(threads) if (M * R * C > 32768)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t m = item / col_tiles;
        const int64_t c0 = (item % col_tiles) * tile;
        const int64_t c1 = std::min(C, c0 + tile);
        const T* src = x + m * R * C;
        T* dst = xt + m * C * Rp;
        for (int64_t r0 = 0; r0 < R; r0 += tile) {
            const int64_t r1 = std::min(R, r0 + tile);
            for (int64_t c = c0; c < c1; ++c) {
                T* out = dst + c * Rp;
                for (int64_t r = r0; r < r1; ++r) out[r] = src[r * C + c];
            }
        }
        for (int64_t c = c0; c < c1; ++c) {
            T* out = dst + c * Rp;
            for (int64_t r = R; r < Rp; ++r) out[r] = T(0);
        }
    }
}

// One block of output rows [j0, j1) of one network for batch chunk [b0, b0 + W): acc = bias + sum_e
// v_e * xt[col_e, b0 : b0 + W], written back into the row-major output y (B, n_rows).
template <class T, int W>
void spmm_block(const int64_t* indptr, const int64_t* cols, const T* vals, const T* xt, int64_t Bp,
                const T* bias, int64_t j0, int64_t j1, int64_t b0, int64_t B, T* y, int64_t n_rows) {
    constexpr int64_t JB = 64 / sizeof(T);
    T tile[JB][W];
    for (int64_t j = j0; j < j1; ++j) {
        T acc[W];
        const T init = bias ? bias[j] : T(0);
        for (int t = 0; t < W; ++t) acc[t] = init;
        for (int64_t e = indptr[j]; e < indptr[j + 1]; ++e) {
            const T v = vals[e];
            const T* src = xt + cols[e] * Bp + b0;
            for (int t = 0; t < W; ++t) acc[t] += v * src[t];
        }
        for (int t = 0; t < W; ++t) tile[j - j0][t] = acc[t];
    }
    const int64_t valid = std::min<int64_t>(W, B - b0);
    for (int64_t t = 0; t < valid; ++t) {
        T* out = y + (b0 + t) * n_rows;
        for (int64_t j = j0; j < j1; ++j) out[j] = tile[j - j0][t];
    }
}

// y (M, B, n_rows) = rows of the CSR matrix times xt (M, n_cols, Bp), plus bias (M, n_rows) if given.
template <class T>
void spmm_rows(const CsrView& csr, const T* vals, const T* xt, int64_t M, int64_t B, int64_t Bp,
               const T* bias, T* y, int threads) {
    constexpr int64_t JB = 64 / sizeof(T);
    const int64_t n_rows = csr.n_rows;
    const int64_t groups = (n_rows + JB - 1) / JB;
    const int64_t chunks = (Bp + kChunk - 1) / kChunk;
    const int64_t items = M * chunks * groups;
    const int64_t nnz = csr.indptr[M * n_rows];
    const bool parallel = (nnz + M * n_rows) * Bp > 65536;
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads) if (parallel)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t m = item / (chunks * groups);
        const int64_t rest = item % (chunks * groups);
        const int64_t c = rest / groups;
        const int64_t g = rest % groups;
        const int64_t j0 = g * JB;
        const int64_t j1 = std::min(n_rows, j0 + JB);
        const int64_t b0 = c * kChunk;
        const int64_t width = std::min<int64_t>(kChunk, Bp - b0);
        const int64_t* indptr = csr.indptr + m * n_rows;
        const T* xm = xt + m * csr.n_cols * Bp;
        const T* bm = bias ? bias + m * n_rows : nullptr;
        T* ym = y + m * B * n_rows;
        switch (width) {
            case 16: spmm_block<T, 16>(indptr, csr.cols, vals, xm, Bp, bm, j0, j1, b0, B, ym, n_rows); break;
            case 32: spmm_block<T, 32>(indptr, csr.cols, vals, xm, Bp, bm, j0, j1, b0, B, ym, n_rows); break;
            case 48: spmm_block<T, 48>(indptr, csr.cols, vals, xm, Bp, bm, j0, j1, b0, B, ym, n_rows); break;
            default: spmm_block<T, 64>(indptr, csr.cols, vals, xm, Bp, bm, j0, j1, b0, B, ym, n_rows); break;
        }
    }
}

// gvals[e] = <gyt[row(e)], xt[col(e)]> over the padded batch (padding is zero on both sides).
template <class T>
void sddmm(const CsrView& csr, const T* gyt, const T* xt, int64_t M, int64_t Bp, T* gvals, int threads) {
    const int64_t rows = M * csr.n_rows;
    const int64_t nnz = csr.indptr[rows];
    const bool parallel = nnz * Bp > 65536;
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads) if (parallel)
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t m = r / csr.n_rows;
        const T* g = gyt + r * Bp;
        const T* xm = xt + m * csr.n_cols * Bp;
        for (int64_t e = csr.indptr[r]; e < csr.indptr[r + 1]; ++e) {
            const T* xr = xm + csr.cols[e] * Bp;
            T acc[kLanes];
            for (int t = 0; t < kLanes; ++t) acc[t] = T(0);
            for (int64_t b = 0; b < Bp; b += kLanes) {
                for (int t = 0; t < kLanes; ++t) acc[t] += g[b + t] * xr[b + t];
            }
            T total = T(0);
            for (int t = 0; t < kLanes; ++t) total += acc[t];
            gvals[e] = total;
        }
    }
}

}  // namespace

template <class T>
void sparse_linear_forward(const T* x, int64_t M, int64_t B, const CsrView& csr, const T* vals,
                           const T* bias, T* y, T* xt, int n_threads) {
    const int threads = resolve_threads(n_threads);
    const int64_t Bp = padded_batch(B);
    transpose_pad(x, M, B, csr.n_cols, xt, Bp, threads);
    if (B == 0) return;
    spmm_rows(csr, vals, xt, M, B, Bp, bias, y, threads);
}

template <class T>
void sparse_linear_backward(const T* gy, const T* xt, int64_t M, int64_t B, const CsrView& csr,
                            const T* vals, const CsrView& csc, const int64_t* csc_perm, T* gx, T* gvals,
                            int n_threads) {
    const int threads = resolve_threads(n_threads);
    const int64_t Bp = padded_batch(B);
    const int64_t nnz = csr.indptr[M * csr.n_rows];
    std::vector<T> gyt(static_cast<size_t>(M * csr.n_rows * Bp));
    transpose_pad(gy, M, B, csr.n_rows, gyt.data(), Bp, threads);
    if (gx != nullptr) {
        std::vector<T> vals_csc(static_cast<size_t>(nnz));
        for (int64_t e = 0; e < nnz; ++e) vals_csc[e] = vals[csc_perm[e]];
        if (B > 0) spmm_rows(csc, vals_csc.data(), gyt.data(), M, B, Bp, static_cast<const T*>(nullptr), gx, threads);
    }
    if (gvals != nullptr) {
        if (Bp == 0) {
            std::fill(gvals, gvals + nnz, T(0));
        } else {
            sddmm(csr, gyt.data(), xt, M, Bp, gvals, threads);
        }
    }
}

template void sparse_linear_forward<float>(const float*, int64_t, int64_t, const CsrView&, const float*,
                                           const float*, float*, float*, int);
template void sparse_linear_forward<double>(const double*, int64_t, int64_t, const CsrView&, const double*,
                                            const double*, double*, double*, int);
template void sparse_linear_backward<float>(const float*, const float*, int64_t, int64_t, const CsrView&,
                                            const float*, const CsrView&, const int64_t*, float*, float*, int);
template void sparse_linear_backward<double>(const double*, const double*, int64_t, int64_t, const CsrView&,
                                             const double*, const CsrView&, const int64_t*, double*, double*,
                                             int);

}  // namespace plantseek
