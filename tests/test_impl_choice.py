"""The path a stack trains on (plantseek.impl_choice): one decision for the whole stack, the native stack's
rule on the CPU, the layer-by-layer rule elsewhere, and which trainings run only the native step."""
from __future__ import annotations

import pytest
import torch

from plantseek import impl_choice as I
from plantseek.kernels import sparse_stack as S

F64 = torch.float64


def test_layer_impls_decide_for_the_whole_stack():
    M, widths = 8, [2, 100, 100, 2]
    def masks(first_density, rest_density):
        g = torch.Generator().manual_seed(0)
        out = []
        for l, (i, o) in enumerate(zip(widths[:-1], widths[1:])):
            d = first_density if l == 0 else rest_density
            out.append((torch.rand(M, o, i, generator=g) < d, torch.ones(M, o, dtype=torch.bool)))
        return out
    # a dense-ish 2-input first layer joins the sparse chain: the stack as a whole is sparse
    assert I.layer_impls(masks(0.9, 0.05)) == ["sparse"] * 3
    assert I.layer_impls(masks(0.05, 0.05), "dense") == ["dense"] * 3
    small = [(wm[:1, :, :], bm[:1]) for wm, bm in masks(0.05, 0.05)]  # one network: 200 + 5000 weights
    small = small[:1] + [(wm[:, :50], bm[:, :50]) for wm, bm in small[1:2]]
    if S.available("cpu", F64):  # the native stack: below STACK_CROSSOVER_DENSITY, or small networks
        assert I.layer_impls(small, dtype=F64) == ["sparse"] * 2
        assert I.layer_impls(masks(0.4, 0.4), dtype=F64) == ["sparse"] * 3
        assert I.layer_impls(masks(1.0, 1.0), dtype=F64) == ["sparse"] * 3  # 10.4k weights per network
        wide = [(torch.ones(2, 300, 200, dtype=torch.bool), torch.ones(2, 300, dtype=torch.bool))] * 2
        assert I.layer_impls(wide, dtype=F64) == ["dense"] * 2  # 60k weights per network, nothing pruned
        assert I.layer_impls([(wm.clone(), bm) for wm, bm in wide[:1]] * 2, dtype=F64) == ["dense"] * 2
        half = [(torch.rand(2, 300, 200, generator=torch.Generator().manual_seed(0)) < 0.3, bm) for _, bm in wide]
        assert I.layer_impls(half, dtype=F64) == ["sparse"] * 2
        assert I.layer_impls(masks(0.4, 0.4), dtype=torch.float16) == ["dense"] * 3  # no native half precision
    with pytest.MonkeyPatch.context() as mp:  # the layer-by-layer rule: size floor and the kernels' crossover
        mp.setattr(S, "available", lambda *a: False)
        assert I.layer_impls(small, dtype=F64) == ["dense"] * 2
        assert I.layer_impls(masks(0.05, 0.05), dtype=F64) == ["sparse"] * 3
        assert I.layer_impls(masks(0.9, 0.05), dtype=F64) == ["sparse"] * 3
        assert I.layer_impls(masks(0.05, 0.9), dtype=F64) == ["dense"] * 3
        assert I.layer_impls(masks(0.4, 0.4), dtype=F64) == ["dense"] * 3


def test_a_malformed_crossover_never_switches_automatically(monkeypatch):
    monkeypatch.setattr(S, "available", lambda *a: False)
    monkeypatch.setenv("PLANTSEEK_SPARSE_CROSSOVER", "not-a-number")
    masks = [(torch.rand(1, 200, 200, generator=torch.Generator().manual_seed(0)) < 0.01,
              torch.ones(1, 200, dtype=torch.bool))]
    assert I.layer_impls(masks, dtype=F64) == ["dense"]
    monkeypatch.setenv("PLANTSEEK_SPARSE_CROSSOVER", "0.25")
    assert I.layer_impls(masks, dtype=F64) == ["sparse"]


def test_plan_puts_dense_members_in_a_block_of_their_own():
    g = torch.Generator().manual_seed(0)
    masks = [(torch.rand(4, 12, 2, generator=g) < 0.3, torch.ones(4, 12, dtype=torch.bool)),
             (torch.rand(4, 3, 12, generator=g) < 0.3, torch.ones(4, 3, dtype=torch.bool))]
    for wm, bm in masks:
        wm[1] = True
        wm[3] = True
    plan = I.plan_training(masks, "auto", F64)
    assert plan.order == [0, 2, 1, 3] and plan.spans == [(0, 2), (2, 4)] and len(plan.impls) == 2
    assert I.plan_training(masks, "dense", F64).spans == [(0, 4)]


def test_stack_only():
    if not S.available("cpu", F64):
        pytest.skip("native SparseStack not available")
    g = torch.Generator().manual_seed(0)
    masks = [(torch.rand((4,) + s, generator=g) < 0.3, torch.rand((4, s[0]), generator=g) < 0.3)
             for s in [(64, 2), (64, 64), (4, 64)]]
    assert I.stack_only(masks, "auto", F64)
    assert not I.stack_only([(wm[:1], bm[:1]) for wm, bm in masks], "auto", F64)
    assert not I.stack_only(masks, "dense", F64)
