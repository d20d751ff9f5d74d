// pybind11 bindings of the CUDA mask kernels (masks_cuda.h): overlap counts and reachability.
// Python side: the CUDA launchers in plantseek/kernels/masks.py.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <string>

#include "checks.h"
#include "module.h"
#include "masks_cuda.h"

namespace py = pybind11;
using namespace plantseek::cuda;
using namespace plantseek::cuda::bindings;

void plantseek::cuda::bindings::bind_masks(py::module_& m) {
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
}
