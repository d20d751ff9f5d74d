// The CPU module plantseek._C: one bind_<concept> call per file of csrc/bindings/ (see module.h).
//
// Validation convention: the Python dispatchers (plantseek/kernels/) check every argument for every backend
// and raise ArgumentError naming it; the bindings keep cheap defensive checks (checks.h) that throw and never
// let a bad buffer reach a kernel. Kernels release the GIL.
#include <pybind11/pybind11.h>

#include "module.h"

PYBIND11_MODULE(_C, m) {
    m.doc() = "plantseek CPU kernels (see plantseek/kernels/ for the dispatchers and PyTorch references)";
    plantseek::bindings::bind_masks(m);
    plantseek::bindings::bind_planting_search(m);
    plantseek::bindings::bind_scores(m);
    plantseek::bindings::bind_sparse_linear(m);  // before bind_sparse_stack: SparseStack takes SparsePatterns
    plantseek::bindings::bind_sparse_stack(m);
}
