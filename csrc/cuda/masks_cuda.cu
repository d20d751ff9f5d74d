// CUDA mask kernels: overlap counts on byte masks and layer-by-layer reachability.
#include "masks_cuda.h"

namespace plantseek {
namespace cuda {

namespace {

constexpr int kThreads = 256;

__device__ inline long long block_sum(long long v) {
    __shared__ long long partial[kThreads / 32];
    for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
    const int lane = threadIdx.x % 32;
    const int warp = threadIdx.x / 32;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    long long total = 0;
    if (threadIdx.x == 0)
        for (int w = 0; w < kThreads / 32; ++w) total += partial[w];
    __syncthreads();
    return total;  // valid in thread 0
}

// grid: (chunks, S, M). Each block covers kThreads * kPerThread bytes of one segment of one mask.
constexpr int kPerThread = 16;

__global__ void overlap_kernel(const uint64_t* found_ptrs, const uint64_t* ref_ptrs, const int64_t* sizes, int64_t S,
                               long long* inter, long long* kept) {
    const int64_t s = blockIdx.y;
    const int64_t m = blockIdx.z;
    const int64_t n = sizes[s];
    const uint8_t* a = reinterpret_cast<const uint8_t*>(found_ptrs[m * S + s]);
    const uint8_t* r = reinterpret_cast<const uint8_t*>(ref_ptrs[s]);
    const int64_t start = static_cast<int64_t>(blockIdx.x) * kThreads * kPerThread;
    long long both = 0, mine = 0;
    for (int k = 0; k < kPerThread; ++k) {
        const int64_t i = start + static_cast<int64_t>(k) * kThreads + threadIdx.x;
        if (i < n) {
            const int av = a[i] != 0;
            mine += av;
            both += av & (r[i] != 0);
        }
    }
    both = block_sum(both);
    mine = block_sum(mine);
    if (threadIdx.x == 0 && (both || mine)) {
        atomicAdd(reinterpret_cast<unsigned long long*>(inter + m * S + s), static_cast<unsigned long long>(both));
        atomicAdd(reinterpret_cast<unsigned long long*>(kept + m * S + s), static_cast<unsigned long long>(mine));
    }
}

// grid: (ceil(n_out / warps per block), M); one warp per output row.
__global__ void forward_kernel(const uint64_t* wptrs, const uint64_t* bptrs, const uint8_t* fin, uint8_t* fout,
                               int64_t n_in, int64_t n_out, long long* kept_w, long long* kept_b, int64_t stride) {
    const int64_t m = blockIdx.y;
    const int warps = blockDim.x / 32;
    const int64_t j = static_cast<int64_t>(blockIdx.x) * warps + threadIdx.x / 32;
    const int lane = threadIdx.x % 32;
    if (j >= n_out) return;
    const uint8_t* W = reinterpret_cast<const uint8_t*>(wptrs[m]) + j * n_in;
    const uint8_t* b = reinterpret_cast<const uint8_t*>(bptrs[m]);
    const uint8_t* f = fin + m * n_in;
    int any = 0;
    long long count = 0;
    for (int64_t i = lane; i < n_in; i += 32) {
        const int w = W[i] != 0;
        count += w;
        any |= w & (f[i] != 0);
    }
    for (int offset = 16; offset > 0; offset /= 2) count += __shfl_down_sync(0xffffffffu, count, offset);
    any = __any_sync(0xffffffffu, any);
    if (lane == 0) {
        fout[m * n_out + j] = static_cast<uint8_t>(any || b[j] != 0);
        if (count) atomicAdd(reinterpret_cast<unsigned long long*>(kept_w + m * stride), static_cast<unsigned long long>(count));
        if (b[j]) atomicAdd(reinterpret_cast<unsigned long long*>(kept_b + m * stride), 1ULL);
    }
}

// grid: (ceil(n_in / kThreads), M); one thread per input i walks down the column (coalesced across i).
__global__ void backward_kernel(const uint64_t* wptrs, const uint8_t* fin, const uint8_t* bout, uint8_t* bin,
                                int64_t n_in, int64_t n_out, long long* eff_w, long long* dead, int64_t stride,
                                int64_t dead_stride) {
    const int64_t m = blockIdx.y;
    const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    long long count = 0;
    long long dead_here = 0;
    if (i < n_in) {
        const uint8_t* W = reinterpret_cast<const uint8_t*>(wptrs[m]);
        const uint8_t* bo = bout + m * n_out;
        for (int64_t j = 0; j < n_out; ++j) count += (W[j * n_in + i] != 0) & (bo[j] != 0);
        const int live_in = fin[m * n_in + i] != 0;
        bin[m * n_in + i] = static_cast<uint8_t>(count > 0);
        dead_here = !(live_in && count > 0);
        if (!live_in) count = 0;
    }
    count = block_sum(count);
    long long d = dead ? block_sum(dead_here) : 0;
    if (threadIdx.x == 0) {
        if (count) atomicAdd(reinterpret_cast<unsigned long long*>(eff_w + m * stride), static_cast<unsigned long long>(count));
        if (dead && d) atomicAdd(reinterpret_cast<unsigned long long*>(dead + m * dead_stride), static_cast<unsigned long long>(d));
    }
}

// grid: (ceil(n_out / kThreads), M): kept biases of backward-live neurons.
__global__ void bias_effective_kernel(const uint64_t* bptrs, const uint8_t* bout, int64_t n_out, long long* eff_b,
                                      int64_t stride) {
    const int64_t m = blockIdx.y;
    const int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
    long long v = 0;
    if (j < n_out) v = (reinterpret_cast<const uint8_t*>(bptrs[m])[j] != 0) & (bout[m * n_out + j] != 0);
    v = block_sum(v);
    if (threadIdx.x == 0 && v) atomicAdd(reinterpret_cast<unsigned long long*>(eff_b + m * stride), static_cast<unsigned long long>(v));
}

int64_t blocks_for(int64_t n, int64_t per_block) { return (n + per_block - 1) / per_block; }

}  // namespace

cudaError_t overlap_bytes(const uint64_t* found_ptrs, const uint64_t* ref_ptrs, const int64_t* sizes,
                          int64_t max_size, int64_t M, int64_t S, int64_t* inter, int64_t* kept, cudaStream_t stream) {
    if (M == 0 || S == 0 || max_size == 0) return cudaSuccess;
    dim3 grid(static_cast<unsigned>(blocks_for(max_size, kThreads * kPerThread)), static_cast<unsigned>(S),
              static_cast<unsigned>(M));
    overlap_kernel<<<grid, kThreads, 0, stream>>>(found_ptrs, ref_ptrs, sizes, S, reinterpret_cast<long long*>(inter),
                                                  reinterpret_cast<long long*>(kept));
    return cudaGetLastError();
}

cudaError_t reach_forward(const uint64_t* wptrs, const uint64_t* bptrs, const uint8_t* fin, uint8_t* fout,
                          int64_t M, int64_t n_in, int64_t n_out, int64_t* kept, int64_t L, int64_t l,
                          cudaStream_t stream) {
    if (M == 0 || n_out == 0) return cudaSuccess;
    const int warps = kThreads / 32;
    dim3 grid(static_cast<unsigned>(blocks_for(n_out, warps)), static_cast<unsigned>(M));
    forward_kernel<<<grid, kThreads, 0, stream>>>(wptrs, bptrs, fin, fout, n_in, n_out,
                                                  reinterpret_cast<long long*>(kept + 2 * l),
                                                  reinterpret_cast<long long*>(kept + 2 * l + 1), 2 * L);
    return cudaGetLastError();
}

cudaError_t reach_backward(const uint64_t* wptrs, const uint64_t* bptrs, const uint8_t* fin, const uint8_t* bout,
                           uint8_t* bin, int64_t M, int64_t n_in, int64_t n_out, int64_t* eff, int64_t* dead,
                           int64_t L, int64_t l, cudaStream_t stream) {
    if (M == 0) return cudaSuccess;
    if (n_in > 0) {
        dim3 grid(static_cast<unsigned>(blocks_for(n_in, kThreads)), static_cast<unsigned>(M));
        backward_kernel<<<grid, kThreads, 0, stream>>>(wptrs, fin, bout, bin, n_in, n_out,
                                                       reinterpret_cast<long long*>(eff + 2 * l),
                                                       dead ? reinterpret_cast<long long*>(dead + (l - 1)) : nullptr,
                                                       2 * L, L - 1);
        cudaError_t err = cudaGetLastError();
        if (err != cudaSuccess) return err;
    }
    if (n_out > 0) {
        dim3 grid(static_cast<unsigned>(blocks_for(n_out, kThreads)), static_cast<unsigned>(M));
        bias_effective_kernel<<<grid, kThreads, 0, stream>>>(bptrs, bout, n_out,
                                                             reinterpret_cast<long long*>(eff + 2 * l + 1), 2 * L);
    }
    return cudaGetLastError();
}

}  // namespace cuda
}  // namespace plantseek
