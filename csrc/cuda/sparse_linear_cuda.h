// Launchers of the CUDA sparse linear kernels (sparse_linear_cuda.cu, bound in
// csrc/cuda/bindings/sparse_linear.cpp).
// All pointers are device pointers; every launcher enqueues on `stream` and returns the launch error
// (cudaSuccess when fine).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace plantseek {
namespace cuda {

// y[m, b, j] = sum_e vals[e] x[m, b, cols[e]] over the CSR row m*n_rows + j (+ bias[m*n_rows + j] if given).
// x is (M, B, n_cols), y (M, B, n_rows). dtype 0 = float32, 1 = float64.
cudaError_t spmm(const void* x, const int64_t* indptr, const int64_t* cols, const void* vals, const void* bias,
                 void* y, int64_t M, int64_t B, int64_t n_rows, int64_t n_cols, int dtype, cudaStream_t stream);

// out[e] = vals[perm[e]].
cudaError_t gather(const void* vals, const int64_t* perm, void* out, int64_t n, int dtype, cudaStream_t stream);

// gvals[e] = sum_b gy[m, b, j] x[m, b, cols[e]] with r = rows[e] = m * n_out + j.
cudaError_t sddmm(const void* gy, const void* x, const int64_t* rows, const int64_t* cols, void* gvals, int64_t nnz,
                  int64_t B, int64_t n_out, int64_t n_in, int dtype, cudaStream_t stream);

}  // namespace cuda
}  // namespace plantseek
