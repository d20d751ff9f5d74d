// The validated CSR + CSC index structure that the sparse-linear and sparse-stack bindings share
// (plantseek._C.SparsePattern; bound in csrc/bindings/sparse_linear.cpp, taken by SparseStack).
#pragma once

#include <pybind11/pybind11.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

#include "checks.h"
#include "sparse_linear.h"

namespace plantseek {
namespace bindings {

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

}  // namespace bindings
}  // namespace plantseek
