// pybind11 bindings of the mask kernels (csrc/masks.h): bit packing, overlap counts and reachability.
// Python side: plantseek/kernels/masks.py (dispatcher, PyTorch reference, CUDA launcher).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "common.h"
#include "masks.h"
#include "module.h"

namespace py = pybind11;
using namespace plantseek;
using namespace plantseek::bindings;

namespace {

py::tuple py_overlap_counts(py::object packed_obj, py::object ref_obj, py::object offsets_obj, int n_threads) {
    expect_nonnegative_threads(n_threads);
    auto packed = expect_array<uint64_t>(packed_obj, "packed");
    auto ref = expect_array<uint64_t>(ref_obj, "ref_packed");
    auto offsets = expect_array<int64_t>(offsets_obj, "offsets");
    expect_shape(packed, "packed", {-1, -1});
    const int64_t M = packed.shape(0), W = packed.shape(1);
    expect_shape(ref, "ref_packed", {W});
    expect_shape(offsets, "offsets", {-1});
    if (offsets.shape(0) < 1) throw py::value_error("offsets must have at least one entry");
    const int64_t S = offsets.shape(0) - 1;
    const int64_t* off = offsets.data();
    check_pointers(off, S, W, "offsets", "the word count");
    py::array_t<int64_t> inter({M, S});
    py::array_t<int64_t> kept({M, S});
    {
        py::gil_scoped_release release;
        overlap_counts(packed.data(), M, W, ref.data(), off, S, inter.mutable_data(), kept.mutable_data(), n_threads);
    }
    return py::make_tuple(inter, kept);
}

py::array_t<uint64_t> py_pack_masks(py::object masks_obj, py::object offsets_obj, int n_threads) {
    expect_nonnegative_threads(n_threads);
    std::vector<int64_t> sizes;
    auto masks = mask_lists(masks_obj, "masks", &sizes);
    auto offsets = expect_array<int64_t>(offsets_obj, "offsets");
    const int64_t S = static_cast<int64_t>(sizes.size());
    expect_shape(offsets, "offsets", {S + 1});
    const int64_t* off = offsets.data();
    if (off[0] != 0) throw py::value_error("offsets[0] must be 0");
    for (int64_t s = 0; s < S; ++s)
        if (off[s + 1] - off[s] != (sizes[s] + 63) / 64)
            throw py::value_error("offsets do not match the segment sizes (segment " + std::to_string(s) + ")");
    const int64_t M = static_cast<int64_t>(masks.size());
    const int64_t W = off[S];
    std::vector<const uint8_t*> ptrs(static_cast<size_t>(M * S));
    for (int64_t m = 0; m < M; ++m)
        for (int64_t s = 0; s < S; ++s) ptrs[m * S + s] = reinterpret_cast<const uint8_t*>(masks[m][s].data());
    py::array_t<uint64_t> out({M, W});
    uint64_t* dst = out.mutable_data();
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(dynamic, 1) num_threads(resolve_threads(n_threads)) if (M > 1)
        for (int64_t m = 0; m < M; ++m) pack_bits(ptrs.data() + m * S, sizes.data(), S, off, dst + m * W);
    }
    return out;
}

py::tuple py_reachability(py::object masks_obj, std::vector<int64_t> widths, int n_threads) {
    expect_nonnegative_threads(n_threads);
    if (widths.size() < 2) throw py::value_error("widths must have at least two entries (one layer)");
    for (size_t i = 0; i < widths.size(); ++i)
        if (widths[i] < 0) throw py::value_error("widths[" + std::to_string(i) + "] must be >= 0");
    const int64_t L = static_cast<int64_t>(widths.size()) - 1;
    auto masks = mask_lists(masks_obj, "masks", nullptr);
    const int64_t M = static_cast<int64_t>(masks.size());
    std::vector<LayeredMask> layered(static_cast<size_t>(M));
    for (int64_t m = 0; m < M; ++m) {
        if (static_cast<int64_t>(masks[m].size()) != 2 * L)
            throw py::value_error("masks[" + std::to_string(m) + "] must hold 2 * layers = " + std::to_string(2 * L) +
                                  " arrays (weight, bias per layer), got " + std::to_string(masks[m].size()));
        for (int64_t l = 0; l < L; ++l) {
            const std::string base = "masks[" + std::to_string(m) + "]";
            expect_shape(masks[m][2 * l], base + "[" + std::to_string(2 * l) + "] (weight mask)", {widths[l + 1], widths[l]});
            expect_shape(masks[m][2 * l + 1], base + "[" + std::to_string(2 * l + 1) + "] (bias mask)", {widths[l + 1]});
            layered[m].weight.push_back(reinterpret_cast<const uint8_t*>(masks[m][2 * l].data()));
            layered[m].bias.push_back(reinterpret_cast<const uint8_t*>(masks[m][2 * l + 1].data()));
        }
    }
    py::array_t<int64_t> kept({M, 2 * L});
    py::array_t<int64_t> effective({M, 2 * L});
    py::array_t<int64_t> dead({M, std::max<int64_t>(L - 1, 0)});
    int64_t* kp = kept.mutable_data();
    int64_t* ep = effective.mutable_data();
    int64_t* dp = dead.mutable_data();
    {
        py::gil_scoped_release release;
#pragma omp parallel for schedule(dynamic, 1) num_threads(resolve_threads(n_threads)) if (M > 1)
        for (int64_t m = 0; m < M; ++m)
            reachability(layered[m], widths, kp + m * 2 * L, ep + m * 2 * L, dp + m * (L - 1));
    }
    return py::make_tuple(kept, effective, dead);
}

}  // namespace

void plantseek::bindings::bind_masks(py::module_& m) {
    m.def("overlap_counts", &py_overlap_counts, py::arg("packed"), py::arg("ref_packed"), py::arg("offsets"),
          py::arg("n_threads") = 0,
          "Per-segment popcounts of packed (M, W) uint64 masks against ref_packed (W,): returns (inter, kept), (M, S) int64.");
    m.def("pack_masks", &py_pack_masks, py::arg("masks"), py::arg("offsets"), py::arg("n_threads") = 0,
          "Bit-pack M masks given as lists of flat bool arrays into (M, offsets[-1]) uint64.");
    m.def("reachability", &py_reachability, py::arg("masks"), py::arg("widths"), py::arg("n_threads") = 0,
          "Kept and effective counts per segment (M, 2L) and dead hidden neurons per layer (M, L-1).");
}
