// Plain C++ tests of the CPU kernels (no Python). Build with -DPLANTSEEK_BUILD_TESTS=ON, and with
// -DPLANTSEEK_ASAN=ON to run them under AddressSanitizer (see docs/native.md).
#include <cassert>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "masks.h"
#include "planting_search.h"
#include "scores.h"
#include "sparse_linear.h"
#include "sparse_stack.h"

using namespace plantseek;

namespace {

std::mt19937 rng(1234);

double uniform() { return std::uniform_real_distribution<double>(0.0, 1.0)(rng); }

std::vector<uint8_t> random_bytes(int64_t n, double p) {
    std::vector<uint8_t> v(static_cast<size_t>(n));
    for (auto& x : v) x = uniform() < p;
    return v;
}

void test_pack_and_overlap() {
    for (int64_t n : {0, 1, 63, 64, 65, 200, 1000}) {
        auto a = random_bytes(n, 0.3);
        auto r = random_bytes(n, 0.5);
        const int64_t words = (n + 63) / 64;
        std::vector<int64_t> offsets = {0, words};
        std::vector<int64_t> sizes = {n};
        std::vector<uint64_t> pa(static_cast<size_t>(std::max<int64_t>(words, 1))), pr(pa.size());
        const uint8_t* sa[] = {a.data()};
        const uint8_t* sr[] = {r.data()};
        pack_bits(sa, sizes.data(), 1, offsets.data(), pa.data());
        pack_bits(sr, sizes.data(), 1, offsets.data(), pr.data());
        for (int64_t i = 0; i < n; ++i) assert(((pa[i / 64] >> (i % 64)) & 1) == a[i]);
        int64_t inter = 0, kept = 0;
        overlap_counts(pa.data(), 1, words, pr.data(), offsets.data(), 1, &inter, &kept, 2);
        int64_t want_inter = 0, want_kept = 0;
        for (int64_t i = 0; i < n; ++i) {
            want_inter += a[i] & r[i];
            want_kept += a[i];
        }
        assert(inter == want_inter && kept == want_kept);
    }
}

void test_reachability() {
    // 2 -> 2 -> 1; input 0 -> hidden 0 -> output; hidden 1 has a bias and no outgoing weight.
    std::vector<uint8_t> w1 = {1, 0, 0, 0}, b1 = {0, 1}, w2 = {1, 0}, b2 = {1};
    LayeredMask mask;
    mask.weight = {w1.data(), w2.data()};
    mask.bias = {b1.data(), b2.data()};
    std::vector<int64_t> widths = {2, 2, 1};
    int64_t kept[4], eff[4], dead[1];
    reachability(mask, widths, kept, eff, dead);
    assert(kept[0] == 1 && kept[1] == 1 && kept[2] == 1 && kept[3] == 1);
    assert(eff[0] == 1 && eff[1] == 0 && eff[2] == 1 && eff[3] == 1);
    assert(dead[0] == 1);
}

void test_plant_search() {
    // Two host neurons; the second matches the signs of the target.
    std::vector<double> hw = {-1.0, 2.0, 1.0, 2.0};  // (2, 2)
    std::vector<double> hb = {0.5, 0.5};
    std::vector<int64_t> indptr = {0, 2};
    std::vector<int64_t> cols = {0, 1};
    std::vector<double> vals = {2.0, 4.0};
    std::vector<double> bias_vals = {0.0};
    std::vector<uint8_t> has_bias = {0};
    std::vector<uint8_t> used = {0, 0};
    PlantSearchInput in{hw.data(), hb.data(), 2, 2, indptr.data(), cols.data(), vals.data(), bias_vals.data(),
                        has_bias.data(), 1};
    int64_t chosen = -1;
    double scale = 0;
    uint8_t matched = 0;
    assert(plant_search(in, used.data(), &chosen, &scale, &matched, 2));
    assert(chosen == 1 && matched == 1 && std::fabs(scale - 0.5) < 1e-15 && used[1] == 1);
    std::vector<uint8_t> all_used = {1, 1};
    assert(!plant_search(in, all_used.data(), &chosen, &scale, &matched, 1));
}

template <class T>
void test_sparse_linear(int64_t M, int64_t B, int64_t n_in, int64_t n_out, double density) {
    std::vector<T> W(static_cast<size_t>(M * n_out * n_in));
    std::vector<uint8_t> mask = random_bytes(M * n_out * n_in, density);
    for (auto& w : W) w = static_cast<T>(uniform() - 0.5);
    std::vector<int64_t> indptr(static_cast<size_t>(M * n_out + 1), 0), cols;
    std::vector<T> vals;
    for (int64_t r = 0; r < M * n_out; ++r) {
        for (int64_t i = 0; i < n_in; ++i)
            if (mask[r * n_in + i]) {
                cols.push_back(i);
                vals.push_back(W[r * n_in + i]);
            }
        indptr[r + 1] = static_cast<int64_t>(cols.size());
    }
    const int64_t nnz = static_cast<int64_t>(cols.size());
    // CSC: rows c = m * n_in + i
    std::vector<int64_t> csc_indptr(static_cast<size_t>(M * n_in + 1), 0), csc_rows, csc_perm;
    for (int64_t m = 0; m < M; ++m)
        for (int64_t i = 0; i < n_in; ++i) {
            for (int64_t j = 0; j < n_out; ++j) {
                const int64_t r = m * n_out + j;
                for (int64_t e = indptr[r]; e < indptr[r + 1]; ++e)
                    if (cols[e] == i) {
                        csc_rows.push_back(j);
                        csc_perm.push_back(e);
                    }
            }
            csc_indptr[m * n_in + i + 1] = static_cast<int64_t>(csc_rows.size());
        }
    std::vector<T> x(static_cast<size_t>(M * B * n_in)), bias(static_cast<size_t>(M * n_out));
    for (auto& v : x) v = static_cast<T>(uniform() - 0.5);
    for (auto& v : bias) v = static_cast<T>(uniform() - 0.5);
    const int64_t Bp = padded_batch(B);
    // feature-major input, padding lanes zero
    std::vector<T> xt(static_cast<size_t>(M * n_in * Bp) + 1, T(0)), yt(static_cast<size_t>(M * n_out * Bp) + 1);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t b = 0; b < B; ++b)
            for (int64_t i = 0; i < n_in; ++i) xt[(m * n_in + i) * Bp + b] = x[(m * B + b) * n_in + i];
    CsrView csr{indptr.data(), cols.data(), n_out, n_in};
    const bool relu = (M + B) % 2 == 0;
    sparse_fm_forward<T>(xt.data(), M, B, Bp, csr, vals.data(), bias.data(), relu, yt.data(), 2);
    const double tol = sizeof(T) == 4 ? 1e-4 : 1e-12;
    std::vector<double> pre(static_cast<size_t>(M * B * n_out));
    for (int64_t m = 0; m < M; ++m)
        for (int64_t b = 0; b < Bp; ++b)
            for (int64_t j = 0; j < n_out; ++j) {
                const T got = yt[(m * n_out + j) * Bp + b];
                if (b >= B) {
                    assert(got == T(0));
                    continue;
                }
                double want = bias[m * n_out + j];
                for (int64_t i = 0; i < n_in; ++i)
                    if (mask[(m * n_out + j) * n_in + i]) want += double(W[(m * n_out + j) * n_in + i]) * x[(m * B + b) * n_in + i];
                pre[(m * B + b) * n_out + j] = want;
                if (relu && want < 0) want = 0;
                assert(std::fabs(double(got) - want) < tol * (1 + n_in));
            }
    std::vector<T> gyt(static_cast<size_t>(M * n_out * Bp) + 1);
    for (auto& v : gyt) v = static_cast<T>(uniform() - 0.5);  // padding lanes too: they must not count
    std::vector<T> gx(static_cast<size_t>(M * n_in * Bp) + 1), gvals(static_cast<size_t>(nnz) + 1),
        gbias(static_cast<size_t>(M * n_out) + 1);
    CsrView csc{csc_indptr.data(), csc_rows.data(), n_in, n_out};
    sparse_fm_backward<T>(gyt.data(), xt.data(), relu ? yt.data() : nullptr, M, B, Bp, csr, vals.data(), csc,
                          csc_perm.data(), gx.data(), gvals.data(), gbias.data(), 2);
    auto g = [&](int64_t m, int64_t b, int64_t j) {
        const double v = gyt[(m * n_out + j) * Bp + b];
        return relu && pre[(m * B + b) * n_out + j] <= 0 ? 0.0 : v;
    };
    for (int64_t m = 0; m < M; ++m)
        for (int64_t i = 0; i < n_in; ++i)
            for (int64_t b = 0; b < Bp; ++b) {
                double want = 0;
                if (b < B)
                    for (int64_t j = 0; j < n_out; ++j)
                        if (mask[(m * n_out + j) * n_in + i]) want += double(W[(m * n_out + j) * n_in + i]) * g(m, b, j);
                assert(std::fabs(double(gx[(m * n_in + i) * Bp + b]) - want) < tol * (1 + n_out));
            }
    for (int64_t r = 0; r < M * n_out; ++r) {
        const int64_t m = r / n_out, j = r % n_out;
        double want_b = 0;
        for (int64_t b = 0; b < B; ++b) want_b += g(m, b, j);
        assert(std::fabs(double(gbias[r]) - want_b) < tol * (1 + B));
        for (int64_t e = indptr[r]; e < indptr[r + 1]; ++e) {
            double want = 0;
            for (int64_t b = 0; b < B; ++b) want += g(m, b, j) * x[(m * B + b) * n_in + cols[e]];
            assert(std::fabs(double(gvals[e]) - want) < tol * (1 + B));
        }
    }
}

// CSR and CSC structure of a random (M, n_out, n_in) mask.
struct RandomPattern {
    int64_t n_out, n_in;
    std::vector<int64_t> indptr, cols, csc_indptr, csc_rows, csc_perm;
    RandomPattern(int64_t M, int64_t n_out_, int64_t n_in_, double density) : n_out(n_out_), n_in(n_in_) {
        indptr.assign(static_cast<size_t>(M * n_out + 1), 0);
        std::vector<std::vector<std::pair<int64_t, int64_t>>> by_col(static_cast<size_t>(M * n_in));
        for (int64_t m = 0; m < M; ++m)
            for (int64_t j = 0; j < n_out; ++j) {
                for (int64_t i = 0; i < n_in; ++i)
                    if (uniform() < density) {
                        by_col[m * n_in + i].push_back({j, static_cast<int64_t>(cols.size())});
                        cols.push_back(i);
                    }
                indptr[m * n_out + j + 1] = static_cast<int64_t>(cols.size());
            }
        csc_indptr.assign(static_cast<size_t>(M * n_in + 1), 0);
        for (int64_t c = 0; c < M * n_in; ++c) {
            for (auto& q : by_col[c]) {
                csc_rows.push_back(q.first);
                csc_perm.push_back(q.second);
            }
            csc_indptr[c + 1] = static_cast<int64_t>(csc_rows.size());
        }
    }
    CsrView csr() const { return CsrView{indptr.data(), cols.data(), n_out, n_in}; }
    CsrView csc() const { return CsrView{csc_indptr.data(), csc_rows.data(), n_in, n_out}; }
    int64_t nnz() const { return static_cast<int64_t>(cols.size()); }
};

// Random patterns, values and biases of a stack of M networks with the given widths.
template <class T>
struct RandomStack {
    std::vector<RandomPattern> pats;
    std::vector<std::vector<T>> vals, bias;
    std::vector<StackLayer> layers;
    RandomStack(int64_t M, const std::vector<int64_t>& widths, double density) {
        const size_t L = widths.size() - 1;
        for (size_t l = 0; l < L; ++l) pats.emplace_back(M, widths[l + 1], widths[l], density);
        vals.resize(L);
        bias.resize(L);
        for (size_t l = 0; l < L; ++l) {
            vals[l].resize(static_cast<size_t>(pats[l].nnz()));
            bias[l].resize(static_cast<size_t>(M * widths[l + 1]));
            for (auto& v : vals[l]) v = static_cast<T>(uniform() - 0.5);
            for (auto& v : bias[l]) v = static_cast<T>(uniform() - 0.5);
            layers.push_back(StackLayer{pats[l].csr(), pats[l].csc(), pats[l].csc_perm.data()});
        }
    }
    // Parameter pointers into copies of the values and biases (or into this stack's own).
    static std::vector<StackParams<T>> params(std::vector<std::vector<T>>& v, std::vector<std::vector<T>>& b) {
        std::vector<StackParams<T>> out;
        for (size_t l = 0; l < v.size(); ++l) out.push_back(StackParams<T>{v[l].data(), b[l].data(), nullptr});
        return out;
    }
};

// SparseStack against the layer kernels: its outputs equal a chain of sparse_fm_forward, and one step with
// SGD (lr) moves each value by -lr times the gradient of sparse_fm_backward.
template <class T>
void test_sparse_stack(int64_t M, int64_t B, const std::vector<int64_t>& widths, double density, int threads) {
    const int64_t L = static_cast<int64_t>(widths.size()) - 1, Bp = padded_batch(B);
    RandomStack<T> r(M, widths, density);
    const auto& pats = r.pats;
    auto vals = r.vals, bias = r.bias;  // trained in place; r keeps the starting values
    const auto& vals0 = r.vals;
    const auto& bias0 = r.bias;
    StackOptimizer sgd;
    sgd.adam = false;
    SparseStack<T> stack(r.layers, RandomStack<T>::params(vals, bias), M, sgd);
    std::vector<T> x(static_cast<size_t>(M * B * widths[0])), out(static_cast<size_t>(M * B * widths[L]) + 1);
    for (auto& v : x) v = static_cast<T>(uniform() - 0.5);
    stack.forward(x.data(), B, out.data(), threads);
    // the same chain through the layer kernels, keeping every activation
    std::vector<std::vector<T>> acts(static_cast<size_t>(L + 1));
    acts[0].assign(static_cast<size_t>(M * widths[0] * Bp) + 1, T(0));
    to_feature_major<T>(x.data(), M, B, widths[0], Bp, acts[0].data(), 1);
    for (int64_t l = 0; l < L; ++l) {
        acts[l + 1].assign(static_cast<size_t>(M * widths[l + 1] * Bp) + 1, T(0));
        sparse_fm_forward<T>(acts[l].data(), M, B, Bp, pats[l].csr(), vals0[l].data(), bias0[l].data(), l + 1 < L,
                             acts[l + 1].data(), 1);
    }
    std::vector<T> want(out.size());
    from_feature_major<T>(acts[L].data(), M, widths[L], Bp, B, want.data(), 1);
    for (int64_t k = 0; k < M * B * widths[L]; ++k) assert(out[k] == want[k]);
    std::vector<T> gout(static_cast<size_t>(M * B * widths[L]));
    for (auto& v : gout) v = static_cast<T>(uniform() - 0.5);
    const double lr = 0.25;
    stack.backward_step(gout.data(), lr, threads);
    assert(stack.steps() == 1);
    std::vector<T> g(static_cast<size_t>(M * widths[L] * Bp) + 1, T(0));
    to_feature_major<T>(gout.data(), M, B, widths[L], Bp, g.data(), 1);
    for (int64_t l = L - 1; l >= 0; --l) {
        std::vector<T> gx(static_cast<size_t>(M * widths[l] * Bp) + 1), gv(static_cast<size_t>(pats[l].nnz()) + 1),
            gb(static_cast<size_t>(M * widths[l + 1]) + 1);
        sparse_fm_backward<T>(g.data(), acts[l].data(), l + 1 < L ? acts[l + 1].data() : nullptr, M, B, Bp,
                              pats[l].csr(), vals0[l].data(), pats[l].csc(), pats[l].csc_perm.data(), gx.data(),
                              gv.data(), gb.data(), 1);
        for (int64_t e = 0; e < pats[l].nnz(); ++e) assert(vals[l][e] == vals0[l][e] - static_cast<T>(lr) * gv[e]);
        for (int64_t r = 0; r < M * widths[l + 1]; ++r) assert(bias[l][r] == bias0[l][r] - static_cast<T>(lr) * gb[r]);
        g.swap(gx);
    }
}

// train_step against forward + the loss gradient + backward_step on a second stack with the same parameters:
// the same values, biases and losses (cross-entropy with labels, or mean squared error), dead networks frozen
// apart from Adam's momentum.
template <class T>
void test_stack_train_step(int64_t M, int64_t B, const std::vector<int64_t>& widths, bool labelled, int threads) {
    const int64_t L = static_cast<int64_t>(widths.size()) - 1, n = widths[L];
    RandomStack<T> r(M, widths, 0.6);
    auto vals = r.vals, bias = r.bias, vals2 = r.vals, bias2 = r.bias;
    SparseStack<T> fused(r.layers, RandomStack<T>::params(vals, bias), M, StackOptimizer{}),
        split(r.layers, RandomStack<T>::params(vals2, bias2), M, StackOptimizer{});
    std::vector<T> x(static_cast<size_t>(M * B * widths[0])), targets(static_cast<size_t>(M * B * n));
    std::vector<int64_t> labels(static_cast<size_t>(M * B));
    std::vector<uint8_t> alive(static_cast<size_t>(M));
    for (int step = 0; step < 3; ++step) {
        for (auto& v : x) v = static_cast<T>(uniform() - 0.5);
        for (auto& v : targets) v = static_cast<T>(uniform() - 0.5);
        for (auto& v : labels) v = static_cast<int64_t>(uniform() * n) % n;
        for (int64_t m = 0; m < M; ++m) alive[m] = (m + step) % 3 != 0;
        std::vector<T> losses(static_cast<size_t>(M));
        fused.train_step(x.data(), B, labelled ? labels.data() : nullptr, labelled ? nullptr : targets.data(),
                         alive.data(), 1e-2, losses.data(), threads);
        std::vector<T> out(static_cast<size_t>(M * B * n)), g(out.size(), T(0));
        split.forward(x.data(), B, out.data(), threads);
        for (int64_t m = 0; m < M; ++m) {
            double loss = 0;
            for (int64_t b = 0; b < B; ++b) {
                const T* o = out.data() + (m * B + b) * n;
                T* gb = g.data() + (m * B + b) * n;
                if (labelled) {
                    double top = o[0], sum = 0;
                    for (int64_t j = 1; j < n; ++j) top = std::max(top, double(o[j]));
                    for (int64_t j = 0; j < n; ++j) sum += std::exp(double(o[j]) - top);
                    const int64_t y = labels[m * B + b];
                    loss += top + std::log(sum) - o[y];
                    for (int64_t j = 0; j < n; ++j)
                        if (alive[m]) gb[j] = static_cast<T>((std::exp(double(o[j]) - top) / sum - (j == y)) / B);
                } else {
                    for (int64_t j = 0; j < n; ++j) {
                        const double d = double(o[j]) - targets[(m * B + b) * n + j];
                        loss += d * d / n;
                        if (alive[m]) gb[j] = static_cast<T>(2 * d / (B * n));
                    }
                }
            }
            assert(std::fabs(losses[m] - loss / B) < (sizeof(T) == 4 ? 1e-4 : 1e-12) * (1 + std::fabs(loss / B)));
        }
        split.backward_step(g.data(), 1e-2, threads);
        const double tol = sizeof(T) == 4 ? 1e-4 : 1e-12;
        for (int64_t l = 0; l < L; ++l) {
            for (size_t e = 0; e < vals[l].size(); ++e) assert(std::fabs(double(vals[l][e]) - vals2[l][e]) < tol);
            for (size_t r = 0; r < bias[l].size(); ++r) assert(std::fabs(double(bias[l][r]) - bias2[l][r]) < tol);
        }
    }
    assert(fused.steps() == 3 && split.steps() == 3);
}

template <class T>
void test_layout(int64_t M, int64_t B, int64_t n) {
    const int64_t Bp = padded_batch(B);
    std::vector<T> x(static_cast<size_t>(M * B * n) + 1), xt(static_cast<size_t>(M * n * Bp) + 1, T(7)),
        back(static_cast<size_t>(M * B * n) + 1);
    for (auto& v : x) v = static_cast<T>(uniform());
    to_feature_major<T>(x.data(), M, B, n, Bp, xt.data(), 2);
    for (int64_t m = 0; m < M; ++m)
        for (int64_t i = 0; i < n; ++i)
            for (int64_t b = 0; b < Bp; ++b)
                assert(xt[(m * n + i) * Bp + b] == (b < B ? x[(m * B + b) * n + i] : T(0)));
    from_feature_major<T>(xt.data(), M, n, Bp, B, back.data(), 2);
    for (int64_t k = 0; k < M * B * n; ++k) assert(back[k] == x[k]);
}

void test_topk() {
    // ties: keep the lowest indices
    std::vector<double> a = {1, 3, 3, 2, 3};
    std::vector<uint8_t> out(5);
    topk_masks<double>({a.data()}, {}, {5}, {0}, {2}, 1, {out.data()}, 1);
    assert(out == (std::vector<uint8_t>{0, 1, 1, 0, 0}));
    std::vector<uint8_t> eligible = {1, 0, 1, 1, 1};
    topk_masks<double>({a.data()}, {eligible.data()}, {5}, {0}, {3}, 1, {out.data()}, 1);
    assert(out == (std::vector<uint8_t>{0, 0, 1, 1, 1}));
    // order keys
    assert(order_key(-1.0) < order_key(-0.5) && order_key(-0.0) == order_key(0.0) && order_key(0.0) < order_key(1e-300));
    // random against sorting
    for (int trial = 0; trial < 20; ++trial) {
        const int64_t n = 1 + static_cast<int64_t>(uniform() * 3000);
        std::vector<float> v(static_cast<size_t>(n));
        for (auto& x : v) x = static_cast<float>(std::floor(uniform() * 20) - 10);
        const int64_t k = static_cast<int64_t>(uniform() * n);
        std::vector<uint8_t> m(static_cast<size_t>(n));
        topk_masks<float>({v.data()}, {}, {n}, {0}, {k}, 1, {m.data()}, 2);
        int64_t kept = 0;
        for (auto x : m) kept += x;
        assert(kept == k);
        for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < n; ++j)
                if (m[i] && !m[j]) assert(v[i] > v[j] || (v[i] == v[j] && i < j));
    }
}

void test_synflow_scores() {
    // one layer: score(w) = |w| (all-ones input, R = sum of outputs), score(b) = |b|
    std::vector<double> W = {-2.0, 3.0}, b = {-1.5};
    std::vector<uint8_t> wm = {1, 1}, bm = {1};
    std::vector<double> ws(2), bs(1);
    SynflowProblem p;
    p.M = 1;
    p.widths = {2, 1};
    p.weights = {W.data()};
    p.biases = {b.data()};
    p.init_weight_masks = {wm.data()};
    p.init_bias_masks = {bm.data()};
    p.group = {0, 0};
    p.n_groups = 1;
    p.rounds = 0;
    p.weight_scores = {ws.data()};
    p.bias_scores = {bs.data()};
    synflow(p, 1);
    assert(ws[0] == 2.0 && ws[1] == 3.0 && bs[0] == 1.5);
    // two rounds keeping 2 then 1 of the 3 parameters: the largest (|3|) survives
    std::vector<uint8_t> ow(2), ob(1);
    p.rounds = 2;
    p.keep = {2, 1};
    p.out_weight_masks = {ow.data()};
    p.out_bias_masks = {ob.data()};
    synflow(p, 1);
    assert(ow[0] == 0 && ow[1] == 1 && ob[0] == 0);
}

}  // namespace

int main() {
    test_pack_and_overlap();
    test_reachability();
    test_plant_search();
    test_sparse_linear<float>(1, 5, 7, 3, 0.5);
    test_sparse_linear<double>(2, 33, 20, 17, 0.3);
    test_sparse_linear<float>(3, 70, 9, 40, 0.1);
    test_sparse_linear<double>(1, 0, 4, 4, 0.5);
    test_sparse_linear<float>(2, 8, 6, 5, 0.0);
    test_sparse_linear<double>(4, 64, 128, 128, 0.3);  // large enough for the networks-in-parallel branch
    test_sparse_stack<double>(3, 5, {2, 9, 7, 3}, 0.5, 1);
    test_sparse_stack<float>(2, 33, {4, 20, 1}, 0.3, 2);
    test_sparse_stack<double>(8, 32, {3, 100, 100, 2}, 0.5, 2);  // networks in parallel
    test_sparse_stack<float>(1, 1, {1, 5, 4}, 0.0, 1);
    test_stack_train_step<double>(4, 7, {2, 12, 9, 3}, true, 1);
    test_stack_train_step<double>(3, 20, {3, 8, 2}, false, 2);
    test_stack_train_step<float>(8, 32, {2, 100, 100, 4}, true, 2);  // networks in parallel
    test_layout<float>(2, 5, 3);
    test_layout<double>(3, 33, 17);
    test_layout<float>(1, 0, 4);
    test_layout<double>(2, 300, 129);  // several tiles, parallel copy
    test_topk();
    test_synflow_scores();
    std::printf("plantseek C++ tests passed\n");
    return 0;
}
