// One binding function per kernel concept, each defined in csrc/bindings/<concept>.cpp next to the Python
// dispatcher plantseek/kernels/<concept>.py; module.cpp calls them all to build plantseek._C.
#pragma once

#include <pybind11/pybind11.h>

namespace plantseek {
namespace bindings {

void bind_masks(pybind11::module_& m);
void bind_planting_search(pybind11::module_& m);
void bind_scores(pybind11::module_& m);
void bind_sparse_linear(pybind11::module_& m);
void bind_sparse_stack(pybind11::module_& m);

}  // namespace bindings
}  // namespace plantseek
