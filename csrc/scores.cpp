#include "scores.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "common.h"

namespace plantseek {

namespace {

constexpr int kRadixBits = 16;
constexpr int64_t kBuckets = int64_t(1) << kRadixBits;

// k outside (0, n): keep everything or nothing without looking at the keys.
bool trivial_threshold(int64_t n, int64_t k, Threshold& t) {
    if (k >= n) {
        t.keep_all = true;
        return true;
    }
    if (k <= 0) {
        t.keep_none = true;
        return true;
    }
    return false;
}

// The exact k-th largest key, given the histogram of the keys' top 16 bits; 0 < k < n.
// Visits keys in index order: visit(callback) calls callback(key) for every element.
template <class Visit>
Threshold threshold_given_histogram(Visit visit, int64_t k, const std::vector<int64_t>& hist) {
    Threshold t;
    int64_t above = 0;
    int64_t bucket = kBuckets - 1;
    for (; bucket >= 0; --bucket) {
        if (above + hist[bucket] >= k) break;
        above += hist[bucket];
    }
    const int64_t rank = k - above;  // 1 <= rank <= hist[bucket]
    std::vector<uint64_t> in_bucket;
    in_bucket.reserve(static_cast<size_t>(hist[bucket]));
    visit([&](uint64_t key) {
        if (static_cast<int64_t>(key >> (64 - kRadixBits)) == bucket) in_bucket.push_back(key);
    });
    std::nth_element(in_bucket.begin(), in_bucket.begin() + (rank - 1), in_bucket.end(),
                     std::greater<uint64_t>());
    t.key = in_bucket[rank - 1];
    int64_t greater = 0;
    for (uint64_t key : in_bucket) greater += key > t.key;
    t.need = rank - greater;
    return t;
}

// Up to this many keys, selecting among a copy beats the histogram, whose 2^16 buckets cost the same to clear
// and scan whatever n is. Measured (one thread, 8 networks of 30.6k parameters, float32): 306 eligible each
// 1.59 -> 0.85 ms; 30.3k eligible each 2.05 ms with the histogram, 2.56 ms by selection.
constexpr int64_t kDirectSelect = int64_t(1) << 13;

template <class Visit>
Threshold threshold_of(Visit visit, int64_t n, int64_t k) {
    Threshold t;
    if (trivial_threshold(n, k, t)) return t;
    if (n <= kDirectSelect) {
        std::vector<uint64_t> keys;
        keys.reserve(static_cast<size_t>(n));
        visit([&](uint64_t key) { keys.push_back(key); });
        std::nth_element(keys.begin(), keys.begin() + (k - 1), keys.end(), std::greater<uint64_t>());
        t.key = keys[k - 1];
        int64_t greater = 0;
        for (uint64_t key : keys) greater += key > t.key;
        t.need = k - greater;
        return t;
    }
    std::vector<int64_t> hist(kBuckets, 0);
    visit([&](uint64_t key) { ++hist[key >> (64 - kRadixBits)]; });
    return threshold_given_histogram(visit, k, hist);
}

// Applies a threshold to keys in index order; `need` is consumed as equal keys are met.
struct Keeper {
    Threshold t;
    int64_t left;
    explicit Keeper(const Threshold& th) : t(th), left(th.need) {}
    bool operator()(uint64_t key) {
        if (t.keep_all) return true;
        if (t.keep_none) return false;
        if (key > t.key) return true;
        if (key == t.key && left > 0) {
            --left;
            return true;
        }
        return false;
    }
};

}  // namespace

// Exact top-k of keys whose top-16-bit histogram is already known.
Threshold threshold_from_histogram(const uint64_t* keys, int64_t n, int64_t k, const std::vector<int64_t>& hist) {
    Threshold t;
    if (trivial_threshold(n, k, t)) return t;
    return threshold_given_histogram(
        [&](auto&& f) {
            for (int64_t i = 0; i < n; ++i) f(keys[i]);
        },
        k, hist);
}

Threshold select_threshold(const uint64_t* keys, int64_t n, int64_t k) {
    return threshold_of(
        [&](auto&& f) {
            for (int64_t i = 0; i < n; ++i) f(keys[i]);
        },
        n, k);
}

template <class T>
void topk_masks(const std::vector<const T*>& values, const std::vector<const uint8_t*>& eligible,
                const std::vector<int64_t>& sizes, const std::vector<int64_t>& group, const std::vector<int64_t>& k,
                int64_t M, const std::vector<uint8_t*>& masks, int n_threads) {
    const int64_t S = static_cast<int64_t>(sizes.size());
    const int64_t G = static_cast<int64_t>(k.size());
    const int threads = resolve_threads(n_threads);
    const int64_t items = M * G;
    // Segments outside every group keep their eligibility (everything when no eligibility is given).
    for (int64_t m = 0; m < M; ++m)
        for (int64_t s = 0; s < S; ++s)
            if (group[s] < 0) {
                const uint8_t* el = eligible.empty() ? nullptr : eligible[m * S + s];
                if (el) std::memcpy(masks[m * S + s], el, static_cast<size_t>(sizes[s]));
                else std::memset(masks[m * S + s], 1, static_cast<size_t>(sizes[s]));
            }
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (items > 1)
    for (int64_t item = 0; item < items; ++item) {
        const int64_t m = item / G;
        const int64_t g = item % G;
        auto eligible_of = [&](int64_t s) { return eligible.empty() ? nullptr : eligible[m * S + s]; };
        int64_t n = 0;
        for (int64_t s = 0; s < S; ++s) {
            if (group[s] != g) continue;
            const uint8_t* el = eligible_of(s);
            if (!el) {
                n += sizes[s];
            } else {
                for (int64_t i = 0; i < sizes[s]; ++i) n += el[i];
            }
        }
        auto visit = [&](auto&& f) {
            for (int64_t s = 0; s < S; ++s) {
                if (group[s] != g) continue;
                const T* v = values[m * S + s];
                const uint8_t* el = eligible_of(s);
                for (int64_t i = 0; i < sizes[s]; ++i)
                    if (!el || el[i]) f(order_key(static_cast<double>(v[i])));
            }
        };
        Keeper keep(threshold_of(visit, n, k[g]));
        for (int64_t s = 0; s < S; ++s) {
            if (group[s] != g) continue;
            const T* v = values[m * S + s];
            const uint8_t* el = eligible_of(s);
            uint8_t* out = masks[m * S + s];
            for (int64_t i = 0; i < sizes[s]; ++i)
                out[i] = (!el || el[i]) ? keep(order_key(static_cast<double>(v[i]))) : 0;
        }
    }
}

template void topk_masks<float>(const std::vector<const float*>&, const std::vector<const uint8_t*>&,
                                const std::vector<int64_t>&,
                                const std::vector<int64_t>&, const std::vector<int64_t>&, int64_t,
                                const std::vector<uint8_t*>&, int);
template void topk_masks<double>(const std::vector<const double*>&, const std::vector<const uint8_t*>&,
                                 const std::vector<int64_t>&,
                                 const std::vector<int64_t>&, const std::vector<int64_t>&, int64_t,
                                 const std::vector<uint8_t*>&, int);

namespace {

// An entry of a row under selection: its order key and column. `better` ranks larger keys first and, among
// equal keys, lower columns first (the selection's tie rule).
struct Ranked {
    uint64_t key;
    int64_t col;
};
inline bool better(const Ranked& a, const Ranked& b) { return a.key > b.key || (a.key == b.key && a.col < b.col); }

// The k best of one row into out[0..P) (zeroed first); `pool` is scratch storage.
template <class T>
void row_topk(const T* v, const uint8_t* el, int64_t P, int64_t k, uint8_t* out, std::vector<Ranked>& pool) {
    std::memset(out, 0, static_cast<size_t>(P));
    if (k <= 0) return;
    pool.clear();
    int64_t n = 0;
    if (el == nullptr) n = P;
    else
        for (int64_t i = 0; i < P; ++i) n += el[i];
    if (k >= n) {
        for (int64_t i = 0; i < P; ++i) out[i] = el == nullptr ? 1 : el[i];
        return;
    }
    auto worse_first = [](const Ranked& a, const Ranked& b) { return better(a, b); };  // heap top: the worst kept
    if (8 * k <= n) {
        // columns arrive in increasing order, so a candidate equal in key to the worst kept one ranks below it
        for (int64_t i = 0; i < P; ++i) {
            if (el != nullptr && !el[i]) continue;
            const uint64_t key = order_key(static_cast<double>(v[i]));
            if (static_cast<int64_t>(pool.size()) < k) {
                pool.push_back({key, i});
                std::push_heap(pool.begin(), pool.end(), worse_first);
            } else if (key > pool.front().key) {
                std::pop_heap(pool.begin(), pool.end(), worse_first);
                pool.back() = {key, i};
                std::push_heap(pool.begin(), pool.end(), worse_first);
            }
        }
    } else {
        for (int64_t i = 0; i < P; ++i)
            if (el == nullptr || el[i]) pool.push_back({order_key(static_cast<double>(v[i])), i});
        std::nth_element(pool.begin(), pool.begin() + (k - 1), pool.end(), better);
        pool.resize(static_cast<size_t>(k));
    }
    for (const Ranked& r : pool) out[r.col] = 1;
}

}  // namespace

template <class T>
void rows_topk(const T* scores, const uint8_t* eligible, int64_t M, int64_t P, int64_t k, uint8_t* out,
               int n_threads) {
    const int threads = resolve_threads(n_threads);
#pragma omp parallel num_threads(threads) if (M > 1 && threads > 1 && M * P > (int64_t(1) << 16))
    {
        std::vector<Ranked> pool;
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; ++m)
            row_topk<T>(scores + m * P, eligible == nullptr ? nullptr : eligible + m * P, P, k, out + m * P, pool);
    }
}

template void rows_topk<float>(const float*, const uint8_t*, int64_t, int64_t, int64_t, uint8_t*, int);
template void rows_topk<double>(const double*, const uint8_t*, int64_t, int64_t, int64_t, uint8_t*, int);

namespace {

// Radix selection of a row's k-th largest value: each level histograms the 11 leading bits in which the
// candidates' order keys differ and keeps the candidates of the bucket that holds the rank, until few are left
// for std::nth_element. A plain std::nth_element over a copy of a 10 100-entry row (one layer of width 100)
// took about as long as torch.topk (its comparisons mispredict), and fixed digits (the keys' top 11 bits, then
// the next) left one row's |scores| in a handful of buckets, so every histogram increment waited on the last.
constexpr int kDigitBits = 11;
constexpr uint64_t kDigitMask = (uint64_t(1) << kDigitBits) - 1;
constexpr int64_t kFewCandidates = 256;

// NaN above every number (torch.topk's order), whatever its sign bit; otherwise `order_key`.
inline uint64_t select_key(double x) { return x != x ? ~uint64_t(0) : order_key(x); }

inline double key_value(uint64_t key) {
    if (key == ~uint64_t(0)) return std::numeric_limits<double>::quiet_NaN();
    const uint64_t bits = (key >> 63) ? (key & ~(uint64_t(1) << 63)) : ~key;
    double x;
    std::memcpy(&x, &bits, sizeof x);
    return x;
}

// The rank-th largest of keys[0..n) (1 <= rank <= n); reorders and overwrites keys. hist: kDigitMask + 1 counts.
uint64_t kth_largest_key(uint64_t* keys, int64_t n, int64_t rank, uint32_t* hist) {
    while (n > kFewCandidates) {
        uint64_t lo = keys[0], hi = keys[0];
        for (int64_t i = 1; i < n; ++i) {
            lo = std::min(lo, keys[i]);
            hi = std::max(hi, keys[i]);
        }
        if (lo == hi) return lo;
        const int top = 63 - __builtin_clzll(lo ^ hi);  // the leading bit in which the candidates differ
        const int shift = std::max(0, top + 1 - kDigitBits);
        std::memset(hist, 0, sizeof(uint32_t) * (kDigitMask + 1));
        for (int64_t i = 0; i < n; ++i) ++hist[(keys[i] >> shift) & kDigitMask];
        int64_t above = 0;
        uint64_t digit = kDigitMask;
        for (; digit > 0; --digit) {
            if (above + hist[digit] >= rank) break;
            above += hist[digit];
        }
        rank -= above;
        int64_t c = 0;
        for (int64_t i = 0; i < n; ++i) {
            const uint64_t key = keys[i];
            keys[c] = key;
            c += ((key >> shift) & kDigitMask) == digit;
        }
        n = c;
    }
    std::nth_element(keys, keys + (rank - 1), keys + n, std::greater<uint64_t>());
    return keys[rank - 1];
}

}  // namespace

namespace {

// One row's k-th largest by the radix selection; keys and hist are the caller's scratch (P and kDigitMask + 1).
template <class T>
T row_kth_largest(const T* v, int64_t P, int64_t k, uint64_t* keys, uint32_t* hist) {
    for (int64_t i = 0; i < P; ++i) keys[i] = select_key(static_cast<double>(v[i]));
    return static_cast<T>(key_value(kth_largest_key(keys, P, k, hist)));
}

}  // namespace

template <class T>
void rows_kth_largest(const T* values, int64_t M, int64_t P, const int64_t* k, T* out, int n_threads) {
    const int threads = resolve_threads(n_threads);
#pragma omp parallel num_threads(threads) if (M > 1 && threads > 1 && M * P > (int64_t(1) << 15))
    {
        std::vector<uint64_t> keys(static_cast<size_t>(P));
        std::vector<uint32_t> hist(static_cast<size_t>(kDigitMask + 1));
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; ++m) out[m] = row_kth_largest<T>(values + m * P, P, k[m], keys.data(), hist.data());
    }
}

template <class T>
void rows_kth_largest_near(const T* values, int64_t M, int64_t P, const int64_t* k, const T* hint, double* band,
                           T* out, int n_threads) {
    const int threads = resolve_threads(n_threads);
#pragma omp parallel num_threads(threads) if (M > 1 && threads > 1 && M * P > (int64_t(1) << 15))
    {
        std::vector<uint64_t> keys(static_cast<size_t>(P));
        std::vector<uint32_t> hist(static_cast<size_t>(kDigitMask + 1));
        std::vector<T> near(static_cast<size_t>(P));
#pragma omp for schedule(static)
        for (int64_t m = 0; m < M; ++m) {
            const T* v = values + m * P;
            const T h = hint[m];
            if (h > 0 && h < std::numeric_limits<T>::max()) {
                const T lo = static_cast<T>(h * (1.0 - band[m])), hi = static_cast<T>(h * (1.0 + band[m]));
                int64_t above = 0, c = 0;
                T* nr = near.data();
                for (int64_t i = 0; i < P; ++i) {  // branch-free: NaN counts above (it ranks largest)
                    const T x = v[i];
                    const bool up = !(x <= hi);
                    above += up;
                    nr[c] = x;
                    c += static_cast<int64_t>(!up & (x >= lo));
                }
                if (above < k[m] && k[m] <= above + c) {
                    const int64_t rank = k[m] - above;
                    std::nth_element(nr, nr + (rank - 1), nr + c, std::greater<T>());
                    out[m] = nr[rank - 1];
                    band[m] = std::max(band[m] * 0.75, 1e-7);
                    continue;
                }
                band[m] = std::min(band[m] * 4.0, 0.5);
            }
            out[m] = row_kth_largest<T>(v, P, k[m], keys.data(), hist.data());
        }
    }
}

template void rows_kth_largest_near<float>(const float*, int64_t, int64_t, const int64_t*, const float*, double*,
                                           float*, int);
template void rows_kth_largest_near<double>(const double*, int64_t, int64_t, const int64_t*, const double*, double*,
                                            double*, int);
template void rows_kth_largest<float>(const float*, int64_t, int64_t, const int64_t*, float*, int);
template void rows_kth_largest<double>(const double*, int64_t, int64_t, const int64_t*, double*, int);

namespace {

// The forward's effective weights of n contiguous entries (restrict pointers: the loop vectorises).
template <class T>
void effective_row(const T* __restrict s, const T* __restrict w, const uint8_t* __restrict e, T* __restrict out,
                   int64_t n, T t) {
    if (e == nullptr) {
        for (int64_t i = 0; i < n; ++i) {
            const T a = std::abs(s[i]);
            out[i] = w[i] * (static_cast<T>(a >= t) + (a - a));
        }
    } else {
        for (int64_t i = 0; i < n; ++i) {
            const T a = std::abs(s[i]);
            out[i] = w[i] * (static_cast<T>((a >= t) & (e[i] != 0)) + (a - a));
        }
    }
}

// One SGD step of n contiguous scores from their contiguous gradient g, and their magnitudes into mags.
template <class T, bool kDecay, bool kMomentum, bool kFirst>
void sgd_row(T* __restrict s, T* __restrict buf, const T* __restrict w, const uint8_t* __restrict e,
             const T* __restrict g, T* __restrict mags, int64_t n, T neg_lr, T momentum, T decay) {
    const T minus_inf = -std::numeric_limits<T>::infinity();
    for (int64_t i = 0; i < n; ++i) {
        T v = s[i];
        const T sign = static_cast<T>(v > 0) - static_cast<T>(v < 0);  // torch.sgn: 0 for NaN
        T d = (w[i] * sign) * g[i];
        if (kDecay) d = std::fma(v, decay, d);  // torch's add with alpha is fused
        if (kMomentum) {
            const T b = kFirst ? d : buf[i] * momentum + d;
            buf[i] = b;
            v = std::fma(b, neg_lr, v);
        } else {
            v = std::fma(d, neg_lr, v);
        }
        s[i] = v;
        const T a = std::abs(v);
        mags[i] = (e == nullptr || e[i] != 0) ? a : minus_inf;
    }
}

template <class T>
using SgdRow = void (*)(T*, T*, const T*, const uint8_t*, const T*, T*, int64_t, T, T, T);

template <class T>
SgdRow<T> sgd_row_for(bool decay, bool momentum, bool first) {
    if (!momentum) return decay ? &sgd_row<T, true, false, false> : &sgd_row<T, false, false, false>;
    if (first) return decay ? &sgd_row<T, true, true, true> : &sgd_row<T, false, true, true>;
    return decay ? &sgd_row<T, true, true, false> : &sgd_row<T, false, true, false>;
}

constexpr int64_t kTile = 32;  // a gradient read across its rows is transposed through tiles of this many rows

}  // namespace

template <class T>
void scored_effective(const std::vector<ScoredParam<T>>& params, const T* thresholds, int64_t M, int n_threads) {
    const int threads = resolve_threads(n_threads);
    for (const ScoredParam<T>& p : params) {
        const int64_t n = p.R * p.C;
        const T* thr = thresholds + p.group * M;
#pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1 && M > 1 && M * n > (int64_t(1) << 16))
        for (int64_t m = 0; m < M; ++m)
            effective_row<T>(p.scores + m * n, p.weights + m * n, p.eligible ? p.eligible + m * n : nullptr,
                             p.effective + m * n, n, thr[m]);
    }
}

template <class T>
void scored_sgd_step(const std::vector<ScoredParam<T>>& params, int64_t M, T lr, T momentum, T weight_decay,
                     bool first, int n_threads) {
    const int threads = resolve_threads(n_threads);
    const SgdRow<T> row = sgd_row_for<T>(weight_decay != 0, momentum != 0, first);
    for (const ScoredParam<T>& p : params) {
        const int64_t n = p.R * p.C, R = p.R, C = p.C;
        const int64_t gm = p.grad_strides[0], gr = p.grad_strides[1], gc = p.grad_strides[2];
#pragma omp parallel num_threads(threads) if (threads > 1 && M > 1 && M * n > (int64_t(1) << 16))
        {
            std::vector<T> tile(static_cast<size_t>(kTile * C));
#pragma omp for schedule(static)
            for (int64_t m = 0; m < M; ++m) {
                const int64_t base = m * n;
                const uint8_t* e = p.eligible ? p.eligible + base : nullptr;
                T* mags = p.mags + m * p.P + p.offset;
                const T* g = p.grad + m * gm;
                for (int64_t r0 = 0; r0 < R; r0 += kTile) {
                    const int64_t r1 = std::min(R, r0 + kTile);
                    // gather the gradient rows [r0, r1) contiguously, reading along the buffer's fast axis
                    if (gc == 1) {
                        for (int64_t r = r0; r < r1; ++r) std::memcpy(&tile[(r - r0) * C], g + r * gr, C * sizeof(T));
                    } else {
                        for (int64_t c = 0; c < C; ++c)
                            for (int64_t r = r0; r < r1; ++r) tile[(r - r0) * C + c] = g[r * gr + c * gc];
                    }
                    for (int64_t r = r0; r < r1; ++r) {
                        const int64_t i = base + r * C;
                        row(p.scores + i, p.momentum + i, p.weights + i, e ? e + r * C : nullptr,
                            tile.data() + (r - r0) * C, mags + r * C, C, -lr, momentum, weight_decay);
                    }
                }
            }
        }
    }
}

template void scored_effective<float>(const std::vector<ScoredParam<float>>&, const float*, int64_t, int);
template void scored_effective<double>(const std::vector<ScoredParam<double>>&, const double*, int64_t, int);
template void scored_sgd_step<float>(const std::vector<ScoredParam<float>>&, int64_t, float, float, float, bool, int);
template void scored_sgd_step<double>(const std::vector<ScoredParam<double>>&, int64_t, double, double, double, bool,
                                      int);

namespace {

// The kept parameters of one segment in index order: weight entries carry (row, col), biases (row, 0);
// a holds |theta|.
struct KeptEntry {
    int32_t row;
    int32_t col;
    double a;
};

struct KeptSegment {
    std::vector<KeptEntry> e;
    size_t size() const { return e.size(); }
};

// Buffers of one thread, reused from network to network (fresh memory is expensive to fault in).
struct SynflowWorkspace {
    std::vector<KeptSegment> seg;
    std::vector<std::vector<double>> h, g, score;
    std::vector<std::vector<uint64_t>> group_keys;
    std::vector<std::vector<int64_t>> group_hist;
    std::vector<int64_t> key_offset;
};

void synflow_one(const SynflowProblem& p, int64_t m, SynflowWorkspace& work) {
    const int64_t L = static_cast<int64_t>(p.widths.size()) - 1;
    work.seg.resize(static_cast<size_t>(2 * L));
    std::vector<KeptSegment>& seg = work.seg;
    for (int64_t l = 0; l < L; ++l) {
        const int64_t n_in = p.widths[l], n_out = p.widths[l + 1];
        const double* W = p.weights[m * L + l];
        const uint8_t* wm = p.init_weight_masks[m * L + l];
        KeptSegment& ws = seg[2 * l];
        int64_t count = 0;
        for (int64_t e = 0; e < n_out * n_in; ++e) count += wm[e] != 0;
        ws.e.resize(static_cast<size_t>(count));
        size_t pos = 0;
        for (int64_t j = 0; j < n_out; ++j) {
            const uint8_t* mrow = wm + j * n_in;
            const double* wrow = W + j * n_in;
            for (int64_t i = 0; i < n_in; ++i)
                if (mrow[i]) {
                    ws.e[pos].row = static_cast<int32_t>(j);
                    ws.e[pos].col = static_cast<int32_t>(i);
                    ws.e[pos].a = std::fabs(wrow[i]);
                    ++pos;
                }
        }
        const double* b = p.biases[m * L + l];
        const uint8_t* bm = p.init_bias_masks[m * L + l];
        KeptSegment& bs = seg[2 * l + 1];
        bs.e.clear();
        for (int64_t j = 0; j < n_out; ++j)
            if (bm[j]) {
                bs.e.push_back(KeptEntry{static_cast<int32_t>(j), 0, std::fabs(b[j])});
            }
    }
    work.h.resize(static_cast<size_t>(L + 1));
    work.g.resize(static_cast<size_t>(L + 1));
    work.score.resize(static_cast<size_t>(2 * L));
    work.group_keys.resize(static_cast<size_t>(p.n_groups));
    work.group_hist.resize(static_cast<size_t>(p.n_groups));
    for (auto& hist : work.group_hist) hist.resize(static_cast<size_t>(kBuckets));
    work.key_offset.assign(static_cast<size_t>(2 * L), 0);
    auto& h = work.h;
    auto& g = work.g;
    auto& score = work.score;
    auto& group_keys = work.group_keys;
    auto& group_hist = work.group_hist;
    auto& key_offset = work.key_offset;
    const int64_t rounds = std::max<int64_t>(p.rounds, 1);
    for (int64_t r = 0; r < rounds; ++r) {
        // Forward through the linearised network (all quantities are >= 0, so ReLU is the identity).
        h[0].assign(p.widths[0], 1.0);
        for (int64_t l = 0; l < L; ++l) {
            h[l + 1].assign(p.widths[l + 1], 0.0);
            const KeptSegment& ws = seg[2 * l];
            const KeptSegment& bs = seg[2 * l + 1];
            double* out = h[l + 1].data();
            const double* in = h[l].data();
            // Entries are sorted by row: sum each row's run with four independent partial sums (a single
            // running sum would make every addition wait for the previous one).
            const size_t n = ws.size();
            size_t e = 0;
            while (e < n) {
                const int32_t row = ws.e[e].row;
                size_t end = e;
                while (end < n && ws.e[end].row == row) ++end;
                double s0 = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0;
                size_t q = e;
                for (; q + 4 <= end; q += 4) {
                    s0 += ws.e[q].a * in[ws.e[q].col];
                    s1 += ws.e[q + 1].a * in[ws.e[q + 1].col];
                    s2 += ws.e[q + 2].a * in[ws.e[q + 2].col];
                    s3 += ws.e[q + 3].a * in[ws.e[q + 3].col];
                }
                for (; q < end; ++q) s0 += ws.e[q].a * in[ws.e[q].col];
                out[row] += (s0 + s1) + (s2 + s3);
                e = end;
            }
            for (size_t b = 0; b < bs.size(); ++b) out[bs.e[b].row] += bs.e[b].a;
        }
        // Backward: g[l] = dR/d(input of layer l). In pruning rounds the same pass turns each kept
        // parameter's score into its order key (scores are >= 0, so keys keep their order) and counts the
        // keys' top bits per group, so that the threshold search needs one more pass only.
        const bool pruning = p.rounds > 0;
        if (pruning) {
            for (int64_t grp = 0; grp < p.n_groups; ++grp) {
                int64_t n = 0;
                for (int64_t s = 0; s < 2 * L; ++s)
                    if (p.group[s] == grp) {
                        key_offset[s] = n;
                        n += static_cast<int64_t>(seg[s].size());
                    }
                group_keys[grp].resize(static_cast<size_t>(n));
                std::fill(group_hist[grp].begin(), group_hist[grp].end(), 0);
            }
        }
        g[L].assign(p.widths[L], 1.0);
        for (int64_t l = L - 1; l >= 0; --l) {
            g[l].assign(p.widths[l], 0.0);
            const KeptSegment& ws = seg[2 * l];
            const KeptSegment& bs = seg[2 * l + 1];
            double* gin = g[l].data();
            const double* gout = g[l + 1].data();
            const double* in = h[l].data();
            const int64_t gw = pruning ? p.group[2 * l] : -1;
            const int64_t gb = pruning ? p.group[2 * l + 1] : -1;
            if (gw >= 0) {
                uint64_t* kp = group_keys[gw].data() + key_offset[2 * l];
                int64_t* hist = group_hist[gw].data();
                for (size_t e = 0; e < ws.size(); ++e) {
                    const double go = gout[ws.e[e].row];
                    gin[ws.e[e].col] += ws.e[e].a * go;
                    const uint64_t key = order_key((go * in[ws.e[e].col]) * ws.e[e].a);
                    kp[e] = key;
                    ++hist[key >> (64 - kRadixBits)];
                }
            } else {
                for (size_t e = 0; e < ws.size(); ++e) gin[ws.e[e].col] += ws.e[e].a * gout[ws.e[e].row];
            }
            if (gb >= 0) {
                uint64_t* kp = group_keys[gb].data() + key_offset[2 * l + 1];
                int64_t* hist = group_hist[gb].data();
                for (size_t e = 0; e < bs.size(); ++e) {
                    const uint64_t key = order_key(gout[bs.e[e].row] * bs.e[e].a);
                    kp[e] = key;
                    ++hist[key >> (64 - kRadixBits)];
                }
            }
        }
        if (p.rounds == 0) {
            for (int64_t l = 0; l < L; ++l) {
                const KeptSegment& ws = seg[2 * l];
                const KeptSegment& bs = seg[2 * l + 1];
                score[2 * l].resize(ws.size());
                score[2 * l + 1].resize(bs.size());
                const double* gout = g[l + 1].data();
                const double* in = h[l].data();
                for (size_t e = 0; e < ws.size(); ++e) score[2 * l][e] = (gout[ws.e[e].row] * in[ws.e[e].col]) * ws.e[e].a;
                for (size_t e = 0; e < bs.size(); ++e) score[2 * l + 1][e] = gout[bs.e[e].row] * bs.e[e].a;
            }
        }
        if (p.rounds == 0) {
            for (int64_t l = 0; l < L; ++l) {
                const int64_t n_in = p.widths[l], n_out = p.widths[l + 1];
                double* ws_out = p.weight_scores[m * L + l];
                double* bs_out = p.bias_scores[m * L + l];
                std::fill(ws_out, ws_out + n_out * n_in, 0.0);
                std::fill(bs_out, bs_out + n_out, 0.0);
                const KeptSegment& ws = seg[2 * l];
                const KeptSegment& bs = seg[2 * l + 1];
                for (size_t e = 0; e < ws.size(); ++e)
                    ws_out[int64_t(ws.e[e].row) * n_in + ws.e[e].col] = score[2 * l][e];
                for (size_t e = 0; e < bs.size(); ++e) bs_out[bs.e[e].row] = score[2 * l + 1][e];
            }
            return;
        }
        // Prune each group to its count for this round; candidates are the parameters still kept.
        for (int64_t grp = 0; grp < p.n_groups; ++grp) {
            const std::vector<uint64_t>& keys = group_keys[grp];
            Keeper keep(threshold_from_histogram(keys.data(), static_cast<int64_t>(keys.size()),
                                                 p.keep[r * p.n_groups + grp], group_hist[grp]));
            if (keep.t.keep_all) continue;
            size_t pos = 0;
            for (int64_t s = 0; s < 2 * L; ++s) {
                if (p.group[s] != grp) continue;
                KeptSegment& ks = seg[s];
                size_t w = 0;
                for (size_t e = 0; e < ks.size(); ++e) {
                    if (keep(keys[pos++])) {
                        if (w != e) ks.e[w] = ks.e[e];
                        ++w;
                    }
                }
                ks.e.resize(w);
            }
        }
    }
    for (int64_t l = 0; l < L; ++l) {
        const int64_t n_in = p.widths[l], n_out = p.widths[l + 1];
        uint8_t* wm = p.out_weight_masks[m * L + l];
        uint8_t* bm = p.out_bias_masks[m * L + l];
        std::memset(wm, 0, static_cast<size_t>(n_out * n_in));
        std::memset(bm, 0, static_cast<size_t>(n_out));
        const KeptSegment& ws = seg[2 * l];
        const KeptSegment& bs = seg[2 * l + 1];
        for (size_t e = 0; e < ws.size(); ++e) wm[int64_t(ws.e[e].row) * n_in + ws.e[e].col] = 1;
        for (size_t e = 0; e < bs.size(); ++e) bm[bs.e[e].row] = 1;
    }
}

}  // namespace

void synflow(const SynflowProblem& p, int n_threads) {
    const int threads = resolve_threads(n_threads);
#pragma omp parallel num_threads(threads) if (p.M > 1)
    {
        SynflowWorkspace work;
#pragma omp for schedule(dynamic, 1)
        for (int64_t m = 0; m < p.M; ++m) synflow_one(p, m, work);
    }
}

}  // namespace plantseek
