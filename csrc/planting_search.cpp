#include "planting_search.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common.h"

namespace plantseek {

namespace {

// A sign-matching candidate fits exactly when its L1 residual is rounding noise relative to its values.
constexpr double kExactFit = 1e-12;

// np.sign, with NaN mapped to a value that equals nothing (NaN == NaN is false in NumPy).
int sign_of(double x) {
    if (std::isnan(x)) return 2;
    return (x > 0) - (x < 0);
}

// The NumPy argmin rule over candidates in increasing k: a NaN is the minimum, and the first minimum wins.
struct Best {
    double dist = 0.0;
    double lam = 0.0;
    int64_t k = -1;
};

bool better(double dist, int64_t k, const Best& best) {
    if (best.k < 0) return true;
    const bool nan_new = std::isnan(dist);
    const bool nan_best = std::isnan(best.dist);
    if (nan_new != nan_best) return nan_new;
    if (nan_new) return k < best.k;
    if (dist != best.dist) return dist < best.dist;
    return k < best.k;
}

// np.median of the values (reorders them): the middle value, or (a + b) / 2 of the two middle values;
// NaN if any value is NaN, as in NumPy.
double median(std::vector<double>& x) {
    const size_t n = x.size();
    for (double e : x)
        if (std::isnan(e)) return std::numeric_limits<double>::quiet_NaN();
    const size_t hi = n / 2;
    std::nth_element(x.begin(), x.begin() + hi, x.end());
    const double upper = x[hi];
    if (n % 2 == 1) return upper;
    const double lower = *std::max_element(x.begin(), x.begin() + hi);
    return (lower + upper) / 2.0;
}

}  // namespace

bool plant_search(const PlantSearchInput& in, uint8_t* used, int64_t* chosen, double* scale,
                  uint8_t* matched, int n_threads) {
    int64_t free_count = 0;
    for (int64_t k = 0; k < in.n_out; ++k) free_count += used[k] == 0;
    if (in.T > free_count) return false;
    const int threads = resolve_threads(n_threads);
    std::vector<double> v;
    std::vector<double> u;
    for (int64_t t = 0; t < in.T; ++t) {
        const int64_t begin = in.indptr[t];
        const int64_t end = in.indptr[t + 1];
        const bool with_bias = in.has_bias[t] != 0;
        v.clear();
        if (with_bias) v.push_back(in.bias_vals[t]);
        for (int64_t e = begin; e < end; ++e) v.push_back(in.vals[e]);
        const int64_t s = static_cast<int64_t>(v.size());
        if (s == 0) {
            int64_t k = 0;
            while (used[k]) ++k;
            chosen[t] = k;
            scale[t] = 1.0;
            matched[t] = 0;
            used[k] = 1;
            continue;
        }
        double vv = 0.0;
        for (int64_t i = 0; i < s; ++i) vv = vv + v[i] * v[i];
        std::vector<int> vsign(s);
        std::vector<double> vabs(s);
        for (int64_t i = 0; i < s; ++i) {
            vsign[i] = sign_of(v[i]);
            vabs[i] = std::fabs(v[i]);
        }
        std::vector<double> vabs_copy = vabs;
        const double v_median = median(vabs_copy);

        // The value of candidate k at position i of the target vector.
        auto host_value = [&](int64_t k, int64_t i) {
            if (with_bias) {
                if (i == 0) return in.host_bias[k];
                return in.host_weight[k * in.n_in + in.cols[begin + i - 1]];
            }
            return in.host_weight[k * in.n_in + in.cols[begin + i]];
        };

        Best best_match;   // among sign-matching candidates
        Best best_any;     // magnitude fallback over all free candidates
        std::vector<std::pair<double, int64_t>> exact;  // sign-matching candidates that fit exactly (lam, k)
#pragma omp parallel num_threads(threads) if (in.n_out * s > 20000)
        {
            Best local_match;
            Best local_any;
            std::vector<std::pair<double, int64_t>> local_exact;
            std::vector<double> scratch(static_cast<size_t>(s));
#pragma omp for schedule(static) nowait
            for (int64_t k = 0; k < in.n_out; ++k) {
                if (used[k]) continue;
                bool ok = true;
                for (int64_t i = 0; i < s; ++i) {
                    if (sign_of(host_value(k, i)) != vsign[i]) {
                        ok = false;
                        break;
                    }
                }
                if (ok) {
                    double uv = 0.0;
                    for (int64_t i = 0; i < s; ++i) uv = uv + host_value(k, i) * v[i];
                    const double lam = uv / vv;
                    double dist = 0.0;
                    double norm = 0.0;
                    for (int64_t i = 0; i < s; ++i) {
                        dist = dist + std::fabs(host_value(k, i) - lam * v[i]);
                        norm = norm + std::fabs(host_value(k, i));
                    }
                    if (better(dist, k, local_match)) local_match = Best{dist, lam, k};
                    if (dist <= kExactFit * norm) local_exact.emplace_back(lam, k);
                }
                // Only needed when no candidate matches; cheap enough to compute alongside.
                if (local_match.k < 0) {
                    for (int64_t i = 0; i < s; ++i) scratch[i] = std::fabs(host_value(k, i));
                    const double lam = median(scratch) / v_median;
                    double dist = 0.0;
                    for (int64_t i = 0; i < s; ++i)
                        dist = dist + std::fabs(std::fabs(host_value(k, i)) - lam * vabs[i]);
                    if (better(dist, k, local_any)) local_any = Best{dist, lam, k};
                }
            }
#pragma omp critical
            {
                exact.insert(exact.end(), local_exact.begin(), local_exact.end());
                if (local_match.k >= 0 && better(local_match.dist, local_match.k, best_match))
                    best_match = local_match;
                if (local_any.k >= 0 && better(local_any.dist, local_any.k, best_any)) best_any = local_any;
            }
        }
        Best pick;
        if (exact.size() > 1) {
            // Several candidates fit exactly (always so for a single-input neuron): take the one with the
            // median scale, so neuron scales do not drift through identity chains.
            std::sort(exact.begin(), exact.end());
            const auto& mid = exact[(exact.size() - 1) / 2];
            pick = Best{0.0, mid.first, mid.second};
            matched[t] = 1;
        } else if (best_match.k >= 0) {
            pick = best_match;
            matched[t] = 1;
        } else {
            pick = best_any;
            matched[t] = 0;
        }
        double lam = pick.lam;
        if (!std::isfinite(lam) || !(lam > 0)) lam = 1.0;
        chosen[t] = pick.k;
        scale[t] = lam;
        used[pick.k] = 1;
    }
    return true;
}

}  // namespace plantseek
