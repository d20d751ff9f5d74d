// pybind11 bindings of the network-major training step (csrc/sparse_stack.h): plantseek._C.SparseStack.
// Python side: plantseek/kernels/sparse_stack.py (NativeStack and its PyTorch reference ReferenceStack).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "module.h"
#include "sparse_pattern.h"
#include "sparse_stack.h"

namespace py = pybind11;
using namespace plantseek;
using namespace plantseek::bindings;

namespace {

// M sparse MLPs trained network by network (sparse_stack.h). The parameter arrays (NumPy views of the caller's
// tensors) are checked once here and updated in place by every step; the patterns and arrays are kept alive.
class PySparseStack {
    // f(the typed stack): the one place the methods are dispatched on the parameters' dtype.
    template <class F>
    auto dispatch(F&& f) {
        if (f32_) return f(*f32_);
        return f(*f64_);
    }

    // The inputs x (M, B, n_in), B >= 1, as an array of the parameters' dtype.
    template <class T>
    py::array_t<T> inputs(const py::object& x) const {
        auto xa = expect_array<T>(x, "x");
        expect_shape(xa, "x", {M_, -1, n_in_});
        if (xa.shape(1) < 1) throw py::value_error("x must hold at least one sample per network");
        return xa;
    }

public:
    PySparseStack(const py::sequence& patterns, const py::sequence& vals, const py::sequence& biases,
                  const py::sequence& bias_masks, const std::string& optimizer, double beta1, double beta2, double eps,
                  double weight_decay, double momentum) {
        const size_t L = patterns.size();
        if (L == 0) throw py::value_error("patterns: a stack needs at least one layer");
        if (vals.size() != L || biases.size() != L || bias_masks.size() != L)
            throw py::value_error("patterns, vals, biases and bias_masks must have one entry per layer (got " +
                                  std::to_string(L) + ", " + std::to_string(vals.size()) + ", " +
                                  std::to_string(biases.size()) + ", " + std::to_string(bias_masks.size()) + ")");
        if (optimizer != "adam" && optimizer != "sgd")
            throw py::value_error("optimizer must be 'adam' or 'sgd', got '" + optimizer + "'");
        if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
            throw py::value_error("betas must lie in [0, 1)");
        if (!(eps >= 0) || !(weight_decay >= 0) || !(momentum >= 0) || !std::isfinite(eps) ||
            !std::isfinite(weight_decay) || !std::isfinite(momentum))
            throw py::value_error("eps, weight_decay and momentum must be finite and >= 0");
        StackOptimizer opt;
        opt.adam = optimizer == "adam";
        opt.beta1 = beta1;
        opt.beta2 = beta2;
        opt.eps = eps;
        opt.weight_decay = weight_decay;
        opt.momentum = momentum;
        std::vector<StackLayer> layers;
        for (size_t l = 0; l < L; ++l) {
            py::object po = patterns[l];
            if (!py::isinstance<SparsePattern>(po))
                throw py::type_error("patterns[" + std::to_string(l) + "] must be a SparsePattern");
            const SparsePattern& pat = po.cast<const SparsePattern&>();
            if (l == 0) M_ = pat.M();
            if (pat.M() != M_)
                throw py::value_error("patterns[" + std::to_string(l) + "] holds " + std::to_string(pat.M()) +
                                      " networks, patterns[0] holds " + std::to_string(M_));
            if (l > 0 && pat.n_in() != layers.back().csr.n_rows)
                throw py::value_error("patterns[" + std::to_string(l) + "] takes " + std::to_string(pat.n_in()) +
                                      " inputs, but patterns[" + std::to_string(l - 1) + "] has " +
                                      std::to_string(layers.back().csr.n_rows) + " outputs");
            layers.push_back(StackLayer{pat.csr(), pat.csc(), pat.csc_perm()});
            keep_.append(po);
        }
        n_in_ = layers.front().csr.n_cols;
        L_ = static_cast<int64_t>(L);
        n_out_ = layers.back().csr.n_rows;
        widths_.push_back(n_in_);
        for (const auto& layer : layers) widths_.push_back(layer.csr.n_rows);
        with_float_dtype(vals[0], "vals[0]", [&](auto t) {
            using T = decltype(t);
            std::vector<StackParams<T>> params;
            for (size_t l = 0; l < L; ++l) {
                const std::string k = "[" + std::to_string(l) + "]";
                auto v = expect_array<T>(vals[l], "vals" + k);
                expect_shape(v, "vals" + k, {layers[l].csr.indptr[M_ * layers[l].csr.n_rows]});
                auto b = expect_array<T>(biases[l], "biases" + k);
                expect_shape(b, "biases" + k, {M_, layers[l].csr.n_rows});
                const T* mask = nullptr;
                if (!py::object(bias_masks[l]).is_none()) {
                    auto bm = expect_array<T>(bias_masks[l], "bias_masks" + k);
                    expect_shape(bm, "bias_masks" + k, {M_, layers[l].csr.n_rows});
                    mask = bm.data();
                    keep_.append(bm);
                }
                params.push_back(StackParams<T>{v.mutable_data(), b.mutable_data(), mask});
                keep_.append(v);
                keep_.append(b);
            }
            auto stack = std::make_unique<SparseStack<T>>(layers, params, M_, opt);
            if constexpr (std::is_same_v<T, float>) f32_ = std::move(stack); else f64_ = std::move(stack);
            return 0;
        });
    }

    py::array forward(const py::object& x, int n_threads) {
        expect_nonnegative_threads(n_threads);
        return dispatch([&](auto& stack) -> py::array {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            auto xa = inputs<T>(x);
            const int64_t B = xa.shape(1);
            py::array_t<T> out({M_, B, n_out_});
            {
                py::gil_scoped_release release;
                stack.forward(xa.data(), B, out.mutable_data(), n_threads);
            }
            ready_ = true;
            return out;
        });
    }

    void backward_step(const py::object& grad_out, double lr, int n_threads) {
        expect_nonnegative_threads(n_threads);
        if (!ready_) throw py::value_error("backward_step needs a forward pass first (one step per forward)");
        if (!std::isfinite(lr) || lr < 0) throw py::value_error("lr must be finite and >= 0");
        dispatch([&](auto& stack) {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            auto g = expect_array<T>(grad_out, "grad_out");
            expect_shape(g, "grad_out", {M_, stack.batch(), n_out_});
            {
                py::gil_scoped_release release;
                stack.backward_step(g.data(), lr, n_threads);
            }
            ready_ = false;
            return 0;
        });
    }

    // One fused step: int64 targets (M, B) are class labels (cross-entropy), float targets (M, B, n_out)
    // regression targets (mean squared error). Returns each network's mean loss (M,).
    // The checked batch of a step: inputs (M, B, n_in), int64 labels (M, B) or float targets (M, B, n_out), and
    // the alive flags (M,) or none.
    template <class T>
    struct Batch {
        py::array_t<T> x;
        py::array_t<int64_t> labels;
        py::array_t<T> values;
        py::array_t<bool> alive;  // a default array_t is an empty array, not None: `has_alive` says which
        bool labelled = false;
        bool has_alive = false;
        int64_t B = 0;
        const int64_t* label_ptr() const { return labelled ? labels.data() : nullptr; }
        const T* value_ptr() const { return labelled ? nullptr : values.data(); }
        const uint8_t* alive_ptr() const {
            return has_alive ? reinterpret_cast<const uint8_t*>(alive.data()) : nullptr;
        }
    };

    template <class T>
    Batch<T> batch_of(const py::object& x, const py::object& targets, const py::object& alive) const {
        Batch<T> b;
        b.x = inputs<T>(x);
        b.B = b.x.shape(1);
        if (!py::isinstance<py::array>(targets)) throw py::type_error("targets must be a numpy array");
        b.labelled = py::reinterpret_borrow<py::array>(targets).dtype().is(py::dtype::of<int64_t>());
        if (b.labelled) {
            b.labels = expect_array<int64_t>(targets, "targets");
            expect_shape(b.labels, "targets", {M_, b.B});
            const int64_t* y = b.labels.data();
            for (int64_t k = 0; k < M_ * b.B; ++k)
                if (y[k] < 0 || y[k] >= n_out_)
                    throw py::value_error("targets: class label " + std::to_string(y[k]) + " is out of range [0, " +
                                          std::to_string(n_out_) + ")");
        } else {
            b.values = expect_array<T>(targets, "targets");
            expect_shape(b.values, "targets", {M_, b.B, n_out_});
        }
        if (!alive.is_none()) {
            b.alive = expect_array<bool>(alive, "alive");
            expect_shape(b.alive, "alive", {M_});
            b.has_alive = true;
        }
        return b;
    }

    py::array train_step(const py::object& x, const py::object& targets, const py::object& alive, double lr,
                         int n_threads) {
        expect_nonnegative_threads(n_threads);
        if (!std::isfinite(lr) || lr < 0) throw py::value_error("lr must be finite and >= 0");
        return dispatch([&](auto& stack) -> py::array {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            auto b = batch_of<T>(x, targets, alive);
            py::array_t<T> losses(M_);
            {
                py::gil_scoped_release release;
                stack.train_step(b.x.data(), b.B, b.label_ptr(), b.value_ptr(), b.alive_ptr(), lr,
                                 losses.mutable_data(), n_threads);
            }
            ready_ = false;
            return losses;
        });
    }

    // Per layer (grad_w (M, n_out, n_in), grad_b (M, n_out)) of the built-in loss at every position, no step.
    py::list dense_gradients(const py::object& x, const py::object& targets, const py::object& alive, int n_threads) {
        expect_nonnegative_threads(n_threads);
        return dispatch([&](auto& stack) -> py::list {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            auto b = batch_of<T>(x, targets, alive);
            std::vector<py::array_t<T>> gw, gb;
            std::vector<T*> pw, pb;
            for (int64_t l = 0; l < L_; ++l) {
                gw.emplace_back(std::vector<py::ssize_t>{M_, widths_[l + 1], widths_[l]});
                gb.emplace_back(std::vector<py::ssize_t>{M_, widths_[l + 1]});
                pw.push_back(gw.back().mutable_data());
                pb.push_back(gb.back().mutable_data());
            }
            {
                py::gil_scoped_release release;
                stack.dense_gradients(b.x.data(), b.B, b.label_ptr(), b.value_ptr(), b.alive_ptr(), pw, pb, n_threads);
            }
            ready_ = false;
            py::list out;
            for (int64_t l = 0; l < L_; ++l) out.append(py::make_tuple(gw[l], gb[l]));
            return out;
        });
    }

    int64_t steps() {
        return dispatch([](auto& stack) { return stack.steps(); });
    }

    // A copy of layer l's optimiser state `which` (0/1: values' first/second moment or momentum, 2/3: biases').
    py::array state(int64_t l, int which) {
        return dispatch([&](auto& stack) -> py::array {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            if (l < 0 || l >= L_ || which < 0 || which > 3)
                throw py::value_error("state(l, which): l must name a layer and which lie in 0..3");
            const auto& v = stack.state(l, which);
            py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
            std::copy(v.begin(), v.end(), out.mutable_data());
            return out;
        });
    }

    // Overwrites layer l's optimiser state `which` with `data`, a 1-D array of the stack's dtype and the state's
    // length (the second moments, which 1 and 3, are empty for SGD).
    void set_state(int64_t l, int which, const py::object& data) {
        if (l < 0 || l >= L_)
            throw py::value_error("set_state: layer " + std::to_string(l) + " is outside [0, " +
                                  std::to_string(L_) + ")");
        if (which < 0 || which > 3)
            throw py::value_error("set_state: which = " + std::to_string(which) + " must lie in 0..3");
        dispatch([&](auto& stack) {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            auto a = expect_array<T>(data, "state");
            const int64_t n = static_cast<int64_t>(stack.state(l, which).size());
            expect_shape(a, "state", {n});
            stack.set_state(l, which, a.data(), n);
            return 0;
        });
    }

    // Sets the step count, as if the stack had trained `steps` steps (Adam's bias corrections, SGD's first step).
    void set_steps(int64_t steps) {
        if (steps < 0) throw py::value_error("set_steps: steps must be >= 0, got " + std::to_string(steps));
        dispatch([&](auto& stack) {
            stack.set_steps(steps);
            return 0;
        });
    }

    // Takes over `old`'s optimiser state and step count after a mask change (SparseStack::adopt_state): old_pos
    // and new_pos hold per layer the flat positions of the kept weights (int64, increasing) of `old` and here.
    void adopt_state(const PySparseStack& old, const py::sequence& old_pos, const py::sequence& new_pos) {
        if (old.M_ != M_ || old.L_ != L_ || old.n_in_ != n_in_ || old.n_out_ != n_out_ ||
            static_cast<bool>(old.f32_) != static_cast<bool>(f32_))
            throw py::value_error("adopt_state: the old stack must hold the same networks (M, layers, widths, dtype)");
        if (static_cast<int64_t>(old_pos.size()) != L_ || static_cast<int64_t>(new_pos.size()) != L_)
            throw py::value_error("adopt_state: old_pos and new_pos need one array per layer (" + std::to_string(L_) + ")");
        dispatch([&](auto& stack) {
            using S = std::remove_reference_t<decltype(stack)>;
            const S& from = *old.get<typename S::value_type>();
            std::vector<py::array_t<int64_t>> keep;
            std::vector<const int64_t*> po, pn;
            for (int64_t l = 0; l < L_; ++l) {
                for (int side = 0; side < 2; ++side) {
                    const std::string name = std::string(side ? "new_pos[" : "old_pos[") + std::to_string(l) + "]";
                    auto a = expect_array<int64_t>(side ? new_pos[l] : old_pos[l], name);
                    const int64_t n = side ? stack.nnz(l) : from.nnz(l);
                    expect_shape(a, name, {n});
                    const int64_t* p = a.data();
                    for (int64_t e = 1; e < n; ++e)
                        if (p[e] <= p[e - 1]) throw py::value_error(name + " must increase (CSR order)");
                    (side ? pn : po).push_back(p);
                    keep.push_back(a);
                }
            }
            stack.adopt_state(from, po, pn);
            return 0;
        });
    }

    int64_t M() const { return M_; }

private:
    template <class T>
    const SparseStack<T>* get() const {
        if constexpr (std::is_same_v<T, float>) return f32_.get();
        else return f64_.get();
    }

    py::list keep_;
    std::unique_ptr<SparseStack<float>> f32_;
    std::unique_ptr<SparseStack<double>> f64_;
    int64_t M_ = 0, n_in_ = 0, n_out_ = 0, L_ = 0;
    std::vector<int64_t> widths_;  // n[0] .. n[L]
    bool ready_ = false;
};

}  // namespace

void plantseek::bindings::bind_sparse_stack(py::module_& m) {
    py::class_<PySparseStack>(m, "SparseStack",
                              "M sparse MLPs (ReLU between layers) trained network by network: forward(x) -> "
                              "outputs, then backward_step(grad_out, lr) computes every gradient and applies the "
                              "optimiser in place to the given value and bias arrays.")
        .def(py::init<const py::sequence&, const py::sequence&, const py::sequence&, const py::sequence&,
                      const std::string&, double, double, double, double, double>(),
             py::arg("patterns"), py::arg("vals"), py::arg("biases"), py::arg("bias_masks"),
             py::arg("optimizer") = "adam", py::arg("beta1") = 0.9, py::arg("beta2") = 0.999, py::arg("eps") = 1e-8,
             py::arg("weight_decay") = 0.0, py::arg("momentum") = 0.0)
        .def("forward", &PySparseStack::forward, py::arg("x"), py::arg("n_threads") = 0,
             "Outputs (M, B, n_out) for inputs x (M, B, n_in); keeps the activations for backward_step.")
        .def("backward_step", &PySparseStack::backward_step, py::arg("grad_out"), py::arg("lr"),
             py::arg("n_threads") = 0,
             "Gradients for grad_out (M, B, n_out) at the last forward's outputs, and one optimiser step.")
        .def("train_step", &PySparseStack::train_step, py::arg("x"), py::arg("targets"), py::arg("alive") = py::none(),
             py::arg("lr") = 1e-3, py::arg("n_threads") = 0,
             "Forward, loss (int64 labels (M, B): cross-entropy; float targets (M, B, n_out): mean squared error), "
             "backward and optimiser step, network by network; returns the mean loss of each network (M,). Networks "
             "whose `alive` entry is False get no gradient.")
        .def("dense_gradients", &PySparseStack::dense_gradients, py::arg("x"), py::arg("targets"),
             py::arg("alive") = py::none(), py::arg("n_threads") = 0,
             "Per layer (grad_w (M, n_out, n_in), grad_b (M, n_out)): the built-in loss's gradient at every "
             "position, pruned ones included; no optimiser step.")
        .def("state", &PySparseStack::state, py::arg("layer"), py::arg("which"),
             "Copy of an optimiser state array (0/1: values' first/second moment or momentum; 2/3: biases').")
        .def("set_state", &PySparseStack::set_state, py::arg("layer"), py::arg("which"), py::arg("data"),
             "Overwrite an optimiser state array (same `which` as state) with a 1-D array of its length and dtype.")
        .def("adopt_state", &PySparseStack::adopt_state, py::arg("old"), py::arg("old_pos"), py::arg("new_pos"),
             "Take over another stack's optimiser state and step count after a mask change (same networks): "
             "old_pos/new_pos hold per layer the increasing flat positions of the kept weights.")
        .def("set_steps", &PySparseStack::set_steps, py::arg("steps"),
             "Set the step count (>= 0): the next step continues as if the stack had trained that many steps.")
        .def_property_readonly("steps", &PySparseStack::steps)
        .def_property_readonly("M", &PySparseStack::M);
}
