// pybind11 bindings of the sparse masked linear kernels (csrc/sparse_linear.h): the validated SparsePattern,
// the feature-major forward and backward, and the layout copies.
// Python side: plantseek/kernels/sparse_linear.py (dispatchers, PyTorch references, CUDA launchers).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "checks.h"
#include "module.h"
#include "sparse_linear.h"
#include "sparse_pattern.h"

namespace py = pybind11;
using namespace plantseek;
using namespace plantseek::bindings;

namespace {

int64_t expect_batch(int64_t B, const py::array& a, const std::string& name) {
    if (B < 0) throw py::value_error("batch must be >= 0, got " + std::to_string(B));
    const int64_t Bp = padded_batch(B);
    if (a.ndim() != 3 || a.shape(2) != Bp)
        throw py::value_error(name + " must have " + std::to_string(Bp) + " (padded) batch lanes for batch " +
                              std::to_string(B) + ", got shape " + shape_string(a));
    return Bp;
}

template <class T>
py::array_t<T> sparse_forward_typed(py::object xt_obj, const SparsePattern& pat, py::object vals_obj,
                                    py::object bias_obj, bool relu, int64_t B, int n_threads) {
    auto xt = expect_array<T>(xt_obj, "xt");
    expect_shape(xt, "xt", {pat.M(), pat.n_in(), -1});
    const int64_t Bp = expect_batch(B, xt, "xt");
    auto vals = expect_array<T>(vals_obj, "vals");
    expect_shape(vals, "vals", {pat.nnz()});
    const T* bias = nullptr;
    py::array_t<T> bias_arr;
    if (!bias_obj.is_none()) {
        bias_arr = expect_array<T>(bias_obj, "bias");
        expect_shape(bias_arr, "bias", {pat.M(), pat.n_out()});
        bias = bias_arr.data();
    }
    py::array_t<T> yt({pat.M(), pat.n_out(), Bp});
    {
        py::gil_scoped_release release;
        sparse_fm_forward<T>(xt.data(), pat.M(), B, Bp, pat.csr(), vals.data(), bias, relu, yt.mutable_data(),
                             n_threads);
    }
    return yt;
}

py::array py_sparse_fm_forward(py::object xt, const SparsePattern& pattern, py::object vals, py::object bias,
                               bool relu, int64_t batch, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(xt, "xt", [&](auto t) -> py::array {
        return sparse_forward_typed<decltype(t)>(xt, pattern, vals, bias, relu, batch, n_threads);
    });
}

template <class T>
py::tuple sparse_backward_typed(py::object gyt_obj, py::object xt_obj, py::object yt_obj, const SparsePattern& pat,
                                py::object vals_obj, int64_t B, bool need_x, bool need_w, bool need_b, int n_threads) {
    auto gyt = expect_array<T>(gyt_obj, "grad_yt");
    expect_shape(gyt, "grad_yt", {pat.M(), pat.n_out(), -1});
    const int64_t Bp = expect_batch(B, gyt, "grad_yt");
    auto xt = expect_array<T>(xt_obj, "xt");
    expect_shape(xt, "xt", {pat.M(), pat.n_in(), Bp});
    const T* yt = nullptr;
    py::array_t<T> yt_arr;
    if (!yt_obj.is_none()) {
        yt_arr = expect_array<T>(yt_obj, "yt");
        expect_shape(yt_arr, "yt", {pat.M(), pat.n_out(), Bp});
        yt = yt_arr.data();
    }
    auto vals = expect_array<T>(vals_obj, "vals");
    expect_shape(vals, "vals", {pat.nnz()});
    py::object gx_obj = py::none(), gv_obj = py::none(), gb_obj = py::none();
    T* gx = nullptr;
    T* gv = nullptr;
    T* gb = nullptr;
    if (need_x) {
        py::array_t<T> a({pat.M(), pat.n_in(), Bp});
        gx = a.mutable_data();
        gx_obj = a;
    }
    if (need_w) {
        py::array_t<T> a(pat.nnz());
        gv = a.mutable_data();
        gv_obj = a;
    }
    if (need_b) {
        py::array_t<T> a({pat.M(), pat.n_out()});
        gb = a.mutable_data();
        gb_obj = a;
    }
    {
        py::gil_scoped_release release;
        sparse_fm_backward<T>(gyt.data(), xt.data(), yt, pat.M(), B, Bp, pat.csr(), vals.data(), pat.csc(),
                              pat.csc_perm(), gx, gv, gb, n_threads);
    }
    return py::make_tuple(gx_obj, gv_obj, gb_obj);
}

py::tuple py_sparse_fm_backward(py::object gyt, py::object xt, py::object yt, const SparsePattern& pattern,
                                py::object vals, int64_t batch, bool need_x, bool need_w, bool need_b, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(gyt, "grad_yt", [&](auto t) {
        return sparse_backward_typed<decltype(t)>(gyt, xt, yt, pattern, vals, batch, need_x, need_w, need_b, n_threads);
    });
}

template <class T>
py::array_t<T> to_fm_typed(py::object x_obj, int n_threads) {
    auto x = expect_array<T>(x_obj, "x");
    expect_shape(x, "x", {-1, -1, -1});
    const int64_t M = x.shape(0), B = x.shape(1), n = x.shape(2), Bp = padded_batch(B);
    py::array_t<T> xt({M, n, Bp});
    {
        py::gil_scoped_release release;
        to_feature_major<T>(x.data(), M, B, n, Bp, xt.mutable_data(), n_threads);
    }
    return xt;
}

py::array py_to_feature_major(py::object x, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(x, "x", [&](auto t) -> py::array { return to_fm_typed<decltype(t)>(x, n_threads); });
}

template <class T>
py::array_t<T> from_fm_typed(py::object xt_obj, int64_t B, int n_threads) {
    auto xt = expect_array<T>(xt_obj, "xt");
    expect_shape(xt, "xt", {-1, -1, -1});
    expect_batch(B, xt, "xt");
    const int64_t M = xt.shape(0), n = xt.shape(1), Bp = xt.shape(2);
    py::array_t<T> x({M, B, n});
    {
        py::gil_scoped_release release;
        from_feature_major<T>(xt.data(), M, n, Bp, B, x.mutable_data(), n_threads);
    }
    return x;
}

py::array py_from_feature_major(py::object xt, int64_t batch, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(xt, "xt", [&](auto t) -> py::array {
        return from_fm_typed<decltype(t)>(xt, batch, n_threads);
    });
}

py::tuple py_csr_structure(py::object mask_obj) {
    auto mask = expect_array<bool>(mask_obj, "mask");
    expect_shape(mask, "mask", {-1, -1, -1});
    const int64_t M = mask.shape(0), n_out = mask.shape(1), n_in = mask.shape(2);
    const auto* data = reinterpret_cast<const uint8_t*>(mask.data());
    const int64_t nnz = csr_count(data, M, n_out, n_in);
    py::array_t<int64_t> indptr(M * n_out + 1), cols(nnz), rows(nnz), pos(nnz), csc_indptr(M * n_in + 1),
        csc_rows(nnz), csc_perm(nnz);
    {
        py::gil_scoped_release release;
        csr_structure(data, M, n_out, n_in, indptr.mutable_data(), cols.mutable_data(), rows.mutable_data(),
                      pos.mutable_data(), csc_indptr.mutable_data(), csc_rows.mutable_data(), csc_perm.mutable_data());
    }
    return py::make_tuple(indptr, cols, rows, pos, csc_indptr, csc_rows, csc_perm);
}

}  // namespace

void plantseek::bindings::bind_sparse_linear(py::module_& m) {
    py::class_<SparsePattern>(m, "SparsePattern",
                              "CSR + CSC structure of M stacked (n_out, n_in) masks, validated once and copied.")
        .def(py::init<py::object, py::object, py::object, py::object, py::object, int64_t, int64_t, int64_t>(),
             py::arg("indptr"), py::arg("cols"), py::arg("csc_indptr"), py::arg("csc_rows"), py::arg("csc_perm"),
             py::arg("M"), py::arg("n_out"), py::arg("n_in"))
        .def_property_readonly("M", &SparsePattern::M)
        .def_property_readonly("n_out", &SparsePattern::n_out)
        .def_property_readonly("n_in", &SparsePattern::n_in)
        .def_property_readonly("nnz", &SparsePattern::nnz);
    m.def("sparse_fm_forward", &py_sparse_fm_forward, py::arg("xt"), py::arg("pattern"), py::arg("vals"),
          py::arg("bias"), py::arg("relu"), py::arg("batch"), py::arg("n_threads") = 0,
          "yt (M, n_out, Bp) = W xt + b (then ReLU) for feature-major xt (M, n_in, Bp); padding lanes zero.");
    m.def("to_feature_major", &py_to_feature_major, py::arg("x"), py::arg("n_threads") = 0,
          "x (M, B, n) -> feature-major (M, n, padded_batch(B)), padding lanes zero.");
    m.def("from_feature_major", &py_from_feature_major, py::arg("xt"), py::arg("batch"), py::arg("n_threads") = 0,
          "Feature-major xt (M, n, padded_batch(batch)) -> (M, batch, n).");
    m.def("sparse_fm_backward", &py_sparse_fm_backward, py::arg("grad_yt"), py::arg("xt"), py::arg("yt"),
          py::arg("pattern"), py::arg("vals"), py::arg("batch"), py::arg("need_x") = true, py::arg("need_w") = true,
          py::arg("need_b") = true, py::arg("n_threads") = 0,
          "Returns (grad_xt (M, n_in, Bp) or None, grad_vals (nnz,) or None, grad_bias (M, n_out) or None); "
          "yt (the forward output) masks the gradient when the forward applied ReLU.");
    m.def("csr_structure", &py_csr_structure, py::arg("mask"),
          "(indptr, cols, rows, pos, csc_indptr, csc_rows, csc_perm) of a bool mask (M, n_out, n_in), as "
          "plantseek.kernels.sparse_linear.build_structure_reference builds them.");
    m.def("padded_batch", &padded_batch, py::arg("batch"), "Padded batch length (a multiple of 16) of the feature-major buffers.");
}
