// pybind11 bindings of the CUDA sparse linear kernels (sparse_linear_cuda.h): SpMM, gather and SDDMM.
// Python side: the CUDA launchers in plantseek/kernels/sparse_linear.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "checks.h"
#include "module.h"
#include "sparse_linear_cuda.h"

namespace py = pybind11;
using namespace plantseek::cuda;
using namespace plantseek::cuda::bindings;

void plantseek::cuda::bindings::bind_sparse_linear(py::module_& m) {
    m.def("spmm", [](uint64_t x, uint64_t indptr, uint64_t cols, uint64_t vals, uint64_t bias, uint64_t y, int64_t M,
                     int64_t B, int64_t n_rows, int64_t n_cols, const std::string& dtype, uint64_t stream) {
        nonnegative(M, "M"); nonnegative(B, "B"); nonnegative(n_rows, "n_rows"); nonnegative(n_cols, "n_cols");
        const int code = dtype_code(dtype);
        if (M * B * n_rows == 0) return;
        py::gil_scoped_release release;
        check(spmm(ptr<const void>(x, "x", n_cols > 0), ptr<const int64_t>(indptr, "indptr"), ptr<const int64_t>(cols, "cols", false),
                   ptr<const void>(vals, "vals", false), ptr<const void>(bias, "bias", false), ptr<void>(y, "y"), M, B,
                   n_rows, n_cols, code, stream_of(stream)),
              "spmm");
    });

    m.def("gather", [](uint64_t vals, uint64_t perm, uint64_t out, int64_t n, const std::string& dtype, uint64_t stream) {
        nonnegative(n, "n");
        const int code = dtype_code(dtype);
        if (n == 0) return;
        py::gil_scoped_release release;
        check(gather(ptr<const void>(vals, "vals"), ptr<const int64_t>(perm, "perm"), ptr<void>(out, "out"), n, code,
                     stream_of(stream)),
              "gather");
    });

    m.def("sddmm", [](uint64_t gy, uint64_t x, uint64_t rows, uint64_t cols, uint64_t gvals, int64_t nnz, int64_t B,
                      int64_t n_out, int64_t n_in, const std::string& dtype, uint64_t stream) {
        nonnegative(nnz, "nnz"); nonnegative(B, "B"); nonnegative(n_out, "n_out"); nonnegative(n_in, "n_in");
        const int code = dtype_code(dtype);
        if (nnz == 0) return;
        py::gil_scoped_release release;
        check(sddmm(ptr<const void>(gy, "gy", B > 0), ptr<const void>(x, "x", B > 0), ptr<const int64_t>(rows, "rows"),
                    ptr<const int64_t>(cols, "cols"), ptr<void>(gvals, "gvals"), nnz, B, n_out, n_in, code,
                    stream_of(stream)),
              "sddmm");
    });
}
