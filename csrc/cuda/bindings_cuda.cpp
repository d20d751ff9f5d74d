// pybind11 bindings of the CUDA kernels (module plantseek._C_cuda).
//
// Arguments are device pointers passed as Python ints (tensor.data_ptr()) and the stream as an int
// (torch.cuda.current_stream().cuda_stream). The Python wrappers in plantseek/kernels.py check devices,
// dtypes, shapes and contiguity of the tensors; here we check sizes and null pointers and turn CUDA
// errors into RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>
#include <vector>

#include "kernels_cuda.h"

namespace py = pybind11;
using namespace plantseek::cuda;

namespace {

template <class T>
T* ptr(uint64_t value, const char* name, bool required = true) {
    if (required && value == 0) throw py::value_error(std::string(name) + " is a null device pointer");
    return reinterpret_cast<T*>(static_cast<uintptr_t>(value));
}

cudaStream_t stream_of(uint64_t s) { return reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(s)); }

void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

void nonnegative(int64_t v, const char* name) {
    if (v < 0) throw py::value_error(std::string(name) + " must be >= 0");
}

int dtype_code(const std::string& dtype) {
    if (dtype == "float32") return 0;
    if (dtype == "float64") return 1;
    throw py::type_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

}  // namespace

PYBIND11_MODULE(_C_cuda, m) {
    m.doc() = "plantseek CUDA kernels (device pointers as ints; see plantseek/kernels.py)";

    m.def("device_count", []() {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
        return n;
    });

    m.def("overlap_bytes", [](uint64_t found_ptrs, uint64_t ref_ptrs, uint64_t sizes, int64_t max_size, int64_t M,
                              int64_t S, uint64_t inter, uint64_t kept, uint64_t stream) {
        nonnegative(M, "M");
        nonnegative(S, "S");
        nonnegative(max_size, "max_size");
        if (M == 0 || S == 0) return;
        py::gil_scoped_release release;
        check(overlap_bytes(ptr<const uint64_t>(found_ptrs, "found_ptrs"), ptr<const uint64_t>(ref_ptrs, "ref_ptrs"),
                            ptr<const int64_t>(sizes, "sizes"), max_size, M, S, ptr<int64_t>(inter, "inter"),
                            ptr<int64_t>(kept, "kept"), stream_of(stream)),
              "overlap_bytes");
    }, py::arg("found_ptrs"), py::arg("ref_ptrs"), py::arg("sizes"), py::arg("max_size"), py::arg("M"), py::arg("S"),
       py::arg("inter"), py::arg("kept"), py::arg("stream"));

    m.def("reach_forward", [](uint64_t wptrs, uint64_t bptrs, uint64_t fin, uint64_t fout, int64_t M, int64_t n_in,
                              int64_t n_out, uint64_t kept, int64_t L, int64_t l, uint64_t stream) {
        nonnegative(M, "M"); nonnegative(n_in, "n_in"); nonnegative(n_out, "n_out");
        if (l < 0 || l >= L) throw py::value_error("layer index out of range");
        py::gil_scoped_release release;
        check(reach_forward(ptr<const uint64_t>(wptrs, "wptrs"), ptr<const uint64_t>(bptrs, "bptrs"),
                            ptr<const uint8_t>(fin, "fin"), ptr<uint8_t>(fout, "fout"), M, n_in, n_out,
                            ptr<int64_t>(kept, "kept"), L, l, stream_of(stream)),
              "reach_forward");
    });

    m.def("reach_backward", [](uint64_t wptrs, uint64_t bptrs, uint64_t fin, uint64_t bout, uint64_t bin, int64_t M,
                               int64_t n_in, int64_t n_out, uint64_t eff, uint64_t dead, int64_t L, int64_t l,
                               uint64_t stream) {
        nonnegative(M, "M"); nonnegative(n_in, "n_in"); nonnegative(n_out, "n_out");
        if (l < 0 || l >= L) throw py::value_error("layer index out of range");
        if (l >= 1 && dead == 0) throw py::value_error("dead is required for layers >= 1");
        py::gil_scoped_release release;
        check(reach_backward(ptr<const uint64_t>(wptrs, "wptrs"), ptr<const uint64_t>(bptrs, "bptrs"),
                             ptr<const uint8_t>(fin, "fin"), ptr<const uint8_t>(bout, "bout"), ptr<uint8_t>(bin, "bin"),
                             M, n_in, n_out, ptr<int64_t>(eff, "eff"), l >= 1 ? ptr<int64_t>(dead, "dead") : nullptr,
                             L, l, stream_of(stream)),
              "reach_backward");
    });

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
