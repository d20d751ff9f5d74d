// Argument checks shared by the pybind11 bindings of the CPU kernels (module plantseek._C, csrc/bindings/).
//
// The Python dispatchers in plantseek/kernels/ validate every argument before a kernel runs, alike for every
// backend. These checks are the core's own defence: cheap, they throw (TypeError or ValueError naming the
// argument) and never let a bad buffer reach a kernel, whoever calls the module.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

namespace plantseek {
namespace bindings {

namespace py = pybind11;

inline std::string shape_string(const py::array& a) {
    std::ostringstream s;
    s << "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s << (d ? ", " : "") << a.shape(d);
    s << (a.ndim() == 1 ? ",)" : ")");
    return s.str();
}

inline std::string dtype_name(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

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
inline void expect_shape(const py::array& a, const std::string& name, const std::vector<int64_t>& expected) {
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

inline void expect_nonnegative_threads(int n_threads) {
    if (n_threads < 0) throw py::value_error("n_threads must be >= 0 (0 = OpenMP default)");
}

// Row pointers (CSR indptr, segment offsets): start at 0, never decrease, end at `total`.
inline void check_pointers(const int64_t* ptr, int64_t rows, int64_t total, const std::string& name,
                           const std::string& total_name) {
    if (ptr[0] != 0) throw py::value_error(name + "[0] must be 0");
    for (int64_t r = 0; r < rows; ++r)
        if (ptr[r + 1] < ptr[r])
            throw py::value_error(name + " must be non-decreasing (entry " + std::to_string(r + 1) + ")");
    if (ptr[rows] != total)
        throw py::value_error(name + "[-1] = " + std::to_string(ptr[rows]) + " must equal " + total_name + " = " +
                              std::to_string(total));
}

// CSR consistency: indptr (rows + 1,) starts at 0, never decreases and ends at len(cols); every column
// index lies in [0, n_cols).
inline void check_csr(const int64_t* indptr, int64_t rows, const int64_t* cols, int64_t nnz, int64_t n_cols,
                      const std::string& indptr_name, const std::string& cols_name) {
    check_pointers(indptr, rows, nnz, indptr_name, "len(" + cols_name + ")");
    for (int64_t e = 0; e < nnz; ++e)
        if (cols[e] < 0 || cols[e] >= n_cols)
            throw py::value_error(cols_name + "[" + std::to_string(e) + "] = " + std::to_string(cols[e]) +
                                  " is out of range [0, " + std::to_string(n_cols) + ")");
}

// A list (length M) of lists (length S) of bool arrays; checks sizes against the first mask.
inline std::vector<std::vector<py::array_t<bool>>> mask_lists(const py::handle& obj, const std::string& name,
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

}  // namespace bindings
}  // namespace plantseek
