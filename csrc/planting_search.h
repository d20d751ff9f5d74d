// Planting search: the best-matching unused host neuron for each ticket neuron (see
// python/plantseek/kernels/planting_search.py for the exact recipe, which this code follows operation by operation).
#pragma once

#include <cstdint>

namespace plantseek {

struct PlantSearchInput {
    const double* host_weight;  // (n_out, n_in) row-major
    const double* host_bias;    // (n_out,)
    int64_t n_out;
    int64_t n_in;
    const int64_t* indptr;      // (T + 1,) CSR row pointers of the ticket neurons' inputs
    const int64_t* cols;        // (nnz,) host input positions
    const double* vals;         // (nnz,) target values
    const double* bias_vals;    // (T,)
    const uint8_t* has_bias;    // (T,)
    int64_t T;
};

// Returns false (and writes nothing) when there are fewer unused host neurons than ticket neurons.
// `used` (n_out bytes) is updated in place; chosen/scale/matched have T entries.
bool plant_search(const PlantSearchInput& in, uint8_t* used, int64_t* chosen, double* scale,
                  uint8_t* matched, int n_threads);

}  // namespace plantseek
