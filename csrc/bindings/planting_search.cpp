// pybind11 bindings of the planting search (csrc/planting_search.h).
// Python side: plantseek/kernels/planting_search.py (dispatcher and NumPy reference).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "checks.h"
#include "module.h"
#include "planting_search.h"

namespace py = pybind11;
using namespace plantseek;
using namespace plantseek::bindings;

namespace {

py::tuple py_plant_search(py::object hw_obj, py::object hb_obj, py::object indptr_obj, py::object cols_obj,
                          py::object vals_obj, py::object bias_vals_obj, py::object has_bias_obj,
                          py::object used_obj, int n_threads) {
    expect_nonnegative_threads(n_threads);
    auto hw = expect_array<double>(hw_obj, "host_weight");
    auto hb = expect_array<double>(hb_obj, "host_bias");
    auto indptr = expect_array<int64_t>(indptr_obj, "indptr");
    auto cols = expect_array<int64_t>(cols_obj, "cols");
    auto vals = expect_array<double>(vals_obj, "vals");
    auto bias_vals = expect_array<double>(bias_vals_obj, "bias_vals");
    auto has_bias = expect_array<uint8_t>(has_bias_obj, "has_bias");
    auto used = expect_array<uint8_t>(used_obj, "used");
    expect_shape(hw, "host_weight", {-1, -1});
    const int64_t n_out = hw.shape(0), n_in = hw.shape(1);
    expect_shape(hb, "host_bias", {n_out});
    expect_shape(indptr, "indptr", {-1});
    if (indptr.shape(0) < 1) throw py::value_error("indptr must have at least one entry");
    const int64_t T = indptr.shape(0) - 1;
    expect_shape(cols, "cols", {-1});
    const int64_t nnz = cols.shape(0);
    expect_shape(vals, "vals", {nnz});
    expect_shape(bias_vals, "bias_vals", {T});
    expect_shape(has_bias, "has_bias", {T});
    expect_shape(used, "used", {n_out});
    if (!used.writeable()) throw py::value_error("used must be writeable (it is updated in place)");
    check_csr(indptr.data(), T, cols.data(), nnz, n_in, "indptr", "cols");
    int64_t free_count = 0;
    for (int64_t k = 0; k < n_out; ++k) free_count += used.data()[k] == 0;
    if (T > free_count)
        throw py::value_error(std::to_string(T) + " ticket neurons but only " + std::to_string(free_count) +
                              " unused host neurons");
    PlantSearchInput in{hw.data(), hb.data(), n_out, n_in, indptr.data(), cols.data(), vals.data(),
                        bias_vals.data(), has_bias.data(), T};
    py::array_t<int64_t> chosen(T);
    py::array_t<double> scale(T);
    py::array_t<uint8_t> matched(T);
    uint8_t* used_ptr = used.mutable_data();
    {
        py::gil_scoped_release release;
        plant_search(in, used_ptr, chosen.mutable_data(), scale.mutable_data(), matched.mutable_data(), n_threads);
    }
    return py::make_tuple(chosen, scale, matched);
}

}  // namespace

void plantseek::bindings::bind_planting_search(py::module_& m) {
    m.def("plant_search", &py_plant_search, py::arg("host_weight"), py::arg("host_bias"), py::arg("indptr"),
          py::arg("cols"), py::arg("vals"), py::arg("bias_vals"), py::arg("has_bias"), py::arg("used"),
          py::arg("n_threads") = 0, "Best-matching host neuron per ticket neuron (see plantseek/kernels/planting_search.py).");
}
