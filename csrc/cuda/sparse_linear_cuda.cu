// CUDA sparse masked linear: CSR SpMM (forward and, through the CSC structure, grad_x) and SDDMM (grad_W).
#include "sparse_linear_cuda.h"

namespace plantseek {
namespace cuda {

namespace {

constexpr int kThreads = 128;

// grid: (ceil(n_rows / kThreads), B, M); thread per output element, consecutive threads take consecutive rows.
template <class T>
__global__ void spmm_kernel(const T* x, const int64_t* indptr, const int64_t* cols, const T* vals, const T* bias,
                            T* y, int64_t B, int64_t n_rows, int64_t n_cols, int64_t b0) {
    const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    const int64_t b = b0 + blockIdx.y;
    const int64_t m = blockIdx.z;
    if (j >= n_rows) return;
    const int64_t r = m * n_rows + j;
    const T* xrow = x + (m * B + b) * n_cols;
    T acc = bias ? bias[r] : T(0);
    for (int64_t e = indptr[r]; e < indptr[r + 1]; ++e) acc += vals[e] * xrow[cols[e]];
    y[(m * B + b) * n_rows + j] = acc;
}

template <class T>
__global__ void gather_kernel(const T* vals, const int64_t* perm, T* out, int64_t n) {
    const int64_t e = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    if (e < n) out[e] = vals[perm[e]];
}

// One warp per kept weight; lanes stride over the batch; warp-shuffle reduction.
template <class T>
__global__ void sddmm_kernel(const T* gy, const T* x, const int64_t* rows, const int64_t* cols, T* gvals, int64_t nnz,
                             int64_t B, int64_t n_out, int64_t n_in) {
    const int64_t e = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
    const int lane = threadIdx.x % 32;
    if (e >= nnz) return;
    const int64_t r = rows[e];
    const int64_t m = r / n_out;
    const int64_t j = r - m * n_out;
    const int64_t i = cols[e];
    T acc = T(0);
    for (int64_t b = lane; b < B; b += 32) acc += gy[(m * B + b) * n_out + j] * x[(m * B + b) * n_in + i];
    for (int offset = 16; offset > 0; offset /= 2) acc += __shfl_down_sync(0xffffffffu, acc, offset);
    if (lane == 0) gvals[e] = acc;
}

template <class T>
cudaError_t spmm_typed(const void* x, const int64_t* indptr, const int64_t* cols, const void* vals, const void* bias,
                       void* y, int64_t M, int64_t B, int64_t n_rows, int64_t n_cols, cudaStream_t stream) {
    if (M == 0 || B == 0 || n_rows == 0) return cudaSuccess;
    if (M > 65535) return cudaErrorInvalidConfiguration;
    constexpr int64_t max_grid_y = 65535;
    for (int64_t b0 = 0; b0 < B; b0 += max_grid_y) {
        const int64_t nb = B - b0 < max_grid_y ? B - b0 : max_grid_y;
        dim3 grid(static_cast<unsigned>((n_rows + kThreads - 1) / kThreads), static_cast<unsigned>(nb),
                  static_cast<unsigned>(M));
        spmm_kernel<T><<<grid, kThreads, 0, stream>>>(static_cast<const T*>(x), indptr, cols,
                                                      static_cast<const T*>(vals), static_cast<const T*>(bias),
                                                      static_cast<T*>(y), B, n_rows, n_cols, b0);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
    }
    return cudaSuccess;
}

}  // namespace

cudaError_t spmm(const void* x, const int64_t* indptr, const int64_t* cols, const void* vals, const void* bias,
                 void* y, int64_t M, int64_t B, int64_t n_rows, int64_t n_cols, int dtype, cudaStream_t stream) {
    if (dtype == 0) return spmm_typed<float>(x, indptr, cols, vals, bias, y, M, B, n_rows, n_cols, stream);
    return spmm_typed<double>(x, indptr, cols, vals, bias, y, M, B, n_rows, n_cols, stream);
}

cudaError_t gather(const void* vals, const int64_t* perm, void* out, int64_t n, int dtype, cudaStream_t stream) {
    if (n == 0) return cudaSuccess;
    const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
    if (dtype == 0)
        gather_kernel<float><<<blocks, 256, 0, stream>>>(static_cast<const float*>(vals), perm, static_cast<float*>(out), n);
    else
        gather_kernel<double><<<blocks, 256, 0, stream>>>(static_cast<const double*>(vals), perm, static_cast<double*>(out), n);
    return cudaGetLastError();
}

cudaError_t sddmm(const void* gy, const void* x, const int64_t* rows, const int64_t* cols, void* gvals, int64_t nnz,
                  int64_t B, int64_t n_out, int64_t n_in, int dtype, cudaStream_t stream) {
    if (nnz == 0) return cudaSuccess;
    const int64_t threads = 256;
    const unsigned blocks = static_cast<unsigned>((nnz * 32 + threads - 1) / threads);
    if (dtype == 0)
        sddmm_kernel<float><<<blocks, threads, 0, stream>>>(static_cast<const float*>(gy), static_cast<const float*>(x),
                                                            rows, cols, static_cast<float*>(gvals), nnz, B, n_out, n_in);
    else
        sddmm_kernel<double><<<blocks, threads, 0, stream>>>(static_cast<const double*>(gy), static_cast<const double*>(x),
                                                             rows, cols, static_cast<double*>(gvals), nnz, B, n_out, n_in);
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace plantseek
