// The CUDA module plantseek._C_cuda: device_count and one bind_<concept> call per file of
// csrc/cuda/bindings/ (see module.h and checks.h for the argument conventions).
#include <pybind11/pybind11.h>

#include <cuda_runtime.h>

#include "module.h"

PYBIND11_MODULE(_C_cuda, m) {
    m.doc() = "plantseek CUDA kernels (device pointers as ints; see plantseek/kernels/ for the launchers)";
    m.def("device_count", []() {
        int n = 0;
        if (cudaGetDeviceCount(&n) != cudaSuccess) return 0;
        return n;
    });
    plantseek::cuda::bindings::bind_masks(m);
    plantseek::cuda::bindings::bind_sparse_linear(m);
}
