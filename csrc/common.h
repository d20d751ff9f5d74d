// Small helpers shared by the CPU kernels: thread counts and NaN-aware comparisons.
#pragma once

#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace plantseek {

// The number of threads a kernel uses: the caller's request (torch.get_num_threads()) when positive,
// otherwise OpenMP's default; always 1 without OpenMP.
inline int resolve_threads(int requested) {
#ifdef _OPENMP
    if (requested > 0) return requested;
    return omp_get_max_threads();
#else
    (void)requested;
    return 1;
#endif
}

// The calling thread's index inside an OpenMP parallel region (0 outside one, or without OpenMP).
inline int thread_index() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

}  // namespace plantseek
