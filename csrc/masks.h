// Mask kernels: bit packing, overlap counts of many masks against one reference, and reachability
// (effective density, dead neurons) of layered masks.
#pragma once

#include <cstdint>
#include <vector>

namespace plantseek {

// For each of M packed masks (row m of `packed`, W words) and each segment s (words offsets[s] to
// offsets[s+1]), writes inter[m*S + s] = popcount(packed & ref) and kept[m*S + s] = popcount(packed).
void overlap_counts(const uint64_t* packed, int64_t M, int64_t W, const uint64_t* ref,
                    const int64_t* offsets, int64_t S, int64_t* inter, int64_t* kept, int n_threads);

// Packs one mask given as S byte segments (each byte 0 or 1; segment s has sizes[s] bytes) into
// `out` (offsets[S] words, little-endian bit order, every segment starting at word offsets[s]).
// Padding bits are written as zero.
void pack_bits(const uint8_t* const* segments, const int64_t* sizes, int64_t S, const int64_t* offsets,
               uint64_t* out);

// One layered mask: L layers, layer l has a weight mask of widths[l+1] x widths[l] bytes (row-major,
// PyTorch (out, in) layout) and a bias mask of widths[l+1] bytes; bytes are 0 or 1.
struct LayeredMask {
    std::vector<const uint8_t*> weight;
    std::vector<const uint8_t*> bias;
};

// Reachability of one layered mask. Inputs are sources; a neuron with a kept bias is a source too.
// A neuron is forward-live when a source reaches it through kept weights, backward-live when it reaches
// an output through kept weights (outputs are backward-live). Writes, per layer l:
//   kept[2l], kept[2l+1]          kept weights / kept biases,
//   effective[2l], effective[2l+1] kept weights (j, i) with i forward-live and j backward-live /
//                                  kept biases of backward-live neurons,
// and for each hidden layer h (0 .. L-2): dead[h] = neurons that are not both forward- and
// backward-live.
void reachability(const LayeredMask& mask, const std::vector<int64_t>& widths, int64_t* kept,
                  int64_t* effective, int64_t* dead);

}  // namespace plantseek
