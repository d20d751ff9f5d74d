// Argument checks shared by the pybind11 bindings of the CUDA kernels (module plantseek._C_cuda).
//
// Arguments are device pointers passed as Python ints (tensor.data_ptr()) and the stream as an int
// (torch.cuda.current_stream().cuda_stream). The Python dispatchers in plantseek/kernels/ check devices,
// dtypes, shapes and contiguity of the tensors for every backend; here we check sizes and null pointers
// (cheap defensive checks that throw) and turn CUDA errors into RuntimeError.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include <cuda_runtime.h>

namespace plantseek {
namespace cuda {
namespace bindings {

namespace py = pybind11;

template <class T>
T* ptr(uint64_t value, const char* name, bool required = true) {
    if (required && value == 0) throw py::value_error(std::string(name) + " is a null device pointer");
    return reinterpret_cast<T*>(static_cast<uintptr_t>(value));
}

inline cudaStream_t stream_of(uint64_t s) { return reinterpret_cast<cudaStream_t>(static_cast<uintptr_t>(s)); }

inline void check(cudaError_t err, const char* what) {
    if (err != cudaSuccess) throw std::runtime_error(std::string(what) + ": " + cudaGetErrorString(err));
}

inline void nonnegative(int64_t v, const char* name) {
    if (v < 0) throw py::value_error(std::string(name) + " must be >= 0");
}

inline int dtype_code(const std::string& dtype) {
    if (dtype == "float32") return 0;
    if (dtype == "float64") return 1;
    throw py::type_error("dtype must be 'float32' or 'float64', got '" + dtype + "'");
}

}  // namespace bindings
}  // namespace cuda
}  // namespace plantseek
