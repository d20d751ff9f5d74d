"""Native bit packing and overlap counts against the PyTorch/NumPy references, plus validation."""
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plantseek import masks, native

ext = native.cpu_module()
pytestmark = pytest.mark.skipif(ext is None, reason="native core not built")


def _random_mask(gen, widths, density):
    out = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        out.append((torch.rand(n_out, n_in, generator=gen) < density, torch.rand(n_out, generator=gen) < density))
    return out


def _numpy_pack(ms):
    segs = [masks.segments(m) for m in ms]
    sizes = [s.numel() for s in segs[0]]
    offsets = masks.segment_word_offsets(sizes)
    out = np.zeros((len(ms), int(offsets[-1])), dtype=np.uint64)
    as_bytes = out.view(np.uint8)
    for k, n in enumerate(sizes):
        if n:
            packed = np.packbits(torch.stack([s[k] for s in segs]).numpy(), axis=1, bitorder="little")
            as_bytes[:, int(offsets[k]) * 8:int(offsets[k]) * 8 + packed.shape[1]] = packed
    return out, offsets


widths_st = st.lists(st.integers(0, 70), min_size=2, max_size=5)
density_st = st.sampled_from([0.0, 0.05, 0.5, 1.0])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(widths=widths_st, M=st.sampled_from([1, 2, 9]), density=density_st, ref_density=density_st,
       seed=st.integers(0, 1000))
def test_overlap_matches_reference(widths, M, density, ref_density, seed):
    gen = torch.Generator().manual_seed(seed)
    found = [_random_mask(gen, widths, density) for _ in range(M)]
    ticket = _random_mask(gen, widths, ref_density)
    got = masks.overlap_counts(found, ticket)
    want = masks.overlap_counts_reference(found, ticket)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    packed, offsets = masks.pack(found)
    ref_packed, ref_offsets = _numpy_pack(found)
    np.testing.assert_array_equal(packed, ref_packed)
    np.testing.assert_array_equal(offsets, ref_offsets)
    back = masks.unpack(packed, offsets, found[0])
    for a, b in zip(back, found):
        for (wa, ba), (wb, bb) in zip(a, b):
            assert torch.equal(wa, wb) and torch.equal(ba, bb)


def test_non_contiguous_masks_pack_correctly():
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(40, 30, generator=gen) < 0.4
    m = [(w.t(), torch.rand(30, generator=gen)[::1] < 0.5)]  # transposed: not contiguous
    m2 = [(w.t().contiguous(), m[0][1])]
    np.testing.assert_array_equal(masks.pack([m])[0], masks.pack([m2])[0])


def test_overlap_kernel_validation():
    packed = np.zeros((2, 3), np.uint64)
    ref = np.zeros(3, np.uint64)
    off = np.array([0, 1, 3], np.int64)
    inter, kept = ext.overlap_counts(packed, ref, off)
    assert inter.shape == (2, 2)
    with pytest.raises(TypeError, match="packed"):
        ext.overlap_counts(packed.astype(np.int64), ref, off)
    with pytest.raises(ValueError, match="ref_packed"):
        ext.overlap_counts(packed, ref[:2], off)
    with pytest.raises(ValueError, match="offsets"):
        ext.overlap_counts(packed, ref, np.array([0, 2, 1, 3], np.int64))
    with pytest.raises(ValueError, match="offsets"):
        ext.overlap_counts(packed, ref, np.array([0, 1, 4], np.int64))
    with pytest.raises(ValueError, match="C-contiguous"):
        ext.overlap_counts(np.zeros((3, 2), np.uint64).T, ref, off)
    with pytest.raises(ValueError, match="n_threads"):
        ext.overlap_counts(packed, ref, off, -1)
    with pytest.raises(TypeError, match="bool"):
        ext.pack_masks([[np.zeros(5, np.uint8)]], np.array([0, 1], np.int64))
    with pytest.raises(ValueError, match="offsets"):
        ext.pack_masks([[np.zeros(5, bool)]], np.array([0, 2], np.int64))
    with pytest.raises(ValueError, match="elements"):
        ext.pack_masks([[np.zeros(5, bool)], [np.zeros(6, bool)]], np.array([0, 1], np.int64))
