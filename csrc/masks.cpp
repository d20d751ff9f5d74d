#include "masks.h"

#include <algorithm>
#include <cstring>

#include "common.h"

#if defined(__AVX512BW__)
#include <immintrin.h>
#endif

namespace plantseek {

void overlap_counts(const uint64_t* packed, int64_t M, int64_t W, const uint64_t* ref,
                    const int64_t* offsets, int64_t S, int64_t* inter, int64_t* kept, int n_threads) {
    const int threads = resolve_threads(n_threads);
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads) if (M > 1)
    for (int64_t m = 0; m < M; ++m) {
        const uint64_t* row = packed + m * W;
        for (int64_t s = 0; s < S; ++s) {
            int64_t both = 0;
            int64_t mine = 0;
            for (int64_t w = offsets[s]; w < offsets[s + 1]; ++w) {
                both += __builtin_popcountll(row[w] & ref[w]);
                mine += __builtin_popcountll(row[w]);
            }
            inter[m * S + s] = both;
            kept[m * S + s] = mine;
        }
    }
}

// Eight bytes, each 0 or 1, to eight bits (byte i -> bit i). The multiplier places byte i's bit at
// position 56 + i; no two partial products share a bit, so nothing carries.
static inline uint64_t bytes_to_bits(uint64_t eight) {
    return (eight * 0x0102040810204080ULL) >> 56;
}

static uint64_t pack_word(const uint8_t* bytes, int64_t n) {
    if (n == 64) {
#if defined(__AVX512BW__)
        __m512i v = _mm512_loadu_si512(reinterpret_cast<const void*>(bytes));
        return static_cast<uint64_t>(_mm512_test_epi8_mask(v, v));
#else
        uint64_t word = 0;
        for (int b = 0; b < 8; ++b) {
            uint64_t eight;
            std::memcpy(&eight, bytes + 8 * b, 8);
            word |= bytes_to_bits(eight) << (8 * b);
        }
        return word;
#endif
    }
    uint64_t word = 0;
    for (int64_t i = 0; i < n; ++i) word |= static_cast<uint64_t>(bytes[i] != 0) << i;
    return word;
}

void pack_bits(const uint8_t* const* segments, const int64_t* sizes, int64_t S, const int64_t* offsets,
               uint64_t* out) {
    for (int64_t s = 0; s < S; ++s) {
        const uint8_t* seg = segments[s];
        const int64_t n = sizes[s];
        uint64_t* dst = out + offsets[s];
        const int64_t words = offsets[s + 1] - offsets[s];
        for (int64_t w = 0; w < words; ++w) {
            const int64_t start = w * 64;
            const int64_t len = std::max<int64_t>(0, std::min<int64_t>(64, n - start));
            dst[w] = len > 0 ? pack_word(seg + start, len) : 0;
        }
    }
}

// True when some i has a[i] && b[i] (bytes 0/1). Scans in blocks so the compiler can vectorise.
static bool any_and(const uint8_t* a, const uint8_t* b, int64_t n) {
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        uint8_t acc = 0;
        for (int t = 0; t < 64; ++t) acc |= a[i + t] & b[i + t];
        if (acc) return true;
    }
    uint8_t acc = 0;
    for (; i < n; ++i) acc |= a[i] & b[i];
    return acc != 0;
}

static int64_t count_bytes(const uint8_t* a, int64_t n) {
    int64_t total = 0;
    int64_t i = 0;
    for (; i + 256 <= n; i += 256) {
        uint32_t part = 0;
        for (int t = 0; t < 256; ++t) part += a[i + t];
        total += part;
    }
    for (; i < n; ++i) total += a[i];
    return total;
}

static int64_t count_and(const uint8_t* a, const uint8_t* b, int64_t n) {
    int64_t total = 0;
    int64_t i = 0;
    for (; i + 256 <= n; i += 256) {
        uint32_t part = 0;
        for (int t = 0; t < 256; ++t) part += a[i + t] & b[i + t];
        total += part;
    }
    for (; i < n; ++i) total += a[i] & b[i];
    return total;
}

void reachability(const LayeredMask& mask, const std::vector<int64_t>& widths, int64_t* kept,
                  int64_t* effective, int64_t* dead) {
    const int64_t L = static_cast<int64_t>(mask.weight.size());
    // fwd[l]: forward-live flags of the neurons feeding layer l (fwd[0] = the inputs).
    std::vector<std::vector<uint8_t>> fwd(L + 1);
    fwd[0].assign(widths[0], 1);
    for (int64_t l = 0; l < L; ++l) {
        const int64_t n_in = widths[l];
        const int64_t n_out = widths[l + 1];
        fwd[l + 1].assign(n_out, 0);
        const uint8_t* W = mask.weight[l];
        const uint8_t* b = mask.bias[l];
        int64_t kw = 0;
        for (int64_t j = 0; j < n_out; ++j) {
            const uint8_t* row = W + j * n_in;
            kw += count_bytes(row, n_in);
            fwd[l + 1][j] = (b[j] != 0) || any_and(row, fwd[l].data(), n_in);
        }
        kept[2 * l] = kw;
        kept[2 * l + 1] = count_bytes(b, n_out);
    }
    std::vector<uint8_t> bwd_out(widths[L], 1);
    std::vector<uint8_t> bwd_in;
    for (int64_t l = L - 1; l >= 0; --l) {
        const int64_t n_in = widths[l];
        const int64_t n_out = widths[l + 1];
        const uint8_t* W = mask.weight[l];
        const uint8_t* b = mask.bias[l];
        bwd_in.assign(n_in, 0);
        int64_t ew = 0;
        int64_t eb = 0;
        for (int64_t j = 0; j < n_out; ++j) {
            if (!bwd_out[j]) continue;
            const uint8_t* row = W + j * n_in;
            uint8_t* dst = bwd_in.data();
            for (int64_t i = 0; i < n_in; ++i) dst[i] |= row[i];
            ew += count_and(row, fwd[l].data(), n_in);
            eb += b[j] != 0;
        }
        effective[2 * l] = ew;
        effective[2 * l + 1] = eb;
        if (l >= 1) {
            int64_t d = 0;
            for (int64_t i = 0; i < n_in; ++i) d += !(fwd[l][i] && bwd_in[i]);
            dead[l - 1] = d;
        }
        bwd_out.swap(bwd_in);
    }
}

}  // namespace plantseek
