// Pruning scores: exact top-k selection with deterministic ties, and multi-round SynFlow for a batch of
// networks of one shape.
#pragma once

#include <cstdint>
#include <cstring>
#include <vector>

namespace plantseek {

// Order-preserving map from a finite float/double to an unsigned key (a < b  <=>  key(a) < key(b);
// -0.0 and +0.0 map to the same key).
inline uint64_t order_key(double x) {
    if (x == 0.0) x = 0.0;  // fold -0.0 into +0.0
    uint64_t bits;
    std::memcpy(&bits, &x, sizeof bits);
    return (bits >> 63) ? ~bits : (bits | (1ULL << 63));
}

// Threshold of an exact top-k: an element with key > key is kept; among elements whose key equals `key`,
// the first `need` in index order are kept. keep_all / keep_none short-circuit.
struct Threshold {
    uint64_t key = 0;
    int64_t need = 0;
    bool keep_all = false;
    bool keep_none = false;
};

// Exact top-k over `n` keys (in index order).
Threshold select_threshold(const uint64_t* keys, int64_t n, int64_t k);

// Top-k masks for M networks whose scores come in S segments each (segment s of network m starts at
// values[m * S + s] and has sizes[s] elements). Segments with group[s] >= 0 compete within their group
// (k[group] kept, the largest scores, ties to the lowest index in segment order); segments with
// group[s] < 0 are kept entirely. eligible (empty, or M * S pointers that may be null) restricts the
// candidates: an ineligible element is never kept and not counted (the caller ensures k <= eligible count;
// otherwise every eligible element is kept); a segment outside every group keeps its eligibility.
// masks[m * S + s] receives 0/1 bytes.
template <class T>
void topk_masks(const std::vector<const T*>& values, const std::vector<const uint8_t*>& eligible,
                const std::vector<int64_t>& sizes,
                const std::vector<int64_t>& group, const std::vector<int64_t>& k, int64_t M,
                const std::vector<uint8_t*>& masks, int n_threads);

// Per row of an M x P row-major matrix `scores`: out (M x P bytes) keeps exactly k entries, the largest
// scores among the eligible ones (eligible: M x P bytes, or null for all), ties to the lowest column. The
// caller ensures k <= every row's eligible count and that no score is NaN (the binding checks both). A
// bounded heap of the k best for k up to an eighth of a row's candidates (the mask updates of SET and RigL:
// one pass, the rare insertions cost log k), a selection among a copy above.
template <class T>
void rows_topk(const T* scores, const uint8_t* eligible, int64_t M, int64_t P, int64_t k, uint8_t* out,
               int n_threads);

// Per row m of an M x P row-major matrix: out[m] = its k[m]-th largest value (1 <= k[m] <= P, checked by the
// caller), NaN ranked above every number as torch.topk ranks it. A radix selection over a copy of the row's
// order keys: edge-popup's search takes one such threshold per run and layer before every step.
template <class T>
void rows_kth_largest(const T* values, int64_t M, int64_t P, const int64_t* k, T* out, int n_threads);

// One scored parameter of edge-popup's batched search (`ScoreSearch` in plantseek/kernels/scores.py): M networks'
// (R, C) blocks, row-major and contiguous per network, except the gradient, which may have any strides (the
// transposed product of the backward pass). eligible (M x R x C bytes, or null for all) is the current mask;
// the parameter's magnitudes sit in its scope group's (M, P) matrix `mags` at column `offset` (-inf where not
// eligible), from which the next thresholds are taken.
template <class T>
struct ScoredParam {
    T* scores = nullptr;
    T* momentum = nullptr;
    const T* weights = nullptr;
    const uint8_t* eligible = nullptr;
    T* effective = nullptr;
    const T* grad = nullptr;
    int64_t grad_strides[3] = {0, 0, 0};
    int64_t R = 0, C = 0;
    T* mags = nullptr;
    int64_t P = 0, offset = 0;
    int64_t group = 0;
};

// The forward's weights: effective = weight * (keep + (|s| - |s|)), keep = |s| >= threshold[group][m] and
// eligible, as edge-popup's straight-through top-k computes them in PyTorch (the |s| - |s| is zero, or NaN
// for a score gone non-finite, which then fails the run through its loss). thresholds: G x M.
template <class T>
void scored_effective(const std::vector<ScoredParam<T>>& params, const T* thresholds, int64_t M, int n_threads);

// rows_kth_largest with a hint: row m's previous answer hint[m] and a relative band width band[m]. Where the
// hint is a positive number, one pass counts the entries above hint * (1 + band) and gathers those within
// [hint * (1 - band), hint * (1 + band)]; when the rank falls among them a selection over the gathered ones
// gives the answer, otherwise the radix selection does. Exact either way; the band narrows after a hit and
// widens after a miss (band is updated). Edge-popup's thresholds move little from one step to the next.
template <class T>
void rows_kth_largest_near(const T* values, int64_t M, int64_t P, const int64_t* k, const T* hint, double* band,
                           T* out, int n_threads);

// One SGD step of the scores from the effective weights' gradients: g = (weight * sgn(s)) * grad (the
// straight-through estimator), g += weight_decay * s (fused, as torch's add with alpha), heavy-ball momentum
// (the first step copies g) and s += -lr * momentum (fused); then each magnitude |s| into `mags`. The same
// roundings as plantseek.optim.sgd_step_ over the same gradients.
template <class T>
void scored_sgd_step(const std::vector<ScoredParam<T>>& params, int64_t M, T lr, T momentum, T weight_decay,
                     bool first, int n_threads);

// SynFlow for M networks with L layers of widths[0..L]: weights[m * L + l] is (widths[l+1], widths[l])
// float64 row-major, biases[m * L + l] has widths[l+1] entries; init_weight_masks / init_bias_masks give
// the starting masks (0/1 bytes). The linearised network uses |w| * mask and |b| * mask and an all-ones
// input; R is the sum of its outputs; score = |theta| * dR/d|theta| (zero for masked parameters).
//
// rounds == 0: writes the scores of the starting masks into weight_scores / bias_scores (float64).
// rounds  > 0: runs `rounds` rounds; in round r the candidates are the parameters still kept, and each
// group g keeps keep[r * n_groups + g] of them (largest scores, ties to the lowest index in layer order
// weight 0, bias 0, weight 1, ...). Segment 2l is weight l, 2l+1 bias l; group[seg] < 0 means "never
// pruned". The final masks go to out_weight_masks / out_bias_masks.
struct SynflowProblem {
    int64_t M = 0;
    std::vector<int64_t> widths;
    std::vector<const double*> weights, biases;
    std::vector<const uint8_t*> init_weight_masks, init_bias_masks;
    std::vector<int64_t> group;  // 2L entries
    int64_t n_groups = 0;
    int64_t rounds = 0;
    std::vector<int64_t> keep;   // rounds * n_groups
    std::vector<uint8_t*> out_weight_masks, out_bias_masks;
    std::vector<double*> weight_scores, bias_scores;
};

void synflow(const SynflowProblem& p, int n_threads);

}  // namespace plantseek
