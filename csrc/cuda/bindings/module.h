// One binding function per kernel concept with CUDA kernels, each defined in csrc/cuda/bindings/<concept>.cpp
// (the Python launcher lives in plantseek/kernels/<concept>.py); module.cpp calls them to build
// plantseek._C_cuda.
#pragma once

#include <pybind11/pybind11.h>

namespace plantseek {
namespace cuda {
namespace bindings {

void bind_masks(pybind11::module_& m);
void bind_sparse_linear(pybind11::module_& m);

}  // namespace bindings
}  // namespace cuda
}  // namespace plantseek
