// pybind11 bindings of the pruning-score kernels (csrc/scores.h): exact top-k masks and SynFlow.
// Python side: plantseek/kernels/scores.py (dispatchers and PyTorch references).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "module.h"
#include "scores.h"

namespace py = pybind11;
using namespace plantseek;
using namespace plantseek::bindings;

namespace {

template <class T>
py::list topk_typed(const py::sequence& outer, const py::object& eligible_obj, const std::vector<int64_t>& group,
                    const std::vector<int64_t>& k, int n_threads) {
    const int64_t M = static_cast<int64_t>(outer.size());
    const int64_t S = static_cast<int64_t>(group.size());
    const int64_t G = static_cast<int64_t>(k.size());
    std::vector<py::array_t<T>> keep_alive;
    std::vector<const T*> values;
    std::vector<int64_t> sizes(S, 0);
    for (int64_t m = 0; m < M; ++m) {
        py::object inner_obj = outer[m];
        if (!py::isinstance<py::sequence>(inner_obj))
            throw py::type_error("scores[" + std::to_string(m) + "] must be a list of arrays");
        auto inner = py::reinterpret_borrow<py::sequence>(inner_obj);
        if (static_cast<int64_t>(inner.size()) != S)
            throw py::value_error("scores[" + std::to_string(m) + "] has " + std::to_string(inner.size()) +
                                  " segments, group has " + std::to_string(S));
        for (int64_t s = 0; s < S; ++s) {
            const std::string here = "scores[" + std::to_string(m) + "][" + std::to_string(s) + "]";
            auto a = expect_array<T>(inner[s], here);
            if (m == 0) sizes[s] = a.size();
            else if (a.size() != sizes[s])
                throw py::value_error(here + " has " + std::to_string(a.size()) + " elements; network 0 has " + std::to_string(sizes[s]));
            const T* p = a.data();
            for (int64_t i = 0; i < static_cast<int64_t>(a.size()); ++i)
                if (p[i] != p[i]) throw py::value_error(here + " contains NaN");
            values.push_back(p);
            keep_alive.push_back(a);
        }
    }
    std::vector<py::array_t<bool>> eligible_alive;
    std::vector<const uint8_t*> eligible;
    if (!eligible_obj.is_none()) {
        std::vector<int64_t> el_sizes;
        auto lists = mask_lists(eligible_obj, "eligible", &el_sizes);
        if (static_cast<int64_t>(lists.size()) != M || el_sizes != sizes)
            throw py::value_error("eligible must have the structure of scores");
        std::vector<int64_t> count(static_cast<size_t>(M * G), 0);
        for (int64_t m = 0; m < M; ++m)
            for (int64_t s = 0; s < S; ++s) {
                const uint8_t* p = reinterpret_cast<const uint8_t*>(lists[m][s].data());
                eligible.push_back(p);
                eligible_alive.push_back(lists[m][s]);
                if (group[s] >= 0)
                    for (int64_t i = 0; i < sizes[s]; ++i) count[m * G + group[s]] += p[i];
            }
        for (int64_t m = 0; m < M; ++m)
            for (int64_t g = 0; g < G; ++g)
                if (k[g] > count[m * G + g])
                    throw py::value_error("cannot keep " + std::to_string(k[g]) + " parameters in group " +
                                          std::to_string(g) + " of network " + std::to_string(m) + ": only " +
                                          std::to_string(count[m * G + g]) + " are eligible");
    } else {
        std::vector<int64_t> total(static_cast<size_t>(G), 0);
        for (int64_t s = 0; s < S; ++s)
            if (group[s] >= 0) total[group[s]] += sizes[s];
        for (int64_t g = 0; g < G; ++g)
            if (k[g] > total[g])
                throw py::value_error("cannot keep " + std::to_string(k[g]) + " parameters in group " +
                                      std::to_string(g) + ": it has only " + std::to_string(total[g]));
    }
    py::list result;
    std::vector<uint8_t*> masks;
    for (int64_t m = 0; m < M; ++m) {
        py::list row;
        for (int64_t s = 0; s < S; ++s) {
            py::array_t<bool> out(keep_alive[m * S + s].request().shape);
            masks.push_back(reinterpret_cast<uint8_t*>(out.mutable_data()));
            row.append(out);
        }
        result.append(row);
    }
    {
        py::gil_scoped_release release;
        topk_masks<T>(values, eligible, sizes, group, k, M, masks, n_threads);
    }
    return result;
}

py::list py_topk_masks(py::object scores_obj, std::vector<int64_t> group, std::vector<int64_t> k, py::object eligible,
                       int n_threads) {
    expect_nonnegative_threads(n_threads);
    if (!py::isinstance<py::sequence>(scores_obj)) throw py::type_error("scores must be a list of lists of arrays");
    auto outer = py::reinterpret_borrow<py::sequence>(scores_obj);
    if (outer.size() == 0) throw py::value_error("scores must hold at least one network");
    const int64_t G = static_cast<int64_t>(k.size());
    for (size_t s = 0; s < group.size(); ++s)
        if (group[s] >= G) throw py::value_error("group[" + std::to_string(s) + "] = " + std::to_string(group[s]) +
                                                 " has no entry in k (" + std::to_string(G) + " groups)");
    for (int64_t g = 0; g < G; ++g)
        if (k[g] < 0) throw py::value_error("k[" + std::to_string(g) + "] must be >= 0");
    py::object first_inner = outer[0];
    if (!py::isinstance<py::sequence>(first_inner))
        throw py::type_error("scores[0] must be a list of arrays");
    if (py::len(first_inner) == 0) {
        if (!group.empty()) throw py::value_error("scores[0] is empty but group has entries");
        py::list r;
        for (size_t m = 0; m < outer.size(); ++m) r.append(py::list());
        return r;
    }
    py::object first = py::reinterpret_borrow<py::sequence>(first_inner)[0];
    return with_float_dtype(first, "scores[0][0]", [&](auto t) {
        return topk_typed<decltype(t)>(outer, eligible, group, k, n_threads);
    });
}

// rows_topk(scores (M, P) float32/float64, k, eligible (M, P) bool or None) -> (M, P) bool
template <class T>
py::array_t<bool> rows_topk_typed(const py::object& scores_obj, int64_t k, const py::object& eligible_obj,
                                  int n_threads) {
    auto a = expect_array<T>(scores_obj, "scores");
    if (a.ndim() != 2) throw py::value_error("scores must be a (rows, entries) matrix, got shape " + shape_string(a));
    const int64_t M = a.shape(0), P = a.shape(1);
    const T* v = a.data();
    for (int64_t i = 0; i < M * P; ++i)
        if (v[i] != v[i]) throw py::value_error("scores contain NaN");
    const uint8_t* el = nullptr;
    py::array_t<bool> el_arr;
    if (!eligible_obj.is_none()) {
        el_arr = expect_array<bool>(eligible_obj, "eligible");
        expect_shape(el_arr, "eligible", {M, P});
        el = reinterpret_cast<const uint8_t*>(el_arr.data());
    }
    if (k < 0) throw py::value_error("k must be >= 0");
    for (int64_t m = 0; m < M; ++m) {
        int64_t n = P;
        if (el != nullptr) {
            n = 0;
            for (int64_t i = 0; i < P; ++i) n += el[m * P + i];
        }
        if (k > n)
            throw py::value_error("k = " + std::to_string(k) + " exceeds the " + std::to_string(n) +
                                  " eligible entries of row " + std::to_string(m));
    }
    py::array_t<bool> out({M, P});
    uint8_t* o = reinterpret_cast<uint8_t*>(out.mutable_data());
    {
        py::gil_scoped_release release;
        rows_topk<T>(v, el, M, P, k, o, n_threads);
    }
    return out;
}

py::array_t<bool> py_rows_topk(py::object scores, int64_t k, py::object eligible, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(scores, "scores", [&](auto t) {
        return rows_topk_typed<decltype(t)>(scores, k, eligible, n_threads);
    });
}

// rows_kth_largest(values (M, P) float32/float64, k (M,) int64 in [1, P]) -> (M,) values
template <class T>
py::array_t<T> rows_kth_typed(const py::object& values_obj, const py::object& k_obj, int n_threads) {
    auto a = expect_array<T>(values_obj, "values");
    if (a.ndim() != 2) throw py::value_error("values must be a (rows, entries) matrix, got shape " + shape_string(a));
    const int64_t M = a.shape(0), P = a.shape(1);
    auto k = expect_array<int64_t>(k_obj, "k");
    expect_shape(k, "k", {M});
    const int64_t* kp = k.data();
    for (int64_t m = 0; m < M; ++m)
        if (kp[m] < 1 || kp[m] > P)
            throw py::value_error("k[" + std::to_string(m) + "] = " + std::to_string(kp[m]) + " is outside [1, " +
                                  std::to_string(P) + "]");
    py::array_t<T> out(M);
    T* o = out.mutable_data();
    const T* v = a.data();
    {
        py::gil_scoped_release release;
        rows_kth_largest<T>(v, M, P, kp, o, n_threads);
    }
    return out;
}

py::object py_rows_kth_largest(py::object values, py::object k, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(values, "values", [&](auto t) -> py::object {
        return rows_kth_typed<decltype(t)>(values, k, n_threads);
    });
}

py::object py_synflow(py::object weights_obj, py::object biases_obj, py::object wmask_obj, py::object bmask_obj,
                      std::vector<int64_t> group, int64_t rounds, std::vector<int64_t> keep, int n_threads) {
    expect_nonnegative_threads(n_threads);
    if (rounds < 0) throw py::value_error("rounds must be >= 0");
    auto seq = [](const py::object& o, const std::string& name) {
        if (!py::isinstance<py::sequence>(o)) throw py::type_error(name + " must be a list (one entry per network)");
        return py::reinterpret_borrow<py::sequence>(o);
    };
    auto W = seq(weights_obj, "weights"), Bs = seq(biases_obj, "biases");
    auto WM = seq(wmask_obj, "weight_masks"), BM = seq(bmask_obj, "bias_masks");
    const int64_t M = static_cast<int64_t>(W.size());
    if (M == 0) throw py::value_error("weights must hold at least one network");
    if (static_cast<int64_t>(Bs.size()) != M || static_cast<int64_t>(WM.size()) != M || static_cast<int64_t>(BM.size()) != M)
        throw py::value_error("weights, biases, weight_masks and bias_masks must hold the same number of networks");
    SynflowProblem p;
    p.M = M;
    p.rounds = rounds;
    std::vector<py::object> keep_alive;
    int64_t L = -1;
    for (int64_t m = 0; m < M; ++m) {
        auto wl = seq(W[m], "weights[" + std::to_string(m) + "]");
        auto bl = seq(Bs[m], "biases[" + std::to_string(m) + "]");
        auto wml = seq(WM[m], "weight_masks[" + std::to_string(m) + "]");
        auto bml = seq(BM[m], "bias_masks[" + std::to_string(m) + "]");
        if (m == 0) {
            L = static_cast<int64_t>(wl.size());
            if (L == 0) throw py::value_error("networks must have at least one layer");
        }
        if (static_cast<int64_t>(wl.size()) != L || static_cast<int64_t>(bl.size()) != L ||
            static_cast<int64_t>(wml.size()) != L || static_cast<int64_t>(bml.size()) != L)
            throw py::value_error("network " + std::to_string(m) + " does not have " + std::to_string(L) + " layers in every list");
        for (int64_t l = 0; l < L; ++l) {
            const std::string at = "[" + std::to_string(m) + "][" + std::to_string(l) + "]";
            auto w = expect_array<double>(wl[l], "weights" + at);
            expect_shape(w, "weights" + at, {-1, -1});
            if (m == 0) {
                if (l == 0) p.widths.push_back(w.shape(1));
                else if (w.shape(1) != p.widths.back())
                    throw py::value_error("weights" + at + " has " + std::to_string(w.shape(1)) + " inputs, layer " +
                                          std::to_string(l - 1) + " has " + std::to_string(p.widths.back()) + " outputs");
                p.widths.push_back(w.shape(0));
            }
            expect_shape(w, "weights" + at, {p.widths[l + 1], p.widths[l]});
            auto b = expect_array<double>(bl[l], "biases" + at);
            expect_shape(b, "biases" + at, {p.widths[l + 1]});
            auto wm = expect_array<bool>(wml[l], "weight_masks" + at);
            expect_shape(wm, "weight_masks" + at, {p.widths[l + 1], p.widths[l]});
            auto bm = expect_array<bool>(bml[l], "bias_masks" + at);
            expect_shape(bm, "bias_masks" + at, {p.widths[l + 1]});
            p.weights.push_back(w.data());
            p.biases.push_back(b.data());
            p.init_weight_masks.push_back(reinterpret_cast<const uint8_t*>(wm.data()));
            p.init_bias_masks.push_back(reinterpret_cast<const uint8_t*>(bm.data()));
            keep_alive.insert(keep_alive.end(), {w, b, wm, bm});
        }
    }
    for (int64_t i = 0; i < static_cast<int64_t>(p.widths.size()); ++i)
        if (p.widths[i] > INT32_MAX) throw py::value_error("layer widths above 2^31 are not supported");
    if (static_cast<int64_t>(group.size()) != 2 * L)
        throw py::value_error("group must have 2 * layers = " + std::to_string(2 * L) + " entries");
    int64_t G = 0;
    for (int64_t g : group) G = std::max(G, g + 1);
    p.group = group;
    p.n_groups = G;
    if (rounds > 0 && static_cast<int64_t>(keep.size()) != rounds * G)
        throw py::value_error("keep must have rounds * groups = " + std::to_string(rounds * G) + " entries, got " +
                              std::to_string(keep.size()));
    for (size_t i = 0; i < keep.size(); ++i)
        if (keep[i] < 0) throw py::value_error("keep entries must be >= 0");
    p.keep = keep;
    py::list out_w, out_b;
    for (int64_t m = 0; m < M; ++m) {
        py::list wl, bl;
        for (int64_t l = 0; l < L; ++l) {
            if (rounds == 0) {
                py::array_t<double> ws({p.widths[l + 1], p.widths[l]});
                py::array_t<double> bs(p.widths[l + 1]);
                p.weight_scores.push_back(ws.mutable_data());
                p.bias_scores.push_back(bs.mutable_data());
                wl.append(ws);
                bl.append(bs);
            } else {
                py::array_t<bool> wm({p.widths[l + 1], p.widths[l]});
                py::array_t<bool> bm(p.widths[l + 1]);
                p.out_weight_masks.push_back(reinterpret_cast<uint8_t*>(wm.mutable_data()));
                p.out_bias_masks.push_back(reinterpret_cast<uint8_t*>(bm.mutable_data()));
                wl.append(wm);
                bl.append(bm);
            }
        }
        out_w.append(wl);
        out_b.append(bl);
    }
    {
        py::gil_scoped_release release;
        synflow(p, n_threads);
    }
    return py::make_tuple(out_w, out_b);
}

// Edge-popup's batched search over buffers the Python side owns (plantseek/kernels/scores.py, ScoreSearch):
// validated once here, then two calls per step without re-validating them.
class PyScoreSearch {
   public:
    PyScoreSearch(const py::sequence& scores, const py::sequence& momentum, const py::sequence& weights,
                  const py::sequence& eligible, const py::sequence& effective, const py::sequence& grads,
                  const py::sequence& mags, const std::vector<int64_t>& group, const std::vector<int64_t>& offset) {
        const size_t J = scores.size();
        if (J == 0) throw py::value_error("scores must hold at least one parameter");
        for (const auto* seq : {&momentum, &weights, &eligible, &effective, &grads})
            if (seq->size() != J) throw py::value_error("scores, momentum, weights, eligible, effective and grads must have one entry per parameter");
        if (group.size() != J || offset.size() != J) throw py::value_error("group and offset need one entry per parameter");
        if (mags.size() == 0) throw py::value_error("mags must hold one matrix per group");
        f64_ = with_float_dtype(scores[0], "scores[0]", [](auto t) { return std::is_same<decltype(t), double>::value; });
        if (f64_) build<double>(scores, momentum, weights, eligible, effective, grads, mags, group, offset, pd_);
        else build<float>(scores, momentum, weights, eligible, effective, grads, mags, group, offset, pf_);
    }

    // k: (G, M) int64, k[g][m] in [1, P_g]: thresholds per group, then every parameter's effective weights.
    void forward(const py::object& k_obj, int n_threads) {
        expect_nonnegative_threads(n_threads);
        auto k = expect_array<int64_t>(k_obj, "k");
        const int64_t G = static_cast<int64_t>(P_.size());
        expect_shape(k, "k", {G, M_});
        const int64_t* kp = k.data();
        for (int64_t g = 0; g < G; ++g)
            for (int64_t m = 0; m < M_; ++m)
                if (kp[g * M_ + m] < 1 || kp[g * M_ + m] > P_[g])
                    throw py::value_error("k[" + std::to_string(g) + "][" + std::to_string(m) + "] = " +
                                          std::to_string(kp[g * M_ + m]) + " is outside [1, " + std::to_string(P_[g]) + "]");
        py::gil_scoped_release release;
        if (f64_) run_forward<double>(pd_, thr_d_, kp, n_threads);
        else run_forward<float>(pf_, thr_f_, kp, n_threads);
    }

    void step(double lr, double momentum, double weight_decay, bool first, int n_threads) {
        expect_nonnegative_threads(n_threads);
        py::gil_scoped_release release;
        if (f64_) scored_sgd_step<double>(pd_, M_, lr, momentum, weight_decay, first, n_threads);
        else scored_sgd_step<float>(pf_, M_, static_cast<float>(lr), static_cast<float>(momentum),
                                    static_cast<float>(weight_decay), first, n_threads);
    }

    // The last forward's thresholds, (G, M).
    py::array thresholds() const {
        const int64_t G = static_cast<int64_t>(P_.size());
        if (f64_) return py::array_t<double>({G, M_}, thr_d_.data());
        return py::array_t<float>({G, M_}, thr_f_.data());
    }

   private:
    template <class T>
    void run_forward(const std::vector<ScoredParam<T>>& params, std::vector<T>& thr, const int64_t* k, int n_threads) {
        // each threshold from near the previous one (exact either way: rows_kth_largest_near)
        for (size_t g = 0; g < P_.size(); ++g)
            rows_kth_largest_near<T>(static_cast<const T*>(mags_[g]), M_, P_[g], k + g * M_, thr.data() + g * M_,
                                     band_.data() + g * M_, thr.data() + g * M_, n_threads);
        scored_effective<T>(params, thr.data(), M_, n_threads);
    }

    template <class T>
    void build(const py::sequence& scores, const py::sequence& momentum, const py::sequence& weights,
               const py::sequence& eligible, const py::sequence& effective, const py::sequence& grads,
               const py::sequence& mags, const std::vector<int64_t>& group, const std::vector<int64_t>& offset,
               std::vector<ScoredParam<T>>& out) {
        auto writable = [&](const py::handle& o, const std::string& name) {
            auto a = expect_array<T>(o, name);
            if (!a.writeable()) throw py::value_error(name + " must be writable");
            keep_.push_back(a);
            return a;
        };
        const int64_t G = static_cast<int64_t>(mags.size());
        for (int64_t g = 0; g < G; ++g) {
            auto a = writable(mags[g], "mags[" + std::to_string(g) + "]");
            if (a.ndim() != 2) throw py::value_error("mags[" + std::to_string(g) + "] must be (M, P), got " + shape_string(a));
            if (g == 0) M_ = a.shape(0);
            expect_shape(a, "mags[" + std::to_string(g) + "]", {M_, -1});
            if (a.shape(1) < 1) throw py::value_error("mags[" + std::to_string(g) + "] has no columns");
            mags_.push_back(a.mutable_data());
            P_.push_back(a.shape(1));
        }
        for (size_t j = 0; j < scores.size(); ++j) {
            const std::string at = "[" + std::to_string(j) + "]";
            auto s = writable(scores[j], "scores" + at);
            if (s.ndim() != 3) throw py::value_error("scores" + at + " must be (M, R, C), got " + shape_string(s));
            const std::vector<int64_t> shape = {M_, s.shape(1), s.shape(2)};
            expect_shape(s, "scores" + at, shape);
            ScoredParam<T> p;
            p.scores = s.mutable_data();
            p.R = s.shape(1);
            p.C = s.shape(2);
            auto mo = writable(momentum[j], "momentum" + at);
            expect_shape(mo, "momentum" + at, shape);
            p.momentum = mo.mutable_data();
            auto w = expect_array<T>(weights[j], "weights" + at);
            expect_shape(w, "weights" + at, shape);
            keep_.push_back(w);
            p.weights = w.data();
            if (!eligible[j].is_none()) {
                auto e = expect_array<bool>(eligible[j], "eligible" + at);
                expect_shape(e, "eligible" + at, shape);
                keep_.push_back(e);
                p.eligible = reinterpret_cast<const uint8_t*>(e.data());
            }
            auto ef = writable(effective[j], "effective" + at);
            expect_shape(ef, "effective" + at, shape);
            p.effective = ef.mutable_data();
            if (!py::isinstance<py::array>(grads[j]) ||
                !py::reinterpret_borrow<py::array>(grads[j]).dtype().is(py::dtype::of<T>()))
                throw py::type_error("grads" + at + " must be a numpy array of the scores' dtype");
            auto gr = py::reinterpret_borrow<py::array>(grads[j]);
            expect_shape(gr, "grads" + at, shape);
            for (int d = 0; d < 3; ++d) {
                if (gr.strides(d) % static_cast<py::ssize_t>(sizeof(T)) != 0 || gr.strides(d) < 0)
                    throw py::value_error("grads" + at + " has strides that are not non-negative multiples of its item size");
                p.grad_strides[d] = gr.strides(d) / static_cast<py::ssize_t>(sizeof(T));
            }
            keep_.push_back(gr);
            p.grad = static_cast<const T*>(gr.data());
            if (group[j] < 0 || group[j] >= G) throw py::value_error("group" + at + " is outside [0, " + std::to_string(G) + ")");
            if (offset[j] < 0 || offset[j] + p.R * p.C > P_[group[j]])
                throw py::value_error("offset" + at + " puts the parameter outside its group's mags");
            p.group = group[j];
            p.mags = static_cast<T*>(mags_[group[j]]);
            p.P = P_[group[j]];
            p.offset = offset[j];
            out.push_back(p);
        }
        if (f64_) thr_d_.assign(static_cast<size_t>(G * M_), 0.0);  // no hint before the first forward
        else thr_f_.assign(static_cast<size_t>(G * M_), 0.0f);
        band_.assign(static_cast<size_t>(G * M_), 1.0 / 32);
    }

    bool f64_ = false;
    int64_t M_ = 0;
    std::vector<py::object> keep_;
    std::vector<ScoredParam<float>> pf_;
    std::vector<ScoredParam<double>> pd_;
    std::vector<void*> mags_;
    std::vector<int64_t> P_;
    std::vector<float> thr_f_;
    std::vector<double> thr_d_;
    std::vector<double> band_;
};

}  // namespace

void plantseek::bindings::bind_scores(py::module_& m) {
    py::class_<PyScoreSearch>(m, "ScoreSearch",
                              "Edge-popup's batched search over owned buffers: forward(k) writes the effective "
                              "weights, step(lr, momentum, weight_decay, first) the SGD step of the scores.")
        .def(py::init<const py::sequence&, const py::sequence&, const py::sequence&, const py::sequence&,
                      const py::sequence&, const py::sequence&, const py::sequence&, const std::vector<int64_t>&,
                      const std::vector<int64_t>&>(),
             py::arg("scores"), py::arg("momentum"), py::arg("weights"), py::arg("eligible"), py::arg("effective"),
             py::arg("grads"), py::arg("mags"), py::arg("group"), py::arg("offset"))
        .def("forward", &PyScoreSearch::forward, py::arg("k"), py::arg("n_threads") = 0)
        .def("step", &PyScoreSearch::step, py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"),
             py::arg("first"), py::arg("n_threads") = 0)
        .def("thresholds", &PyScoreSearch::thresholds);
    m.def("topk_masks", &py_topk_masks, py::arg("scores"), py::arg("group"), py::arg("k"), py::arg("eligible") = py::none(),
          py::arg("n_threads") = 0,
          "Exact top-k masks per group for M networks (ties to the lowest index in segment order).");
    m.def("rows_topk", &py_rows_topk, py::arg("scores"), py::arg("k"), py::arg("eligible") = py::none(),
          py::arg("n_threads") = 0,
          "Per row of an (M, P) score matrix, a bool mask of its k largest eligible entries (ties to the lowest column).");
    m.def("rows_kth_largest", &py_rows_kth_largest, py::arg("values"), py::arg("k"), py::arg("n_threads") = 0,
          "Per row of an (M, P) matrix its k[m]-th largest value (NaN ranked above every number).");
    m.def("synflow", &py_synflow, py::arg("weights"), py::arg("biases"), py::arg("weight_masks"),
          py::arg("bias_masks"), py::arg("group"), py::arg("rounds"), py::arg("keep"), py::arg("n_threads") = 0,
          "SynFlow scores (rounds = 0) or masks after `rounds` pruning rounds, for M networks.");
}
