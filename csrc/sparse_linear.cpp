#include "sparse_linear.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <vector>

#include "common.h"

namespace plantseek {

namespace {

constexpr int64_t kPrefetch = 4;  // kept weights ahead whose input rows are prefetched
// Below this many element operations a kernel runs on the calling thread: an OpenMP fork/join costs more
// than it saves (and far more when the machine is oversubscribed).
constexpr int64_t kParallelWork = int64_t(1) << 20;

// xt[m, c, r] = x[m, r, c] for r < R, 0 for R <= r < Rp. Works on 16 x 16 tiles that are read row by
// row (whole cache lines) into a local buffer and written out column by column; reading a column
// directly would touch 16 lines 4 KiB apart, which alias in L1 when the row length is a power of two.
template <class T>
void transpose_pad(const T* x, int64_t M, int64_t R, int64_t C, T* xt, int64_t Rp, int threads) {
    constexpr int64_t tile = 16;
    const int64_t col_tiles = (C + tile - 1) / tile;
    const int64_t row_tiles = (Rp + tile - 1) / tile;
    const int64_t items = M * row_tiles;
#pragma omp parallel for schedule(static) num_threads(threads) if (M * R * C > kParallelWork)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t m = item / row_tiles;
        const int64_t r0 = (item % row_tiles) * tile;
        const int64_t nr = std::max<int64_t>(0, std::min(R, r0 + tile) - r0);
        const int64_t width = std::min(tile, Rp - r0);
        const T* src = x + m * R * C;
        T* dst = xt + m * C * Rp;
        alignas(64) T buf[tile][tile];
        for (int64_t ct = 0; ct < col_tiles; ++ct) {
            const int64_t c0 = ct * tile;
            const int64_t nc = std::min(C, c0 + tile) - c0;
            for (int64_t r = 0; r < nr; ++r) {
                const T* row = src + (r0 + r) * C + c0;
                for (int64_t c = 0; c < nc; ++c) buf[c][r] = row[c];
            }
            for (int64_t c = 0; c < nc; ++c)
                for (int64_t r = nr; r < tile; ++r) buf[c][r] = T(0);
            if (width == tile) {
                for (int64_t c = 0; c < nc; ++c) std::memcpy(dst + (c0 + c) * Rp + r0, buf[c], sizeof(T) * tile);
            } else {
                for (int64_t c = 0; c < nc; ++c) std::memcpy(dst + (c0 + c) * Rp + r0, buf[c], sizeof(T) * width);
            }
        }
    }
}

// 64-byte vectors (GCC/Clang vector extension: one AVX-512 register, or several narrower ones).
template <class T>
struct Simd {
    typedef T vec __attribute__((vector_size(64)));
    static constexpr int lanes = 64 / sizeof(T);
    static vec load(const T* p) {
        vec v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static void store(T* p, const vec& v) { std::memcpy(p, &v, sizeof v); }
    static vec splat(T x) {
        vec v;
        for (int i = 0; i < lanes; ++i) v[i] = x;
        return v;
    }
};

// One block of output rows [j0, j1) of one network for batch chunk [b0, b0 + NV * lanes): acc = bias +
// sum_e v_e * xt[col_e, b0 : ...], written back into the row-major output y (B, n_rows).
template <class T, int NV>
void spmm_block(const int64_t* indptr, const int64_t* cols, const T* vals, const T* xt, int64_t Bp,
                const T* bias, int64_t j0, int64_t j1, int64_t b0, int64_t B, T* y, int64_t n_rows) {
    using S = Simd<T>;
    using V = typename S::vec;
    constexpr int W = NV * S::lanes;
    constexpr int64_t JB = 64 / sizeof(T);
    alignas(64) T tile[JB][W];
    for (int64_t j = j0; j < j1; ++j) {
        V acc[NV];
        const V init = S::splat(bias ? bias[j] : T(0));
#pragma GCC unroll 16
        for (int q = 0; q < NV; ++q) acc[q] = init;
        const T* base = xt + b0;
        const int64_t e_end = indptr[j + 1];
        for (int64_t e = indptr[j]; e < e_end; ++e) {
            if (e + kPrefetch < e_end) {
                const T* ahead = base + cols[e + kPrefetch] * Bp;
#pragma GCC unroll 16
                for (int q = 0; q < NV; ++q) __builtin_prefetch(ahead + q * S::lanes);
            }
            const V v = S::splat(vals[e]);
            const T* src = base + cols[e] * Bp;
#pragma GCC unroll 16
            for (int q = 0; q < NV; ++q) acc[q] += v * S::load(src + q * S::lanes);
        }
#pragma GCC unroll 16
        for (int q = 0; q < NV; ++q) S::store(&tile[j - j0][q * S::lanes], acc[q]);
    }
    const int64_t valid = std::min<int64_t>(W, B - b0);
    for (int64_t t = 0; t < valid; ++t) {
        T* out = y + (b0 + t) * n_rows;
        for (int64_t j = j0; j < j1; ++j) out[j] = tile[j - j0][t];
    }
}

// spmm_block with NV chosen at run time (1 <= nv <= MaxNV).
template <class T, int MaxNV>
void dispatch_block(int64_t nv, const int64_t* indptr, const int64_t* cols, const T* vals, const T* xt, int64_t Bp,
                    const T* bias, int64_t j0, int64_t j1, int64_t b0, int64_t B, T* y, int64_t n_rows) {
    if constexpr (MaxNV == 1) {
        (void)nv;
        spmm_block<T, 1>(indptr, cols, vals, xt, Bp, bias, j0, j1, b0, B, y, n_rows);
    } else {
        if (nv == MaxNV) spmm_block<T, MaxNV>(indptr, cols, vals, xt, Bp, bias, j0, j1, b0, B, y, n_rows);
        else dispatch_block<T, MaxNV - 1>(nv, indptr, cols, vals, xt, Bp, bias, j0, j1, b0, B, y, n_rows);
    }
}

// y (M, B, n_rows) = rows of the CSR matrix times xt (M, n_cols, Bp), plus bias (M, n_rows) if given.
template <class T>
void spmm_rows(const CsrView& csr, const T* vals, const T* xt, int64_t M, int64_t B, int64_t Bp,
               const T* bias, T* y, int threads) {
    constexpr int64_t JB = 64 / sizeof(T);
    const int64_t n_rows = csr.n_rows;
    const int64_t groups = (n_rows + JB - 1) / JB;
    const int64_t chunk = 16 * Simd<T>::lanes;  // batch elements per block: 16 vector accumulators
    const int64_t chunks = (Bp + chunk - 1) / chunk;
    const int64_t items = M * chunks * groups;
    const int64_t nnz = csr.indptr[M * n_rows];
    const bool parallel = (nnz + M * n_rows) * Bp > kParallelWork;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t m = item / (chunks * groups);
        const int64_t rest = item % (chunks * groups);
        const int64_t c = rest / groups;
        const int64_t g = rest % groups;
        const int64_t j0 = g * JB;
        const int64_t j1 = std::min(n_rows, j0 + JB);
        const int64_t b0 = c * chunk;
        const int64_t width = std::min<int64_t>(chunk, Bp - b0);
        const int64_t* indptr = csr.indptr + m * n_rows;
        const T* xm = xt + m * csr.n_cols * Bp;
        const T* bm = bias ? bias + m * n_rows : nullptr;
        T* ym = y + m * B * n_rows;
        dispatch_block<T, 16>(width / Simd<T>::lanes, indptr, csr.cols, vals, xm, Bp, bm, j0, j1, b0, B, ym, n_rows);
    }
}

// gvals[e] = <gyt[row(e)], xt[col(e)]> over the padded batch (padding is zero on both sides).
template <class T>
void sddmm(const CsrView& csr, const T* gyt, const T* xt, int64_t M, int64_t Bp, T* gvals, int threads) {
    const int64_t rows = M * csr.n_rows;
    const int64_t nnz = csr.indptr[rows];
    const bool parallel = nnz * Bp > kParallelWork;
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads) if (parallel)
    for (int64_t r = 0; r < rows; ++r) {
        const int64_t m = r / csr.n_rows;
        const T* g = gyt + r * Bp;
        const T* xm = xt + m * csr.n_cols * Bp;
        const int64_t e_end = csr.indptr[r + 1];
        for (int64_t e = csr.indptr[r]; e < e_end; ++e) {
            if (e + kPrefetch < e_end) {
                const T* ahead = xm + csr.cols[e + kPrefetch] * Bp;
                for (int64_t b = 0; b < Bp && b < 256; b += 64 / static_cast<int64_t>(sizeof(T)))
                    __builtin_prefetch(ahead + b);
            }
            const T* xr = xm + csr.cols[e] * Bp;
            using S = Simd<T>;
            using V = typename S::vec;
            V acc0 = S::splat(T(0));
            V acc1 = S::splat(T(0));
            int64_t b = 0;
            for (; b + 2 * S::lanes <= Bp; b += 2 * S::lanes) {
                acc0 += S::load(g + b) * S::load(xr + b);
                acc1 += S::load(g + b + S::lanes) * S::load(xr + b + S::lanes);
            }
            for (; b + S::lanes <= Bp; b += S::lanes) acc0 += S::load(g + b) * S::load(xr + b);
            acc0 += acc1;
            T total = T(0);
            for (int t = 0; t < S::lanes; ++t) total += acc0[t];
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
    // Scratch for the padded transpose of grad_y; every entry is written, so no zero-initialisation.
    std::unique_ptr<T[]> gyt_buffer(new T[static_cast<size_t>(std::max<int64_t>(1, M * csr.n_rows * Bp))]);
    T* gyt = gyt_buffer.get();
    transpose_pad(gy, M, B, csr.n_rows, gyt, Bp, threads);
    if (gx != nullptr) {
        std::unique_ptr<T[]> vals_csc(new T[static_cast<size_t>(std::max<int64_t>(1, nnz))]);
        for (int64_t e = 0; e < nnz; ++e) vals_csc[e] = vals[csc_perm[e]];
        if (B > 0) spmm_rows(csc, vals_csc.get(), gyt, M, B, Bp, static_cast<const T*>(nullptr), gx, threads);
    }
    if (gvals != nullptr) {
        if (Bp == 0) {
            std::fill(gvals, gvals + nnz, T(0));
        } else {
            sddmm(csr, gyt, xt, M, Bp, gvals, threads);
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
