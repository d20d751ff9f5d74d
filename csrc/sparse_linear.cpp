#include "sparse_linear.h"

#include <algorithm>
#include <cstring>
#include <memory>
#include <type_traits>
#include <vector>

#ifdef __AVX512F__
#include <immintrin.h>
#endif

#include "common.h"

namespace plantseek {

namespace {

// Below this many element operations a kernel runs on the calling thread: an OpenMP fork/join costs more
// than it saves (and far more when the machine is oversubscribed).
constexpr int64_t kParallelWork = int64_t(1) << 20;
constexpr int kMaxVectors = 16;  // batch vectors held in registers per block
constexpr int64_t kPrefetch = 4;  // kept weights ahead whose input rows are prefetched...
constexpr int64_t kPrefetchBytes = int64_t(256) << 10;  // ...when a network's input exceeds this (L2-sized)
constexpr int64_t kRowsPerItem = 16;  // output rows per parallel work item
constexpr int kDenseMaxVectors = 4;  // batch vectors up to which full layers take the row-blocked kernel

// The widest register's vectors (GCC/Clang vector extension): 64 bytes with AVX-512, else 32 (AVX2's
// registers; 64-byte vectors there are split in two and spill).
#ifdef __AVX512F__
constexpr int kVectorBytes = 64;
#else
constexpr int kVectorBytes = 32;
#endif
template <class T>
struct Simd {
    typedef T vec __attribute__((vector_size(kVectorBytes)));
    static constexpr int lanes = kVectorBytes / sizeof(T);
    static vec load(const T* p) {
        vec v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static void store(T* p, const vec& v) { std::memcpy(p, &v, sizeof v); }
    static vec splat(T x) {
#ifdef __AVX512F__
        vec out;
        if constexpr (sizeof(T) == 8) {
            const __m512d v = _mm512_set1_pd(x);
            std::memcpy(&out, &v, sizeof out);
        } else {
            const __m512 v = _mm512_set1_ps(x);
            std::memcpy(&out, &v, sizeof out);
        }
        return out;
#else
        return vec{} + x;  // scalar operands broadcast
#endif
    }
    // out[k] = sum of the lanes of v[k], for k < lanes: one transposing tree of shuffles and adds for all the
    // vectors (19 operations for 8 doubles, 36 for 16 floats) instead of a reduction per vector.
    static vec sums(const vec* v) {
#ifdef __AVX512F__
        vec out;
        if constexpr (sizeof(T) == 8) {
            __m512d a[8], t[4], q[2];
            for (int k = 0; k < 8; ++k) std::memcpy(&a[k], &v[k], sizeof a[k]);
            for (int k = 0; k < 4; ++k)  // chunk c of t[k]: pair sums of v[2k] and v[2k+1] within chunk c
                t[k] = _mm512_add_pd(_mm512_unpacklo_pd(a[2 * k], a[2 * k + 1]), _mm512_unpackhi_pd(a[2 * k], a[2 * k + 1]));
            for (int k = 0; k < 2; ++k)  // chunks: (t[2k] c0+c1, c2+c3, t[2k+1] c0+c1, c2+c3)
                q[k] = _mm512_add_pd(_mm512_shuffle_f64x2(t[2 * k], t[2 * k + 1], 0x88),
                                     _mm512_shuffle_f64x2(t[2 * k], t[2 * k + 1], 0xDD));
            const __m512d r = _mm512_add_pd(_mm512_shuffle_f64x2(q[0], q[1], 0x88), _mm512_shuffle_f64x2(q[0], q[1], 0xDD));
            std::memcpy(&out, &r, sizeof out);
        } else {
            __m512 a[16], t[8], u[4], w[2];
            for (int k = 0; k < 16; ++k) std::memcpy(&a[k], &v[k], sizeof a[k]);
            for (int k = 0; k < 8; ++k)  // per chunk: (v[2k] a, v[2k+1] a, v[2k] b, v[2k+1] b), a/b = lane pairs
                t[k] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * k], a[2 * k + 1]), _mm512_unpackhi_ps(a[2 * k], a[2 * k + 1]));
            for (int k = 0; k < 4; ++k) {  // per chunk: the chunk sums of v[4k] .. v[4k+3]
                const __m512d x = _mm512_castps_pd(t[2 * k]), y = _mm512_castps_pd(t[2 * k + 1]);
                u[k] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
            }
            for (int k = 0; k < 2; ++k)
                w[k] = _mm512_add_ps(_mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0x88),
                                     _mm512_shuffle_f32x4(u[2 * k], u[2 * k + 1], 0xDD));
            const __m512 r = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], 0x88), _mm512_shuffle_f32x4(w[0], w[1], 0xDD));
            std::memcpy(&out, &r, sizeof out);
        }
        return out;
#else
        vec out;
        for (int k = 0; k < lanes; ++k) out[k] = sum(v[k]);
        return out;
#endif
    }
    static T sum(const vec& v) {
#ifdef __AVX512F__
        __m512d d;
        __m512 f;
        if constexpr (sizeof(T) == 8) {
            std::memcpy(&d, &v, sizeof d);
            return static_cast<T>(_mm512_reduce_add_pd(d));
        } else {
            std::memcpy(&f, &v, sizeof f);
            return static_cast<T>(_mm512_reduce_add_ps(f));
        }
#else
        T total = T(0);
        for (int i = 0; i < lanes; ++i) total += v[i];
        return total;
#endif
    }
};

// f(std::integral_constant<int, nv>{}) for a run-time 1 <= nv <= MaxNV: the kernels are compiled once per
// number of batch vectors they keep in registers.
template <int MaxNV, class F>
void with_vectors(int nv, F&& f) {
    if constexpr (MaxNV == 1) {
        (void)nv;
        f(std::integral_constant<int, 1>{});
    } else {
        if (nv == MaxNV) f(std::integral_constant<int, MaxNV>{});
        else with_vectors<MaxNV - 1>(nv, f);
    }
}

// Rows [j0, j1) of one network times a feature-major input, for the batch vectors [b0, b0 + NV lanes):
// dst[j] = init_j + sum_e value(e) * src[col_e], with value(e) = vals[perm ? perm[e] : e], init_j =
// bias[j] or 0, then ReLU (x < 0 -> 0, NaN kept) when `relu`.
template <class T, int NV, bool Perm, bool Prefetch>
void rows_block(const int64_t* indptr, const int64_t* cols, const T* vals, const int64_t* perm, const T* src,
                int64_t Bp, const T* bias, bool relu, int64_t j0, int64_t j1, int64_t b0, T* dst) {
    using S = Simd<T>;
    using V = typename S::vec;
    const T* base = src + b0;
    for (int64_t j = j0; j < j1; ++j) {
        V acc[NV];
        const V init = S::splat(bias ? bias[j] : T(0));
#pragma GCC unroll 16
        for (int q = 0; q < NV; ++q) acc[q] = init;
        const int64_t e_end = indptr[j + 1];
        for (int64_t e = indptr[j]; e < e_end; ++e) {
            if (Prefetch && e + kPrefetch < e_end) {
                const T* ahead = base + cols[e + kPrefetch] * Bp;
#pragma GCC unroll 16
                for (int q = 0; q < NV; ++q) __builtin_prefetch(ahead + q * S::lanes);
            }
            const V v = S::splat(vals[Perm ? perm[e] : e]);
            const T* x = base + cols[e] * Bp;
#pragma GCC unroll 16
            for (int q = 0; q < NV; ++q) acc[q] += v * S::load(x + q * S::lanes);
        }
        T* out = dst + j * Bp + b0;
        if (relu) {
            const V zero = S::splat(T(0));
#pragma GCC unroll 16
            for (int q = 0; q < NV; ++q) S::store(out + q * S::lanes, acc[q] < zero ? zero : acc[q]);
        } else {
#pragma GCC unroll 16
            for (int q = 0; q < NV; ++q) S::store(out + q * S::lanes, acc[q]);
        }
    }
}

// rows_block for a network whose every row is full (entry k of row j is column k): R rows at a time, so each
// input vector loaded serves R rows (R x NV accumulators) instead of one. Weight (j, k) is vals[start_j + k *
// stride] (CSR: start_j = indptr[j], stride 1; the CSC walk of a dense CSR: start_j = perm[indptr[j]], stride
// = the number of rows). Each row sums in the same order as rows_block, so the results are bitwise the same.
template <class T, int NV, int R>
void dense_rows_block(const int64_t* indptr, const T* vals, const int64_t* perm, int64_t stride, int64_t n_cols,
                      const T* src, int64_t Bp, const T* bias, bool relu, int64_t j0, int64_t j1, int64_t b0, T* dst) {
    using S = Simd<T>;
    using V = typename S::vec;
    const T* base = src + b0;
    int64_t j = j0;
    for (; j + R <= j1; j += R) {
        V acc[R][NV];
        const T* w[R];
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            w[r] = vals + (perm != nullptr ? perm[indptr[j + r]] : indptr[j + r]);
            const V init = S::splat(bias ? bias[j + r] : T(0));
#pragma GCC unroll 16
            for (int q = 0; q < NV; ++q) acc[r][q] = init;
        }
        for (int64_t k = 0; k < n_cols; ++k) {
            const T* x = base + k * Bp;
            V xv[NV];
#pragma GCC unroll 16
            for (int q = 0; q < NV; ++q) xv[q] = S::load(x + q * S::lanes);
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) {
                const V v = S::splat(w[r][k * stride]);
#pragma GCC unroll 16
                for (int q = 0; q < NV; ++q) acc[r][q] += v * xv[q];
            }
        }
        const V zero = S::splat(T(0));
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            T* out = dst + (j + r) * Bp + b0;
            if (relu) {
#pragma GCC unroll 16
                for (int q = 0; q < NV; ++q) S::store(out + q * S::lanes, acc[r][q] < zero ? zero : acc[r][q]);
            } else {
#pragma GCC unroll 16
                for (int q = 0; q < NV; ++q) S::store(out + q * S::lanes, acc[r][q]);
            }
        }
    }
    if constexpr (R > 1) {  // the last rows, one at a time
        if (j < j1) dense_rows_block<T, NV, 1>(indptr, vals, perm, stride, n_cols, src, Bp, bias, relu, j, j1, b0, dst);
    }
}

// gvals[e] = <g[row(e)], xt[col(e)]> over the first `nv` vectors of each row (the rest of g is zero).
template <class T, int NV>
void sddmm_row(const int64_t* cols, int64_t e0, int64_t e1, const T* g, const T* xm, int64_t Bp, bool first,
               bool prefetch, T* gvals) {
    using S = Simd<T>;
    using V = typename S::vec;
    V gv[NV];
#pragma GCC unroll 16
    for (int q = 0; q < NV; ++q) gv[q] = S::load(g + q * S::lanes);
    int64_t e = e0;
    if constexpr (NV <= 8) {  // whole groups of `lanes` entries share one reduction tree (registers allow it)
        constexpr int K = S::lanes;
        auto dots = [&](int count) {  // of entries e .. e + count - 1 (count <= K; the missing ones are zero)
            V acc[K];
#pragma GCC unroll 16
            for (int k = 0; k < K; ++k) {
                if (k < count) {
                    const T* x = xm + cols[e + k] * Bp;
                    acc[k] = gv[0] * S::load(x);
#pragma GCC unroll 16
                    for (int q = 1; q < NV; ++q) acc[k] += gv[q] * S::load(x + q * S::lanes);
                } else {
                    acc[k] = S::splat(T(0));
                }
            }
            return S::sums(acc);
        };
        for (; e + K <= e1; e += K) {
            const V d = dots(K);
            S::store(gvals + e, first ? d : S::load(gvals + e) + d);
        }
        // doubles: a partial group beats one reduction per entry from 3 of 8 entries on (19 tree operations
        // against ~8 per entry); for floats' 16-entry tree it never did (measured)
        const int rest = static_cast<int>(e1 - e);
        if (sizeof(T) == 8 && rest >= 3) {
            const V d = dots(rest);
            for (int k = 0; k < rest; ++k) gvals[e + k] = first ? d[k] : gvals[e + k] + d[k];
            e = e1;
        }
    }
    for (; e < e1; ++e) {
        if (prefetch && e + kPrefetch < e1) {
            const T* ahead = xm + cols[e + kPrefetch] * Bp;
#pragma GCC unroll 16
            for (int q = 0; q < NV; ++q) __builtin_prefetch(ahead + q * S::lanes);
        }
        const T* x = xm + cols[e] * Bp;
        // two independent chains halve the latency of the dot product
        V acc0 = gv[0] * S::load(x);
        V acc1 = NV > 1 ? gv[NV > 1 ? 1 : 0] * S::load(x + (NV > 1 ? S::lanes : 0)) : S::splat(T(0));
#pragma GCC unroll 16
        for (int q = 2; q < NV; q += 2) {
            acc0 += gv[q] * S::load(x + q * S::lanes);
            if (q + 1 < NV) acc1 += gv[q + 1] * S::load(x + (q + 1) * S::lanes);
        }
        const T dot = S::sum(acc0 + acc1);
        gvals[e] = first ? dot : gvals[e] + dot;
    }
}

// gvals of a network whose every row is full: grad_W = g x^T as a small GEMM over the `used` batch lanes, on a
// batch-major copy of the input (xb[b][k], rows padded to whole vectors with zeros), RJ output rows by two
// vectors of inputs at a time. Row j's entries are gvals[indptr[j] + k]. Each weight sums its batch in order
// (one chain), not in the sparse kernel's lane tree: float results differ from it in the last bits.
template <class T>
void dense_sddmm_rows(const int64_t* indptr, int64_t j0, int64_t j1, int64_t n_cols, const T* g_m, const T* xb,
                      int64_t ldx, int64_t used, int64_t Bp, T* gvals) {
    using S = Simd<T>;
    using V = typename S::vec;
    constexpr int L = S::lanes, IV = 2, RJ = 4;
    auto tile = [&](auto rows, int64_t j, int64_t k0, int nvec) {
        constexpr int R = decltype(rows)::value;
        V acc[R][IV];
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
            for (int q = 0; q < IV; ++q) acc[r][q] = S::splat(T(0));
        for (int64_t b = 0; b < used; ++b) {
            const T* x = xb + b * ldx + k0;
            V xv[IV];
#pragma GCC unroll 16
            for (int q = 0; q < IV; ++q) xv[q] = q < nvec ? S::load(x + q * L) : S::splat(T(0));
#pragma GCC unroll 16
            for (int r = 0; r < R; ++r) {
                const V gv = S::splat(g_m[(j + r) * Bp + b]);
#pragma GCC unroll 16
                for (int q = 0; q < IV; ++q) acc[r][q] += gv * xv[q];
            }
        }
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
            T* out = gvals + indptr[j + r] + k0;
            for (int q = 0; q < nvec; ++q) {
                const int64_t count = std::min<int64_t>(L, n_cols - k0 - q * L);
                if (count == L) {
                    S::store(out + q * L, acc[r][q]);
                } else {
                    T tmp[L];
                    S::store(tmp, acc[r][q]);
                    std::copy(tmp, tmp + count, out + q * L);
                }
            }
        }
    };
    for (int64_t k0 = 0; k0 < n_cols; k0 += IV * L) {
        const int nvec = static_cast<int>(std::min<int64_t>(IV, (n_cols - k0 + L - 1) / L));
        int64_t j = j0;
        for (; j + RJ <= j1; j += RJ) tile(std::integral_constant<int, RJ>{}, j, k0, nvec);
        for (; j < j1; ++j) tile(std::integral_constant<int, 1>{}, j, k0, nvec);
    }
}

// Network m's rows of the CSR matrix times its input src_m (n_cols, Bp) into dst_m (n_rows, Bp) (+ bias_m,
// ReLU); with `perm` the values are vals[perm[e]] (the CSC walk of a CSR-ordered value array).
template <class T>
void spmm_network(const CsrView& csr, int64_t m, const T* vals, const int64_t* perm, const T* src_m, int64_t Bp,
                  const T* bias_m, bool relu, T* dst_m, int threads) {
    using S = Simd<T>;
    const int64_t n_rows = csr.n_rows;
    const int64_t* indptr = csr.indptr + m * n_rows;
    const int64_t groups = (n_rows + kRowsPerItem - 1) / kRowsPerItem;
    const int64_t chunk = kMaxVectors * S::lanes;
    const int64_t chunks = (Bp + chunk - 1) / chunk;
    const bool parallel = threads > 1 && (indptr[n_rows] - indptr[0] + n_rows) * Bp > kParallelWork;
    const bool prefetch = csr.n_cols * Bp * static_cast<int64_t>(sizeof(T)) > kPrefetchBytes;
    // every row full (columns unique per row, so the count says it): the register-blocked dense kernel
    const bool dense = indptr[n_rows] - indptr[0] == n_rows * csr.n_cols && n_rows > 0;
    auto item = [&](int64_t it) {
        const int64_t c = it / groups;
        const int64_t j0 = (it % groups) * kRowsPerItem;
        const int64_t b0 = c * chunk;
        const int nv = static_cast<int>(std::min<int64_t>(chunk, Bp - b0) / S::lanes);
        const int64_t j1 = std::min(n_rows, j0 + kRowsPerItem);
        with_vectors<kMaxVectors>(nv, [&](auto NV) {
            constexpr int nv_ = decltype(NV)::value;
            if constexpr (nv_ <= kDenseMaxVectors) {
                if (dense) {
                    constexpr int R = nv_ == 1 ? 8 : nv_ == 2 ? (kVectorBytes == 64 ? 8 : 4) : 2;
                    dense_rows_block<T, nv_, R>(indptr, vals, perm, perm != nullptr ? n_rows : 1, csr.n_cols, src_m,
                                                Bp, bias_m, relu, j0, j1, b0, dst_m);
                    return;
                }
            }
            if (perm != nullptr) {
                if (prefetch) rows_block<T, nv_, true, true>(indptr, csr.cols, vals, perm, src_m, Bp, bias_m, relu, j0, j1, b0, dst_m);
                else rows_block<T, nv_, true, false>(indptr, csr.cols, vals, perm, src_m, Bp, bias_m, relu, j0, j1, b0, dst_m);
            } else {
                if (prefetch) rows_block<T, nv_, false, true>(indptr, csr.cols, vals, perm, src_m, Bp, bias_m, relu, j0, j1, b0, dst_m);
                else rows_block<T, nv_, false, false>(indptr, csr.cols, vals, perm, src_m, Bp, bias_m, relu, j0, j1, b0, dst_m);
            }
        });
    };
    if (!parallel) {  // no OpenMP region at all: even a one-thread region costs a microsecond per call
        for (int64_t it = 0; it < chunks * groups; ++it) item(it);
        return;
    }
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t it = 0; it < chunks * groups; ++it) item(it);
}

// gvals[e] = <g_m[row(e)], xt_m[col(e)]> for network m's entries, over the first `used` lanes (g is zero
// beyond them).
template <class T>
void sddmm_network(const CsrView& csr, int64_t m, const T* g_m, const T* xt_m, int64_t used, int64_t Bp, T* gvals,
                   int threads) {
    using S = Simd<T>;
    const int64_t* indptr = csr.indptr + m * csr.n_rows;
    if (used == 0) {
        std::fill(gvals + indptr[0], gvals + indptr[csr.n_rows], T(0));
        return;
    }
    const bool parallel = threads > 1 && (indptr[csr.n_rows] - indptr[0]) * used > kParallelWork;
    if (indptr[csr.n_rows] - indptr[0] == csr.n_rows * csr.n_cols && csr.n_rows > 0) {  // every row full
        const int64_t n_cols = csr.n_cols, ldx = (n_cols + S::lanes - 1) / S::lanes * S::lanes;
        std::vector<T> xb(static_cast<size_t>(used * ldx), T(0));  // the input, batch-major
        for (int64_t k = 0; k < n_cols; ++k)
            for (int64_t b = 0; b < used; ++b) xb[b * ldx + k] = xt_m[k * Bp + b];
        if (!parallel) {
            dense_sddmm_rows<T>(indptr, 0, csr.n_rows, n_cols, g_m, xb.data(), ldx, used, Bp, gvals);
            return;
        }
        const int64_t blocks = (csr.n_rows + kRowsPerItem - 1) / kRowsPerItem;
#pragma omp parallel for schedule(static) num_threads(threads)
        for (int64_t it = 0; it < blocks; ++it)
            dense_sddmm_rows<T>(indptr, it * kRowsPerItem, std::min(csr.n_rows, (it + 1) * kRowsPerItem), n_cols, g_m,
                                xb.data(), ldx, used, Bp, gvals);
        return;
    }
    const bool prefetch = csr.n_cols * Bp * static_cast<int64_t>(sizeof(T)) > kPrefetchBytes;
    auto row = [&](int64_t j) {
        const int64_t e0 = indptr[j], e1 = indptr[j + 1];
        if (e0 == e1) return;
        for (int64_t b0 = 0; b0 < used; b0 += kMaxVectors * S::lanes) {
            const int nv = static_cast<int>(std::min<int64_t>(kMaxVectors * S::lanes, used - b0) / S::lanes);
            with_vectors<kMaxVectors>(nv, [&](auto NV) {
                sddmm_row<T, decltype(NV)::value>(csr.cols, e0, e1, g_m + j * Bp + b0, xt_m + b0, Bp, b0 == 0, prefetch,
                                                  gvals);
            });
        }
    };
    if (!parallel) {
        for (int64_t j = 0; j < csr.n_rows; ++j) row(j);
        return;
    }
#pragma omp parallel for schedule(dynamic, 64) num_threads(threads)
    for (int64_t j = 0; j < csr.n_rows; ++j) row(j);
}

// body(m, inner_threads) for every network: the networks in parallel when there are at least as many as
// threads (each then runs on one thread, its data staying in its core's cache), else one after the other
// with the threads inside.
template <class F>
void for_networks(int64_t M, int threads, int64_t work, F&& body) {
    if (threads > 1 && M >= threads && work > kParallelWork) {
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
        for (int64_t m = 0; m < M; ++m) body(m, 1);
    } else {
        for (int64_t m = 0; m < M; ++m) body(m, threads);
    }
}

// dst (cols x rows, leading dimension ldd) = src (rows x cols, leading dimension lds) transposed, through
// 16 x 16 tiles read row by row (whole cache lines) into a local buffer and written out the same way:
// reading a column directly would touch 16 lines 4 KiB apart, which alias in L1 when rows are a power of two.
template <class T>
void transpose_tiles(const T* src, int64_t rows, int64_t cols, int64_t lds, T* dst, int64_t ldd, int64_t r0) {
    constexpr int64_t tile = 16;
    alignas(64) T buf[tile][tile];
    const int64_t nr = std::min(tile, rows - r0);
    for (int64_t c0 = 0; c0 < cols; c0 += tile) {
        const int64_t nc = std::min(tile, cols - c0);
        for (int64_t r = 0; r < nr; ++r) {
            const T* row = src + (r0 + r) * lds + c0;
            for (int64_t c = 0; c < nc; ++c) buf[c][r] = row[c];
        }
        for (int64_t c = 0; c < nc; ++c) std::memcpy(dst + (c0 + c) * ldd + r0, buf[c], sizeof(T) * nr);
    }
}

// Every tile row of every network: in parallel when the copy is large enough to pay for the threads.
template <class T>
void transpose_networks(const T* src, int64_t M, int64_t rows, int64_t cols, int64_t lds, int64_t src_stride,
                        T* dst, int64_t ldd, int64_t dst_stride, int threads) {
    constexpr int64_t tile = 16;
    const int64_t row_tiles = (rows + tile - 1) / tile;
    const bool parallel = threads > 1 && M * rows * cols > kParallelWork;
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
    for (int64_t item = 0; item < M * row_tiles; ++item) {
        const int64_t m = item / row_tiles;
        transpose_tiles(src + m * src_stride, rows, cols, lds, dst + m * dst_stride, ldd, (item % row_tiles) * tile);
    }
}

}  // namespace

template <class T>
void forward_network(const T* xt_m, int64_t m, int64_t B, int64_t Bp, const CsrView& csr, const T* vals,
                     const T* bias_m, bool relu, T* yt_m, int threads) {
    spmm_network<T>(csr, m, vals, nullptr, xt_m, Bp, bias_m, relu, yt_m, threads);
    if (B < Bp)
        for (int64_t j = 0; j < csr.n_rows; ++j) std::fill(yt_m + j * Bp + B, yt_m + (j + 1) * Bp, T(0));
}

template <class T>
void gradient_network(const T* gy_m, const T* y_m, int64_t n_out, int64_t B, int64_t Bp, T* g, T* gbias_m) {
    using S = Simd<T>;
    using V = typename S::vec;
    const int64_t full = B / S::lanes * S::lanes;  // lanes handled by whole vectors
    const V zero = S::splat(T(0));
    for (int64_t j = 0; j < n_out; ++j) {
        const T* src = gy_m + j * Bp;
        const T* y = y_m == nullptr ? nullptr : y_m + j * Bp;
        T* dst = g + j * Bp;
        V acc = zero;
        for (int64_t b = 0; b < full; b += S::lanes) {
            V v = S::load(src + b);
            if (y != nullptr) v = S::load(y + b) <= zero ? zero : v;
            S::store(dst + b, v);
            acc += v;
        }
        T total = S::sum(acc);
        for (int64_t b = full; b < B; ++b) {
            dst[b] = y != nullptr && y[b] <= T(0) ? T(0) : src[b];
            total += dst[b];
        }
        std::fill(dst + B, dst + Bp, T(0));
        if (gbias_m != nullptr) gbias_m[j] = total;
    }
}

template <class T>
void backward_network(const T* g, const T* xt_m, int64_t m, int64_t B, int64_t Bp, const CsrView& csr, const T* vals,
                      const CsrView& csc, const int64_t* csc_perm, T* gxt_m, T* gvals, int threads) {
    using S = Simd<T>;
    const int64_t used = std::min(Bp, (B + S::lanes - 1) / S::lanes * S::lanes);  // lanes that can be non-zero
    if (gxt_m != nullptr && csr.n_cols > 0 && Bp > 0)
        spmm_network<T>(csc, m, vals, csc_perm, g, Bp, nullptr, false, gxt_m, threads);
    if (gvals != nullptr) sddmm_network<T>(csr, m, g, xt_m, used, Bp, gvals, threads);
}

template <class T>
void sparse_fm_forward(const T* xt, int64_t M, int64_t B, int64_t Bp, const CsrView& csr, const T* vals,
                       const T* bias, bool relu, T* yt, int n_threads) {
    if (M == 0 || Bp == 0 || csr.n_rows == 0) return;
    const int64_t nnz = csr.indptr[M * csr.n_rows];
    const int64_t n_out = csr.n_rows, n_in = csr.n_cols;
    for_networks(M, resolve_threads(n_threads), (nnz + M * n_out) * Bp, [&](int64_t m, int threads) {
        forward_network<T>(xt + m * n_in * Bp, m, B, Bp, csr, vals, bias ? bias + m * n_out : nullptr, relu,
                           yt + m * n_out * Bp, threads);
    });
}

template <class T>
void sparse_fm_backward(const T* gyt, const T* xt, const T* yt, int64_t M, int64_t B, int64_t Bp,
                        const CsrView& csr, const T* vals, const CsrView& csc, const int64_t* csc_perm, T* gxt,
                        T* gvals, T* gbias, int n_threads) {
    if (M == 0) return;
    const int64_t n_out = csr.n_rows, n_in = csr.n_cols;
    const int64_t nnz = csr.indptr[M * n_out];
    for_networks(M, resolve_threads(n_threads), (3 * nnz + M * (n_out + n_in)) * Bp, [&](int64_t m, int threads) {
        // g: the gradient that reaches W x + b (masked by the ReLU, padding lanes zero)
        std::unique_ptr<T[]> g(new T[static_cast<size_t>(std::max<int64_t>(1, n_out * Bp))]);
        gradient_network<T>(gyt + m * n_out * Bp, yt == nullptr ? nullptr : yt + m * n_out * Bp, n_out, B, Bp, g.get(),
                            gbias == nullptr ? nullptr : gbias + m * n_out);
        backward_network<T>(g.get(), xt + m * n_in * Bp, m, B, Bp, csr, vals, csc, csc_perm,
                            gxt == nullptr ? nullptr : gxt + m * n_in * Bp, gvals, threads);
    });
}

template <class T>
void to_feature_major(const T* x, int64_t M, int64_t B, int64_t n, int64_t Bp, T* xt, int n_threads) {
    transpose_networks(x, M, B, n, n, B * n, xt, Bp, n * Bp, resolve_threads(n_threads));
    if (B < Bp)
        for (int64_t r = 0; r < M * n; ++r) std::fill(xt + r * Bp + B, xt + (r + 1) * Bp, T(0));
}

template <class T>
void from_feature_major(const T* xt, int64_t M, int64_t n, int64_t Bp, int64_t B, T* x, int n_threads) {
    transpose_networks(xt, M, n, B, Bp, n * Bp, x, n, B * n, resolve_threads(n_threads));
}

template void forward_network<float>(const float*, int64_t, int64_t, int64_t, const CsrView&, const float*,
                                      const float*, bool, float*, int);
template void forward_network<double>(const double*, int64_t, int64_t, int64_t, const CsrView&, const double*,
                                       const double*, bool, double*, int);
template void gradient_network<float>(const float*, const float*, int64_t, int64_t, int64_t, float*, float*);
template void gradient_network<double>(const double*, const double*, int64_t, int64_t, int64_t, double*, double*);
template void backward_network<float>(const float*, const float*, int64_t, int64_t, int64_t, const CsrView&,
                                      const float*, const CsrView&, const int64_t*, float*, float*, int);
template void backward_network<double>(const double*, const double*, int64_t, int64_t, int64_t, const CsrView&,
                                       const double*, const CsrView&, const int64_t*, double*, double*, int);
int64_t csr_count(const uint8_t* mask, int64_t M, int64_t n_out, int64_t n_in) {
    int64_t nnz = 0;
    const int64_t n = M * n_out * n_in;
    for (int64_t e = 0; e < n; ++e) nnz += mask[e] != 0;
    return nnz;
}

void csr_structure(const uint8_t* mask, int64_t M, int64_t n_out, int64_t n_in, int64_t* indptr, int64_t* cols,
                   int64_t* rows, int64_t* pos, int64_t* csc_indptr, int64_t* csc_rows, int64_t* csc_perm) {
    // CSR in one pass over the mask; the CSC columns' counts on the way
    std::vector<int64_t> next(static_cast<size_t>(M * n_in + 1), 0);
    int64_t e = 0;
    indptr[0] = 0;
    for (int64_t r = 0; r < M * n_out; ++r) {
        const uint8_t* row = mask + r * n_in;
        const int64_t m = r / n_out;
        for (int64_t i = 0; i < n_in; ++i)
            if (row[i]) {
                cols[e] = i;
                rows[e] = r;
                pos[e] = r * n_in + i;
                ++next[m * n_in + i + 1];
                ++e;
            }
        indptr[r + 1] = e;
    }
    for (int64_t c = 0; c < M * n_in; ++c) next[c + 1] += next[c];
    std::copy(next.begin(), next.end(), csc_indptr);
    // CSR entries in order visit each CSC row's outputs in increasing order: placing them in turn sorts by output
    for (int64_t k = 0; k < e; ++k) {
        const int64_t m = rows[k] / n_out;
        const int64_t slot = next[m * n_in + cols[k]]++;
        csc_rows[slot] = rows[k] - m * n_out;
        csc_perm[slot] = k;
    }
}

template void to_feature_major<float>(const float*, int64_t, int64_t, int64_t, int64_t, float*, int);
template void to_feature_major<double>(const double*, int64_t, int64_t, int64_t, int64_t, double*, int);
template void from_feature_major<float>(const float*, int64_t, int64_t, int64_t, int64_t, float*, int);
template void from_feature_major<double>(const double*, int64_t, int64_t, int64_t, int64_t, double*, int);
template void sparse_fm_forward<float>(const float*, int64_t, int64_t, int64_t, const CsrView&, const float*,
                                       const float*, bool, float*, int);
template void sparse_fm_forward<double>(const double*, int64_t, int64_t, int64_t, const CsrView&, const double*,
                                        const double*, bool, double*, int);
template void sparse_fm_backward<float>(const float*, const float*, const float*, int64_t, int64_t, int64_t,
                                        const CsrView&, const float*, const CsrView&, const int64_t*, float*,
                                        float*, float*, int);
template void sparse_fm_backward<double>(const double*, const double*, const double*, int64_t, int64_t, int64_t,
                                         const CsrView&, const double*, const CsrView&, const int64_t*, double*,
                                         double*, double*, int);

}  // namespace plantseek
