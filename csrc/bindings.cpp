// pybind11 bindings of the CPU kernels (module plantseek._C).
//
// Every argument is checked here (type, dtype, shape, contiguity, index ranges) and a bad one raises
// TypeError or ValueError naming it; the kernels themselves trust their inputs. Kernels release the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "common.h"
#include "masks.h"
#include "planting.h"
#include "scores.h"
#include "sparse_linear.h"
#include "sparse_stack.h"

namespace py = pybind11;
using namespace plantseek;

namespace {

std::string shape_string(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s << (d ? ", " : "") << a.shape(d);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

// The argument as a C-contiguous NumPy array of element type T (no conversion: a wrong dtype is an error).
template <class T>
py::array_t<T> expect_array(const py::handle& obj, const std::string& name) {
    if (!py::isinstance<py::array>(obj))
        throw py::type_error(name + " must be a numpy array, got " + py::str(py::type::of(obj)).cast<std::string>());
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!a.dtype().is(py::dtype::of<T>()))
        throw py::type_error(name + " must have dtype " + py::str(py::dtype::of<T>()).cast<std::string>() +
                             ", got " + dtype_name(a));
    if (!(a.flags() & py::array::c_style))
        throw py::value_error(name + " must be C-contiguous (call .contiguous() / np.ascontiguousarray first)");
    return py::reinterpret_borrow<py::array_t<T>>(a);
}

// f(T{}) for T the element type (float32 or float64) of the NumPy array `obj`: the one place the float kernels
// are dispatched on dtype. `name` names the argument in errors.
template <class F>
auto with_float_dtype(const py::handle& obj, const std::string& name, F&& f) {
    if (!py::isinstance<py::array>(obj)) throw py::type_error(name + " must be a numpy array");
    auto dt = py::reinterpret_borrow<py::array>(obj).dtype();
    if (dt.is(py::dtype::of<float>())) return f(float{});
    if (dt.is(py::dtype::of<double>())) return f(double{});
    throw py::type_error(name + " must have dtype float32 or float64, got " + py::str(dt).cast<std::string>());
}

// Checks the shape; -1 in `expected` accepts any extent.
void expect_shape(const py::array& a, const std::string& name, const std::vector<int64_t>& expected) {
    bool ok = a.ndim() == static_cast<py::ssize_t>(expected.size());
    for (size_t d = 0; ok && d < expected.size(); ++d)
        ok = expected[d] < 0 || a.shape(d) == expected[d];
    if (!ok) {
        std::ostringstream s;
        s << name << " must have shape (";
        for (size_t d = 0; d < expected.size(); ++d) {
            s << (d ? ", " : "");
            if (expected[d] < 0) s << "*"; else s << expected[d];
        }
        s << (expected.size() == 1 ? ",)" : ")") << ", got " << shape_string(a);
        throw py::value_error(s.str());
    }
}

void expect_nonnegative_threads(int n_threads) {
    if (n_threads < 0) throw py::value_error("n_threads must be >= 0 (0 = OpenMP default)");
}

// CSR consistency: indptr (rows + 1,) starts at 0, never decreases and ends at len(cols); every column
// index lies in [0, n_cols).
// Row pointers (CSR indptr, segment offsets): start at 0, never decrease, end at `total`.
void check_pointers(const int64_t* ptr, int64_t rows, int64_t total, const std::string& name,
                    const std::string& total_name) {
    if (ptr[0] != 0) throw py::value_error(name + "[0] must be 0");
    for (int64_t r = 0; r < rows; ++r)
        if (ptr[r + 1] < ptr[r])
            throw py::value_error(name + " must be non-decreasing (entry " + std::to_string(r + 1) + ")");
    if (ptr[rows] != total)
        throw py::value_error(name + "[-1] = " + std::to_string(ptr[rows]) + " must equal " + total_name + " = " +
                              std::to_string(total));
}

void check_csr(const int64_t* indptr, int64_t rows, const int64_t* cols, int64_t nnz, int64_t n_cols,
               const std::string& indptr_name, const std::string& cols_name) {
    check_pointers(indptr, rows, nnz, indptr_name, "len(" + cols_name + ")");
    for (int64_t e = 0; e < nnz; ++e)
        if (cols[e] < 0 || cols[e] >= n_cols)
            throw py::value_error(cols_name + "[" + std::to_string(e) + "] = " + std::to_string(cols[e]) +
                                  " is out of range [0, " + std::to_string(n_cols) + ")");
}

// A list (length M) of lists (length S) of bool arrays; checks sizes against the first mask.
std::vector<std::vector<py::array_t<bool>>> mask_lists(const py::handle& obj, const std::string& name,
                                                       std::vector<int64_t>* sizes_out) {
    if (!py::isinstance<py::sequence>(obj)) throw py::type_error(name + " must be a list of lists of bool arrays");
    auto outer = py::reinterpret_borrow<py::sequence>(obj);
    if (outer.size() == 0) throw py::value_error(name + " must hold at least one mask");
    std::vector<std::vector<py::array_t<bool>>> result;
    std::vector<int64_t> sizes;
    for (size_t m = 0; m < outer.size(); ++m) {
        py::object inner_obj = outer[m];
        if (!py::isinstance<py::sequence>(inner_obj))
            throw py::type_error(name + "[" + std::to_string(m) + "] must be a list of bool arrays");
        auto inner = py::reinterpret_borrow<py::sequence>(inner_obj);
        std::vector<py::array_t<bool>> segs;
        for (size_t s = 0; s < inner.size(); ++s) {
            std::string here = name + "[" + std::to_string(m) + "][" + std::to_string(s) + "]";
            segs.push_back(expect_array<bool>(inner[s], here));
            const int64_t n = segs.back().size();
            if (m == 0) {
                sizes.push_back(n);
            } else if (s >= sizes.size() || sizes[s] != n) {
                throw py::value_error(here + " has " + std::to_string(n) + " elements; mask 0 has " +
                                      (s < sizes.size() ? std::to_string(sizes[s]) : std::string("no such segment")));
            }
        }
        if (m > 0 && segs.size() != sizes.size())
            throw py::value_error(name + "[" + std::to_string(m) + "] has " + std::to_string(segs.size()) +
                                  " segments; mask 0 has " + std::to_string(sizes.size()));
        result.push_back(std::move(segs));
    }
    if (sizes_out) *sizes_out = sizes;
    return result;
}

// ------------------------------------------------------------------------------------------------ masks

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

// ------------------------------------------------------------------------------------------------ planting

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

// ------------------------------------------------------------------------------------------------ sparse linear

// The CSR and CSC index structure of M stacked (n_out, n_in) masks, checked once at construction and copied
// (so later changes to the arrays cannot reach the kernels); every training step then reuses it.
class SparsePattern {
public:
    SparsePattern(py::object indptr_obj, py::object cols_obj, py::object csc_indptr_obj, py::object csc_rows_obj,
                  py::object csc_perm_obj, int64_t M, int64_t n_out, int64_t n_in)
        : M_(M), n_out_(n_out), n_in_(n_in) {
        if (M < 0 || n_out < 0 || n_in < 0) throw py::value_error("M, n_out and n_in must be >= 0");
        auto indptr = expect_array<int64_t>(indptr_obj, "indptr");
        auto cols = expect_array<int64_t>(cols_obj, "cols");
        auto csc_indptr = expect_array<int64_t>(csc_indptr_obj, "csc_indptr");
        auto csc_rows = expect_array<int64_t>(csc_rows_obj, "csc_rows");
        auto csc_perm = expect_array<int64_t>(csc_perm_obj, "csc_perm");
        expect_shape(indptr, "indptr", {M * n_out + 1});
        expect_shape(cols, "cols", {-1});
        const int64_t nnz = cols.shape(0);
        expect_shape(csc_indptr, "csc_indptr", {M * n_in + 1});
        expect_shape(csc_rows, "csc_rows", {nnz});
        expect_shape(csc_perm, "csc_perm", {nnz});
        check_csr(indptr.data(), M * n_out, cols.data(), nnz, n_in, "indptr", "cols");
        check_csr(csc_indptr.data(), M * n_in, csc_rows.data(), nnz, n_out, "csc_indptr", "csc_rows");
        // csc_perm must be a bijection onto the CSR entries that maps CSC entry (m, i, j) to CSR entry (m, j, i)
        std::vector<uint8_t> seen(static_cast<size_t>(nnz), 0);
        for (int64_t c = 0; c < M * n_in; ++c) {
            const int64_t m = c / std::max<int64_t>(n_in, 1), i = c % std::max<int64_t>(n_in, 1);
            for (int64_t e = csc_indptr.data()[c]; e < csc_indptr.data()[c + 1]; ++e) {
                const int64_t p = csc_perm.data()[e];
                const int64_t row = m * n_out + csc_rows.data()[e];
                if (p < 0 || p >= nnz || seen[p] || p < indptr.data()[row] || p >= indptr.data()[row + 1] ||
                    cols.data()[p] != i)
                    throw py::value_error("csc_perm[" + std::to_string(e) + "] = " + std::to_string(p) +
                                          " is not the CSR entry of the CSC entry it belongs to");
                seen[p] = 1;
            }
        }
        indptr_.assign(indptr.data(), indptr.data() + M * n_out + 1);
        cols_.assign(cols.data(), cols.data() + nnz);
        csc_indptr_.assign(csc_indptr.data(), csc_indptr.data() + M * n_in + 1);
        csc_rows_.assign(csc_rows.data(), csc_rows.data() + nnz);
        csc_perm_.assign(csc_perm.data(), csc_perm.data() + nnz);
    }
    int64_t M() const { return M_; }
    int64_t n_out() const { return n_out_; }
    int64_t n_in() const { return n_in_; }
    int64_t nnz() const { return static_cast<int64_t>(cols_.size()); }
    CsrView csr() const { return CsrView{indptr_.data(), cols_.data(), n_out_, n_in_}; }
    CsrView csc() const { return CsrView{csc_indptr_.data(), csc_rows_.data(), n_in_, n_out_}; }
    const int64_t* csc_perm() const { return csc_perm_.data(); }

private:
    int64_t M_, n_out_, n_in_;
    std::vector<int64_t> indptr_, cols_, csc_indptr_, csc_rows_, csc_perm_;
};

// Checks the batch length B against a feature-major array's padded length and returns Bp.
int64_t expect_batch(int64_t B, const py::array& a, const std::string& name) {
    if (B < 0) throw py::value_error("batch must be >= 0, got " + std::to_string(B));
    const int64_t Bp = padded_batch(B);
    if (a.ndim() != 3 || a.shape(2) != Bp)
        throw py::value_error(name + " must have " + std::to_string(Bp) + " (padded) batch lanes for batch " +
                              std::to_string(B) + ", got shape " + shape_string(a));
    return Bp;
}

template <class T>
py::array_t<T> sparse_forward_typed(py::object xt_obj, const SparsePattern& pat, py::object vals_obj,
                                    py::object bias_obj, bool relu, int64_t B, int n_threads) {
    auto xt = expect_array<T>(xt_obj, "xt");
    expect_shape(xt, "xt", {pat.M(), pat.n_in(), -1});
    const int64_t Bp = expect_batch(B, xt, "xt");
    auto vals = expect_array<T>(vals_obj, "vals");
    expect_shape(vals, "vals", {pat.nnz()});
    const T* bias = nullptr;
    py::array_t<T> bias_arr;
    if (!bias_obj.is_none()) {
        bias_arr = expect_array<T>(bias_obj, "bias");
        expect_shape(bias_arr, "bias", {pat.M(), pat.n_out()});
        bias = bias_arr.data();
    }
    py::array_t<T> yt({pat.M(), pat.n_out(), Bp});
    {
        py::gil_scoped_release release;
        sparse_fm_forward<T>(xt.data(), pat.M(), B, Bp, pat.csr(), vals.data(), bias, relu, yt.mutable_data(),
                             n_threads);
    }
    return yt;
}

py::array py_sparse_fm_forward(py::object xt, const SparsePattern& pattern, py::object vals, py::object bias,
                               bool relu, int64_t batch, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(xt, "xt", [&](auto t) -> py::array {
        return sparse_forward_typed<decltype(t)>(xt, pattern, vals, bias, relu, batch, n_threads);
    });
}

template <class T>
py::tuple sparse_backward_typed(py::object gyt_obj, py::object xt_obj, py::object yt_obj, const SparsePattern& pat,
                                py::object vals_obj, int64_t B, bool need_x, bool need_w, bool need_b, int n_threads) {
    auto gyt = expect_array<T>(gyt_obj, "grad_yt");
    expect_shape(gyt, "grad_yt", {pat.M(), pat.n_out(), -1});
    const int64_t Bp = expect_batch(B, gyt, "grad_yt");
    auto xt = expect_array<T>(xt_obj, "xt");
    expect_shape(xt, "xt", {pat.M(), pat.n_in(), Bp});
    const T* yt = nullptr;
    py::array_t<T> yt_arr;
    if (!yt_obj.is_none()) {
        yt_arr = expect_array<T>(yt_obj, "yt");
        expect_shape(yt_arr, "yt", {pat.M(), pat.n_out(), Bp});
        yt = yt_arr.data();
    }
    auto vals = expect_array<T>(vals_obj, "vals");
    expect_shape(vals, "vals", {pat.nnz()});
    py::object gx_obj = py::none(), gv_obj = py::none(), gb_obj = py::none();
    T* gx = nullptr;
    T* gv = nullptr;
    T* gb = nullptr;
    if (need_x) {
        py::array_t<T> a({pat.M(), pat.n_in(), Bp});
        gx = a.mutable_data();
        gx_obj = a;
    }
    if (need_w) {
        py::array_t<T> a(pat.nnz());
        gv = a.mutable_data();
        gv_obj = a;
    }
    if (need_b) {
        py::array_t<T> a({pat.M(), pat.n_out()});
        gb = a.mutable_data();
        gb_obj = a;
    }
    {
        py::gil_scoped_release release;
        sparse_fm_backward<T>(gyt.data(), xt.data(), yt, pat.M(), B, Bp, pat.csr(), vals.data(), pat.csc(),
                              pat.csc_perm(), gx, gv, gb, n_threads);
    }
    return py::make_tuple(gx_obj, gv_obj, gb_obj);
}

py::tuple py_sparse_fm_backward(py::object gyt, py::object xt, py::object yt, const SparsePattern& pattern,
                                py::object vals, int64_t batch, bool need_x, bool need_w, bool need_b, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(gyt, "grad_yt", [&](auto t) {
        return sparse_backward_typed<decltype(t)>(gyt, xt, yt, pattern, vals, batch, need_x, need_w, need_b, n_threads);
    });
}

template <class T>
py::array_t<T> to_fm_typed(py::object x_obj, int n_threads) {
    auto x = expect_array<T>(x_obj, "x");
    expect_shape(x, "x", {-1, -1, -1});
    const int64_t M = x.shape(0), B = x.shape(1), n = x.shape(2), Bp = padded_batch(B);
    py::array_t<T> xt({M, n, Bp});
    {
        py::gil_scoped_release release;
        to_feature_major<T>(x.data(), M, B, n, Bp, xt.mutable_data(), n_threads);
    }
    return xt;
}

py::array py_to_feature_major(py::object x, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(x, "x", [&](auto t) -> py::array { return to_fm_typed<decltype(t)>(x, n_threads); });
}

template <class T>
py::array_t<T> from_fm_typed(py::object xt_obj, int64_t B, int n_threads) {
    auto xt = expect_array<T>(xt_obj, "xt");
    expect_shape(xt, "xt", {-1, -1, -1});
    expect_batch(B, xt, "xt");
    const int64_t M = xt.shape(0), n = xt.shape(1), Bp = xt.shape(2);
    py::array_t<T> x({M, B, n});
    {
        py::gil_scoped_release release;
        from_feature_major<T>(xt.data(), M, n, Bp, B, x.mutable_data(), n_threads);
    }
    return x;
}

py::array py_from_feature_major(py::object xt, int64_t batch, int n_threads) {
    expect_nonnegative_threads(n_threads);
    return with_float_dtype(xt, "xt", [&](auto t) -> py::array {
        return from_fm_typed<decltype(t)>(xt, batch, n_threads);
    });
}

// ------------------------------------------------------------------------------------------------ scores

template <class T>
py::list topk_typed(const py::sequence& outer, const py::object& eligible_obj, const std::vector<int64_t>& group,
                    const std::vector<int64_t>& k, int n_threads) {
    const int64_t M = static_cast<int64_t>(outer.size());
    const int64_t S = static_cast<int64_t>(group.size());
    const int64_t G = static_cast<int64_t>(k.size());
    std::vector<py::array_t<T>> keep_alive;
    std::vector<const T*> values;
    std::vector<int64_t> sizes(S, 0);
    for (int64_t m = 0; m < M; ++m) {
        py::object inner_obj = outer[m];
        if (!py::isinstance<py::sequence>(inner_obj))
            throw py::type_error("scores[" + std::to_string(m) + "] must be a list of arrays");
        auto inner = py::reinterpret_borrow<py::sequence>(inner_obj);
        if (static_cast<int64_t>(inner.size()) != S)
            throw py::value_error("scores[" + std::to_string(m) + "] has " + std::to_string(inner.size()) +
                                  " segments, group has " + std::to_string(S));
        for (int64_t s = 0; s < S; ++s) {
            const std::string here = "scores[" + std::to_string(m) + "][" + std::to_string(s) + "]";
            auto a = expect_array<T>(inner[s], here);
            if (m == 0) sizes[s] = a.size();
            else if (a.size() != sizes[s])
                throw py::value_error(here + " has " + std::to_string(a.size()) + " elements; network 0 has " + std::to_string(sizes[s]));
            const T* p = a.data();
            for (int64_t i = 0; i < static_cast<int64_t>(a.size()); ++i)
                if (p[i] != p[i]) throw py::value_error(here + " contains NaN");
            values.push_back(p);
            keep_alive.push_back(a);
        }
    }
    std::vector<py::array_t<bool>> eligible_alive;
    std::vector<const uint8_t*> eligible;
    if (!eligible_obj.is_none()) {
        std::vector<int64_t> el_sizes;
        auto lists = mask_lists(eligible_obj, "eligible", &el_sizes);
        if (static_cast<int64_t>(lists.size()) != M || el_sizes != sizes)
            throw py::value_error("eligible must have the structure of scores");
        std::vector<int64_t> count(static_cast<size_t>(M * G), 0);
        for (int64_t m = 0; m < M; ++m)
            for (int64_t s = 0; s < S; ++s) {
                const uint8_t* p = reinterpret_cast<const uint8_t*>(lists[m][s].data());
                eligible.push_back(p);
                eligible_alive.push_back(lists[m][s]);
                if (group[s] >= 0)
                    for (int64_t i = 0; i < sizes[s]; ++i) count[m * G + group[s]] += p[i];
            }
        for (int64_t m = 0; m < M; ++m)
            for (int64_t g = 0; g < G; ++g)
                if (k[g] > count[m * G + g])
                    throw py::value_error("cannot keep " + std::to_string(k[g]) + " parameters in group " +
                                          std::to_string(g) + " of network " + std::to_string(m) + ": only " +
                                          std::to_string(count[m * G + g]) + " are eligible");
    } else {
        std::vector<int64_t> total(static_cast<size_t>(G), 0);
        for (int64_t s = 0; s < S; ++s)
            if (group[s] >= 0) total[group[s]] += sizes[s];
        for (int64_t g = 0; g < G; ++g)
            if (k[g] > total[g])
                throw py::value_error("cannot keep " + std::to_string(k[g]) + " parameters in group " +
                                      std::to_string(g) + ": it has only " + std::to_string(total[g]));
    }
    py::list result;
    std::vector<uint8_t*> masks;
    for (int64_t m = 0; m < M; ++m) {
        py::list row;
        for (int64_t s = 0; s < S; ++s) {
            py::array_t<bool> out(keep_alive[m * S + s].request().shape);
            masks.push_back(reinterpret_cast<uint8_t*>(out.mutable_data()));
            row.append(out);
        }
        result.append(row);
    }
    {
        py::gil_scoped_release release;
        topk_masks<T>(values, eligible, sizes, group, k, M, masks, n_threads);
    }
    return result;
}

py::list py_topk_masks(py::object scores_obj, std::vector<int64_t> group, std::vector<int64_t> k, py::object eligible,
                       int n_threads) {
    expect_nonnegative_threads(n_threads);
    if (!py::isinstance<py::sequence>(scores_obj)) throw py::type_error("scores must be a list of lists of arrays");
    auto outer = py::reinterpret_borrow<py::sequence>(scores_obj);
    if (outer.size() == 0) throw py::value_error("scores must hold at least one network");
    const int64_t G = static_cast<int64_t>(k.size());
    for (size_t s = 0; s < group.size(); ++s)
        if (group[s] >= G) throw py::value_error("group[" + std::to_string(s) + "] = " + std::to_string(group[s]) +
                                                 " has no entry in k (" + std::to_string(G) + " groups)");
    for (int64_t g = 0; g < G; ++g)
        if (k[g] < 0) throw py::value_error("k[" + std::to_string(g) + "] must be >= 0");
    py::object first_inner = outer[0];
    if (!py::isinstance<py::sequence>(first_inner))
        throw py::type_error("scores[0] must be a list of arrays");
    if (py::len(first_inner) == 0) {
        if (!group.empty()) throw py::value_error("scores[0] is empty but group has entries");
        py::list r;
        for (size_t m = 0; m < outer.size(); ++m) r.append(py::list());
        return r;
    }
    py::object first = py::reinterpret_borrow<py::sequence>(first_inner)[0];
    return with_float_dtype(first, "scores[0][0]", [&](auto t) {
        return topk_typed<decltype(t)>(outer, eligible, group, k, n_threads);
    });
}

py::object py_synflow(py::object weights_obj, py::object biases_obj, py::object wmask_obj, py::object bmask_obj,
                      std::vector<int64_t> group, int64_t rounds, std::vector<int64_t> keep, int n_threads) {
    expect_nonnegative_threads(n_threads);
    if (rounds < 0) throw py::value_error("rounds must be >= 0");
    auto seq = [](const py::object& o, const std::string& name) {
        if (!py::isinstance<py::sequence>(o)) throw py::type_error(name + " must be a list (one entry per network)");
        return py::reinterpret_borrow<py::sequence>(o);
    };
    auto W = seq(weights_obj, "weights"), Bs = seq(biases_obj, "biases");
    auto WM = seq(wmask_obj, "weight_masks"), BM = seq(bmask_obj, "bias_masks");
    const int64_t M = static_cast<int64_t>(W.size());
    if (M == 0) throw py::value_error("weights must hold at least one network");
    if (static_cast<int64_t>(Bs.size()) != M || static_cast<int64_t>(WM.size()) != M || static_cast<int64_t>(BM.size()) != M)
        throw py::value_error("weights, biases, weight_masks and bias_masks must hold the same number of networks");
    SynflowProblem p;
    p.M = M;
    p.rounds = rounds;
    std::vector<py::object> keep_alive;
    int64_t L = -1;
    for (int64_t m = 0; m < M; ++m) {
        auto wl = seq(W[m], "weights[" + std::to_string(m) + "]");
        auto bl = seq(Bs[m], "biases[" + std::to_string(m) + "]");
        auto wml = seq(WM[m], "weight_masks[" + std::to_string(m) + "]");
        auto bml = seq(BM[m], "bias_masks[" + std::to_string(m) + "]");
        if (m == 0) {
            L = static_cast<int64_t>(wl.size());
            if (L == 0) throw py::value_error("networks must have at least one layer");
        }
        if (static_cast<int64_t>(wl.size()) != L || static_cast<int64_t>(bl.size()) != L ||
            static_cast<int64_t>(wml.size()) != L || static_cast<int64_t>(bml.size()) != L)
            throw py::value_error("network " + std::to_string(m) + " does not have " + std::to_string(L) + " layers in every list");
        for (int64_t l = 0; l < L; ++l) {
            const std::string at = "[" + std::to_string(m) + "][" + std::to_string(l) + "]";
            auto w = expect_array<double>(wl[l], "weights" + at);
            expect_shape(w, "weights" + at, {-1, -1});
            if (m == 0) {
                if (l == 0) p.widths.push_back(w.shape(1));
                else if (w.shape(1) != p.widths.back())
                    throw py::value_error("weights" + at + " has " + std::to_string(w.shape(1)) + " inputs, layer " +
                                          std::to_string(l - 1) + " has " + std::to_string(p.widths.back()) + " outputs");
                p.widths.push_back(w.shape(0));
            }
            expect_shape(w, "weights" + at, {p.widths[l + 1], p.widths[l]});
            auto b = expect_array<double>(bl[l], "biases" + at);
            expect_shape(b, "biases" + at, {p.widths[l + 1]});
            auto wm = expect_array<bool>(wml[l], "weight_masks" + at);
            expect_shape(wm, "weight_masks" + at, {p.widths[l + 1], p.widths[l]});
            auto bm = expect_array<bool>(bml[l], "bias_masks" + at);
            expect_shape(bm, "bias_masks" + at, {p.widths[l + 1]});
            p.weights.push_back(w.data());
            p.biases.push_back(b.data());
            p.init_weight_masks.push_back(reinterpret_cast<const uint8_t*>(wm.data()));
            p.init_bias_masks.push_back(reinterpret_cast<const uint8_t*>(bm.data()));
            keep_alive.insert(keep_alive.end(), {w, b, wm, bm});
        }
    }
    for (int64_t i = 0; i < static_cast<int64_t>(p.widths.size()); ++i)
        if (p.widths[i] > INT32_MAX) throw py::value_error("layer widths above 2^31 are not supported");
    if (static_cast<int64_t>(group.size()) != 2 * L)
        throw py::value_error("group must have 2 * layers = " + std::to_string(2 * L) + " entries");
    int64_t G = 0;
    for (int64_t g : group) G = std::max(G, g + 1);
    p.group = group;
    p.n_groups = G;
    if (rounds > 0 && static_cast<int64_t>(keep.size()) != rounds * G)
        throw py::value_error("keep must have rounds * groups = " + std::to_string(rounds * G) + " entries, got " +
                              std::to_string(keep.size()));
    for (size_t i = 0; i < keep.size(); ++i)
        if (keep[i] < 0) throw py::value_error("keep entries must be >= 0");
    p.keep = keep;
    py::list out_w, out_b;
    for (int64_t m = 0; m < M; ++m) {
        py::list wl, bl;
        for (int64_t l = 0; l < L; ++l) {
            if (rounds == 0) {
                py::array_t<double> ws({p.widths[l + 1], p.widths[l]});
                py::array_t<double> bs(p.widths[l + 1]);
                p.weight_scores.push_back(ws.mutable_data());
                p.bias_scores.push_back(bs.mutable_data());
                wl.append(ws);
                bl.append(bs);
            } else {
                py::array_t<bool> wm({p.widths[l + 1], p.widths[l]});
                py::array_t<bool> bm(p.widths[l + 1]);
                p.out_weight_masks.push_back(reinterpret_cast<uint8_t*>(wm.mutable_data()));
                p.out_bias_masks.push_back(reinterpret_cast<uint8_t*>(bm.mutable_data()));
                wl.append(wm);
                bl.append(bm);
            }
        }
        out_w.append(wl);
        out_b.append(bl);
    }
    {
        py::gil_scoped_release release;
        synflow(p, n_threads);
    }
    return py::make_tuple(out_w, out_b);
}

// ------------------------------------------------------------------------------------------------ sparse stack

// M sparse MLPs trained network by network (sparse_stack.h). The parameter arrays (NumPy views of the caller's
// tensors) are checked once here and updated in place by every step; the patterns and arrays are kept alive.
class PySparseStack {
    // f(the typed stack): the one place the methods are dispatched on the parameters' dtype.
    template <class F>
    auto dispatch(F&& f) {
        if (f32_) return f(*f32_);
        return f(*f64_);
    }

    // The inputs x (M, B, n_in), B >= 1, as an array of the parameters' dtype.
    template <class T>
    py::array_t<T> inputs(const py::object& x) const {
        auto xa = expect_array<T>(x, "x");
        expect_shape(xa, "x", {M_, -1, n_in_});
        if (xa.shape(1) < 1) throw py::value_error("x must hold at least one sample per network");
        return xa;
    }

public:
    PySparseStack(const py::sequence& patterns, const py::sequence& vals, const py::sequence& biases,
                  const py::sequence& bias_masks, const std::string& optimizer, double beta1, double beta2, double eps,
                  double weight_decay, double momentum) {
        const size_t L = patterns.size();
        if (L == 0) throw py::value_error("patterns: a stack needs at least one layer");
        if (vals.size() != L || biases.size() != L || bias_masks.size() != L)
            throw py::value_error("patterns, vals, biases and bias_masks must have one entry per layer (got " +
                                  std::to_string(L) + ", " + std::to_string(vals.size()) + ", " +
                                  std::to_string(biases.size()) + ", " + std::to_string(bias_masks.size()) + ")");
        if (optimizer != "adam" && optimizer != "sgd")
            throw py::value_error("optimizer must be 'adam' or 'sgd', got '" + optimizer + "'");
        if (!(beta1 >= 0 && beta1 < 1) || !(beta2 >= 0 && beta2 < 1))
            throw py::value_error("betas must lie in [0, 1)");
        if (!(eps >= 0) || !(weight_decay >= 0) || !(momentum >= 0) || !std::isfinite(eps) ||
            !std::isfinite(weight_decay) || !std::isfinite(momentum))
            throw py::value_error("eps, weight_decay and momentum must be finite and >= 0");
        StackOptimizer opt;
        opt.adam = optimizer == "adam";
        opt.beta1 = beta1;
        opt.beta2 = beta2;
        opt.eps = eps;
        opt.weight_decay = weight_decay;
        opt.momentum = momentum;
        std::vector<StackLayer> layers;
        for (size_t l = 0; l < L; ++l) {
            py::object po = patterns[l];
            if (!py::isinstance<SparsePattern>(po))
                throw py::type_error("patterns[" + std::to_string(l) + "] must be a SparsePattern");
            const SparsePattern& pat = po.cast<const SparsePattern&>();
            if (l == 0) M_ = pat.M();
            if (pat.M() != M_)
                throw py::value_error("patterns[" + std::to_string(l) + "] holds " + std::to_string(pat.M()) +
                                      " networks, patterns[0] holds " + std::to_string(M_));
            if (l > 0 && pat.n_in() != layers.back().csr.n_rows)
                throw py::value_error("patterns[" + std::to_string(l) + "] takes " + std::to_string(pat.n_in()) +
                                      " inputs, but patterns[" + std::to_string(l - 1) + "] has " +
                                      std::to_string(layers.back().csr.n_rows) + " outputs");
            layers.push_back(StackLayer{pat.csr(), pat.csc(), pat.csc_perm()});
            keep_.append(po);
        }
        n_in_ = layers.front().csr.n_cols;
        L_ = static_cast<int64_t>(L);
        n_out_ = layers.back().csr.n_rows;
        with_float_dtype(vals[0], "vals[0]", [&](auto t) {
            using T = decltype(t);
            std::vector<StackParams<T>> params;
            for (size_t l = 0; l < L; ++l) {
                const std::string k = "[" + std::to_string(l) + "]";
                auto v = expect_array<T>(vals[l], "vals" + k);
                expect_shape(v, "vals" + k, {layers[l].csr.indptr[M_ * layers[l].csr.n_rows]});
                auto b = expect_array<T>(biases[l], "biases" + k);
                expect_shape(b, "biases" + k, {M_, layers[l].csr.n_rows});
                const T* mask = nullptr;
                if (!py::object(bias_masks[l]).is_none()) {
                    auto bm = expect_array<T>(bias_masks[l], "bias_masks" + k);
                    expect_shape(bm, "bias_masks" + k, {M_, layers[l].csr.n_rows});
                    mask = bm.data();
                    keep_.append(bm);
                }
                params.push_back(StackParams<T>{v.mutable_data(), b.mutable_data(), mask});
                keep_.append(v);
                keep_.append(b);
            }
            auto stack = std::make_unique<SparseStack<T>>(layers, params, M_, opt);
            if constexpr (std::is_same_v<T, float>) f32_ = std::move(stack); else f64_ = std::move(stack);
            return 0;
        });
    }

    py::array forward(const py::object& x, int n_threads) {
        expect_nonnegative_threads(n_threads);
        return dispatch([&](auto& stack) -> py::array {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            auto xa = inputs<T>(x);
            const int64_t B = xa.shape(1);
            py::array_t<T> out({M_, B, n_out_});
            {
                py::gil_scoped_release release;
                stack.forward(xa.data(), B, out.mutable_data(), n_threads);
            }
            ready_ = true;
            return out;
        });
    }

    void backward_step(const py::object& grad_out, double lr, int n_threads) {
        expect_nonnegative_threads(n_threads);
        if (!ready_) throw py::value_error("backward_step needs a forward pass first (one step per forward)");
        if (!std::isfinite(lr) || lr < 0) throw py::value_error("lr must be finite and >= 0");
        dispatch([&](auto& stack) {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            auto g = expect_array<T>(grad_out, "grad_out");
            expect_shape(g, "grad_out", {M_, stack.batch(), n_out_});
            {
                py::gil_scoped_release release;
                stack.backward_step(g.data(), lr, n_threads);
            }
            ready_ = false;
            return 0;
        });
    }

    // One fused step: int64 targets (M, B) are class labels (cross-entropy), float targets (M, B, n_out)
    // regression targets (mean squared error). Returns each network's mean loss (M,).
    py::array train_step(const py::object& x, const py::object& targets, const py::object& alive, double lr,
                         int n_threads) {
        expect_nonnegative_threads(n_threads);
        if (!std::isfinite(lr) || lr < 0) throw py::value_error("lr must be finite and >= 0");
        return dispatch([&](auto& stack) -> py::array {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            auto xa = inputs<T>(x);
            const int64_t B = xa.shape(1);
            if (!py::isinstance<py::array>(targets)) throw py::type_error("targets must be a numpy array");
            const bool labelled = py::reinterpret_borrow<py::array>(targets).dtype().is(py::dtype::of<int64_t>());
            py::array_t<int64_t> labels;
            py::array_t<T> values;
            if (labelled) {
                labels = expect_array<int64_t>(targets, "targets");
                expect_shape(labels, "targets", {M_, B});
                const int64_t* y = labels.data();
                for (int64_t k = 0; k < M_ * B; ++k)
                    if (y[k] < 0 || y[k] >= n_out_)
                        throw py::value_error("targets: class label " + std::to_string(y[k]) + " is out of range [0, " +
                                              std::to_string(n_out_) + ")");
            } else {
                values = expect_array<T>(targets, "targets");
                expect_shape(values, "targets", {M_, B, n_out_});
            }
            const uint8_t* alive_ptr = nullptr;
            py::array_t<bool> alive_arr;
            if (!alive.is_none()) {
                alive_arr = expect_array<bool>(alive, "alive");
                expect_shape(alive_arr, "alive", {M_});
                alive_ptr = reinterpret_cast<const uint8_t*>(alive_arr.data());
            }
            py::array_t<T> losses(M_);
            {
                py::gil_scoped_release release;
                stack.train_step(xa.data(), B, labelled ? labels.data() : nullptr, labelled ? nullptr : values.data(),
                                 alive_ptr, lr, losses.mutable_data(), n_threads);
            }
            ready_ = false;
            return losses;
        });
    }

    int64_t steps() {
        return dispatch([](auto& stack) { return stack.steps(); });
    }

    // A copy of layer l's optimiser state `which` (0/1: values' first/second moment or momentum, 2/3: biases').
    py::array state(int64_t l, int which) {
        return dispatch([&](auto& stack) -> py::array {
            using T = typename std::remove_reference_t<decltype(stack)>::value_type;
            if (l < 0 || l >= L_ || which < 0 || which > 3)
                throw py::value_error("state(l, which): l must name a layer and which lie in 0..3");
            const auto& v = stack.state(l, which);
            py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
            std::copy(v.begin(), v.end(), out.mutable_data());
            return out;
        });
    }

    int64_t M() const { return M_; }

private:
    py::list keep_;
    std::unique_ptr<SparseStack<float>> f32_;
    std::unique_ptr<SparseStack<double>> f64_;
    int64_t M_ = 0, n_in_ = 0, n_out_ = 0, L_ = 0;
    bool ready_ = false;
};

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "plantseek CPU kernels (see python/plantseek for the wrappers and PyTorch references)";
    m.def("overlap_counts", &py_overlap_counts, py::arg("packed"), py::arg("ref_packed"), py::arg("offsets"),
          py::arg("n_threads") = 0,
          "Per-segment popcounts of packed (M, W) uint64 masks against ref_packed (W,): returns (inter, kept), (M, S) int64.");
    m.def("pack_masks", &py_pack_masks, py::arg("masks"), py::arg("offsets"), py::arg("n_threads") = 0,
          "Bit-pack M masks given as lists of flat bool arrays into (M, offsets[-1]) uint64.");
    m.def("reachability", &py_reachability, py::arg("masks"), py::arg("widths"), py::arg("n_threads") = 0,
          "Kept and effective counts per segment (M, 2L) and dead hidden neurons per layer (M, L-1).");
    m.def("plant_search", &py_plant_search, py::arg("host_weight"), py::arg("host_bias"), py::arg("indptr"),
          py::arg("cols"), py::arg("vals"), py::arg("bias_vals"), py::arg("has_bias"), py::arg("used"),
          py::arg("n_threads") = 0, "Best-matching host neuron per ticket neuron (see planting_search.py).");
    py::class_<SparsePattern>(m, "SparsePattern",
                              "CSR + CSC structure of M stacked (n_out, n_in) masks, validated once and copied.")
        .def(py::init<py::object, py::object, py::object, py::object, py::object, int64_t, int64_t, int64_t>(),
             py::arg("indptr"), py::arg("cols"), py::arg("csc_indptr"), py::arg("csc_rows"), py::arg("csc_perm"),
             py::arg("M"), py::arg("n_out"), py::arg("n_in"))
        .def_property_readonly("M", &SparsePattern::M)
        .def_property_readonly("n_out", &SparsePattern::n_out)
        .def_property_readonly("n_in", &SparsePattern::n_in)
        .def_property_readonly("nnz", &SparsePattern::nnz);
    py::class_<PySparseStack>(m, "SparseStack",
                              "M sparse MLPs (ReLU between layers) trained network by network: forward(x) -> "
                              "outputs, then backward_step(grad_out, lr) computes every gradient and applies the "
                              "optimiser in place to the given value and bias arrays.")
        .def(py::init<const py::sequence&, const py::sequence&, const py::sequence&, const py::sequence&,
                      const std::string&, double, double, double, double, double>(),
             py::arg("patterns"), py::arg("vals"), py::arg("biases"), py::arg("bias_masks"),
             py::arg("optimizer") = "adam", py::arg("beta1") = 0.9, py::arg("beta2") = 0.999, py::arg("eps") = 1e-8,
             py::arg("weight_decay") = 0.0, py::arg("momentum") = 0.0)
        .def("forward", &PySparseStack::forward, py::arg("x"), py::arg("n_threads") = 0,
             "Outputs (M, B, n_out) for inputs x (M, B, n_in); keeps the activations for backward_step.")
        .def("backward_step", &PySparseStack::backward_step, py::arg("grad_out"), py::arg("lr"),
             py::arg("n_threads") = 0,
             "Gradients for grad_out (M, B, n_out) at the last forward's outputs, and one optimiser step.")
        .def("train_step", &PySparseStack::train_step, py::arg("x"), py::arg("targets"), py::arg("alive") = py::none(),
             py::arg("lr") = 1e-3, py::arg("n_threads") = 0,
             "Forward, loss (int64 labels (M, B): cross-entropy; float targets (M, B, n_out): mean squared error), "
             "backward and optimiser step, network by network; returns the mean loss of each network (M,). Networks "
             "whose `alive` entry is False get no gradient.")
        .def("state", &PySparseStack::state, py::arg("layer"), py::arg("which"),
             "Copy of an optimiser state array (0/1: values' first/second moment or momentum; 2/3: biases').")
        .def_property_readonly("steps", &PySparseStack::steps)
        .def_property_readonly("M", &PySparseStack::M);
    m.def("sparse_fm_forward", &py_sparse_fm_forward, py::arg("xt"), py::arg("pattern"), py::arg("vals"),
          py::arg("bias"), py::arg("relu"), py::arg("batch"), py::arg("n_threads") = 0,
          "yt (M, n_out, Bp) = W xt + b (then ReLU) for feature-major xt (M, n_in, Bp); padding lanes zero.");
    m.def("to_feature_major", &py_to_feature_major, py::arg("x"), py::arg("n_threads") = 0,
          "x (M, B, n) -> feature-major (M, n, padded_batch(B)), padding lanes zero.");
    m.def("from_feature_major", &py_from_feature_major, py::arg("xt"), py::arg("batch"), py::arg("n_threads") = 0,
          "Feature-major xt (M, n, padded_batch(batch)) -> (M, batch, n).");
    m.def("sparse_fm_backward", &py_sparse_fm_backward, py::arg("grad_yt"), py::arg("xt"), py::arg("yt"),
          py::arg("pattern"), py::arg("vals"), py::arg("batch"), py::arg("need_x") = true, py::arg("need_w") = true,
          py::arg("need_b") = true, py::arg("n_threads") = 0,
          "Returns (grad_xt (M, n_in, Bp) or None, grad_vals (nnz,) or None, grad_bias (M, n_out) or None); "
          "yt (the forward output) masks the gradient when the forward applied ReLU.");
    m.def("topk_masks", &py_topk_masks, py::arg("scores"), py::arg("group"), py::arg("k"), py::arg("eligible") = py::none(),
          py::arg("n_threads") = 0,
          "Exact top-k masks per group for M networks (ties to the lowest index in segment order).");
    m.def("synflow", &py_synflow, py::arg("weights"), py::arg("biases"), py::arg("weight_masks"),
          py::arg("bias_masks"), py::arg("group"), py::arg("rounds"), py::arg("keep"), py::arg("n_threads") = 0,
          "SynFlow scores (rounds = 0) or masks after `rounds` pruning rounds, for M networks.");
    m.def("padded_batch", &padded_batch, py::arg("batch"), "Padded batch length (a multiple of 16) of the feature-major buffers.");
}
