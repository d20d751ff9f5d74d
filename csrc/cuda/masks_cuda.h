// Launchers of the CUDA mask kernels (masks_cuda.cu, bound in csrc/cuda/bindings/masks.cpp).
// All pointers are device pointers; every launcher enqueues on `stream` and returns the launch error
// (cudaSuccess when fine).
#pragma once

#include <cstdint>
#include <cuda_runtime.h>

namespace plantseek {
namespace cuda {

// inter[m*S+s] += popcount-of-bytes(found & ref), kept[m*S+s] += count(found) for byte masks (0/1):
// found_ptrs holds M*S device pointers (segment s of mask m), ref_ptrs S pointers, sizes S element counts
// (all three arrays in device memory; max_size = the largest size). The outputs must be zeroed by the caller.
cudaError_t overlap_bytes(const uint64_t* found_ptrs, const uint64_t* ref_ptrs, const int64_t* sizes,
                          int64_t max_size, int64_t M, int64_t S, int64_t* inter, int64_t* kept, cudaStream_t stream);

// Reachability of layer l for M masks (see masks.h on the CPU for the definitions).
// Forward: fout[m, j] = bias[m][j] || any_i(W[m][j, i] && fin[m, i]); kept[m*2L + 2l] += kept weights,
// kept[m*2L + 2l + 1] += kept biases.
cudaError_t reach_forward(const uint64_t* wptrs, const uint64_t* bptrs, const uint8_t* fin, uint8_t* fout,
                          int64_t M, int64_t n_in, int64_t n_out, int64_t* kept, int64_t L, int64_t l,
                          cudaStream_t stream);
// Backward: bin[m, i] = any_j(W[m][j, i] && bout[m, j]); eff[m*2L + 2l] += kept weights with bout[j] && fin[i];
// eff[m*2L + 2l + 1] += kept biases with bout[j]; when dead != nullptr (l >= 1):
// dead[m*(L-1) + l-1] += count of !(fin[i] && bin[i]).
cudaError_t reach_backward(const uint64_t* wptrs, const uint64_t* bptrs, const uint8_t* fin, const uint8_t* bout,
                           uint8_t* bin, int64_t M, int64_t n_in, int64_t n_out, int64_t* eff, int64_t* dead,
                           int64_t L, int64_t l, cudaStream_t stream);

}  // namespace cuda
}  // namespace plantseek
