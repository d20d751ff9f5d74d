"""plantseek.kernels.masks: bit packing and overlap counts on every backend against the PyTorch/NumPy references,
the CUDA launchers (overlap, reachability) and the argument checks, plus the native bindings' own validation."""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plantseek import masks, metrics, native
from plantseek.kernels import masks as K

from kernel_helpers import FIXTURE_OK, cpu
from validation_helpers import names

ext = native.cpu_module()
needs_native = pytest.mark.skipif(ext is None, reason="native core not built")


def _random_mask(gen, widths, density):
    out = []
    for n_in, n_out in zip(widths[:-1], widths[1:]):
        out.append((torch.rand(n_out, n_in, generator=gen) < density, torch.rand(n_out, generator=gen) < density))
    return out


def _numpy_pack(ms):
    segs = [masks.segments(m) for m in ms]
    sizes = [s.numel() for s in segs[0]]
    offsets = K.segment_word_offsets(sizes)
    out = np.zeros((len(ms), int(offsets[-1])), dtype=np.uint64)
    as_bytes = out.view(np.uint8)
    for k, n in enumerate(sizes):
        if n:
            packed = np.packbits(torch.stack([s[k] for s in segs]).numpy(), axis=1, bitorder="little")
            as_bytes[:, int(offsets[k]) * 8:int(offsets[k]) * 8 + packed.shape[1]] = packed
    return out, offsets


widths_st = st.lists(st.integers(0, 70), min_size=2, max_size=5)
density_st = st.sampled_from([0.0, 0.05, 0.5, 1.0])


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(widths=widths_st, M=st.sampled_from([1, 2, 9]), density=density_st, ref_density=density_st,
       seed=st.integers(0, 1000))
def test_overlap_matches_reference(backend, widths, M, density, ref_density, seed):
    gen = torch.Generator().manual_seed(seed)
    found = [_random_mask(gen, widths, density) for _ in range(M)]
    ticket = _random_mask(gen, widths, ref_density)
    got = K.overlap_counts(backend.to(found), backend.to(ticket))
    want = K.overlap_counts_reference(found, ticket)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    packed, offsets = K.pack(backend.to(found))
    ref_packed, ref_offsets = _numpy_pack(found)
    np.testing.assert_array_equal(packed, ref_packed)
    np.testing.assert_array_equal(offsets, ref_offsets)
    back = K.unpack(packed, offsets, found[0])
    for a, b in zip(back, found):
        for (wa, ba), (wb, bb) in zip(a, b):
            assert torch.equal(wa, wb) and torch.equal(ba, bb)


def test_non_contiguous_masks_pack_correctly(backend):
    gen = torch.Generator().manual_seed(0)
    w = torch.rand(40, 30, generator=gen) < 0.4
    m = backend.to([(w.t(), torch.rand(30, generator=gen)[::1] < 0.5)])  # transposed: not contiguous
    m2 = [(m[0][0].contiguous(), m[0][1])]
    np.testing.assert_array_equal(K.pack([m])[0], K.pack([m2])[0])


def _mask(gen, widths, density):
    return [((torch.rand(widths[i + 1], widths[i], generator=gen) < density),
             (torch.rand(widths[i + 1], generator=gen) < density)) for i in range(len(widths) - 1)]


@pytest.mark.parametrize("widths", [[3, 5, 2], [17, 64, 64, 10], [1, 1], [40, 0, 3]])
@pytest.mark.parametrize("density", [0.0, 0.1, 1.0])
def test_overlap_and_reachability_of_many_masks(backend, widths, density):
    """The kernels behind recovery and connectivity, on the backend's device, equal the references on the CPU
    (on "cuda": the CUDA launchers, called through the dispatchers and directly)."""
    gen = torch.Generator().manual_seed(0)
    cpu_found = [_mask(gen, widths, density) for _ in range(5)]
    cpu_ticket = _mask(gen, widths, 0.3)
    found, ticket = backend.to(cpu_found), backend.to(cpu_ticket)
    want = K.overlap_counts_reference(cpu_found, cpu_ticket)
    runs = [K.overlap_counts(found, ticket)] + ([K.cuda_overlap_counts(found, ticket)] if backend.name == "cuda" else [])
    for got in runs:
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    want = K.reachability_counts_reference(cpu_found)
    runs = [K.reachability_counts(found)] + (
        [K.cuda_reachability(found, widths)] if backend.name == "cuda" else [])
    for got in runs:
        for a, b in zip(got, want):
            assert torch.equal(cpu(a), b)
    assert metrics.recovery(found, ticket) == metrics.recovery(cpu_found, cpu_ticket)


def test_overlap_arguments_are_checked(backend):
    """The dispatcher and the reference name the bad argument alike on every backend."""
    mask = backend.to([(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, dtype=torch.bool))])
    for fn in (K.overlap_counts, K.overlap_counts_reference):
        with names("reference"):
            fn([mask], [])
        with names("found"):
            fn([], mask)
        with names("found"):
            fn(mask[0][0], mask)
        with names("found[1][0][0]"):
            fn([mask, [(mask[0][0].t(), mask[0][1])]], mask)
        with names("found[0][0][1]"):
            fn([[(mask[0][0], mask[0][1].float())]], mask)
        with names("reference[0][0]"):
            fn([mask], [(mask[0][0].float(), mask[0][1])])
    with names("masks"):
        K.pack([])
    with names("masks[1][0][0]"):
        K.pack([mask, [(mask[0][0][:, :2], mask[0][1])]])


def test_cuda_wrappers_check_arguments_before_launching():
    mask = [(torch.ones(2, 3, dtype=torch.bool), torch.ones(2, dtype=torch.bool))]
    with names("reference[0][0]"):
        K.cuda_overlap_counts([mask], mask)  # CPU masks: not for the CUDA kernels
    with names("reference"):
        K.cuda_overlap_counts([mask], [])
    with names("found"):
        K.cuda_overlap_counts(mask[0][0], mask)
    with names("found[1][0][0]"):
        K.cuda_overlap_counts([mask, [(mask[0][0].t(), mask[0][1])]], mask)
    with names("masks_list[0][0][0]"):
        K.cuda_reachability([mask], [3, 2])
    with names("widths"):
        K.cuda_reachability([mask], [3])
    with names("widths[1]"):
        K.cuda_reachability([mask], [3, -2])
    with names("masks_list"):
        K.cuda_reachability([], [3, 2])
    with names("masks_list[0][0][0]"):
        K.cuda_reachability([[(torch.ones(2, 4, dtype=torch.bool), mask[0][1])]], [3, 2])
    with names("masks_list[1][0][1]"):
        K.cuda_reachability([mask, [(mask[0][0], mask[0][1].float())]], [3, 2])


@needs_native
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
