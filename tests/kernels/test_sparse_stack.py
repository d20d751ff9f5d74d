"""plantseek.kernels.sparse_stack: the native network-major training step against its PyTorch reference
(hypothesis fuzz over shapes, densities, batches, dtypes and optimisers), its argument errors, and threads."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from plantseek import native
from plantseek.kernels import sparse_linear as pnn
from plantseek.kernels.sparse_stack import NativeStack, ReferenceStack, available
from plantseek.train import TrainConfig

from kernel_helpers import FIXTURE_OK
from validation_helpers import names

ext = native.cpu_module()
pytestmark = pytest.mark.skipif(ext is None or not hasattr(ext, "SparseStack"), reason="native core not built")
# the stack's one kernel is the CPU one; ReferenceStack is what it is compared with, not a backend it falls back to
NO_BACKEND = {"reference": "ReferenceStack is the stack's reference: nothing dispatches to it",
              "cuda": "the native stack has no CUDA kernel (CUDA stacks train layer by layer, kernels.sparse_linear)"}


def _networks(seed, M, widths, density, dtype, bias_density=1.0):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(M, o, i, generator=g, dtype=dtype) * 0.5 for i, o in zip(widths[:-1], widths[1:])]
    bs = [torch.randn(M, o, generator=g, dtype=dtype) * 0.1 for o in widths[1:]]
    masks = [(torch.rand(M, o, i, generator=g) < density, torch.rand(M, o, generator=g) < bias_density)
             for i, o in zip(widths[:-1], widths[1:])]
    return ws, bs, masks


def _pair(ws, bs, masks, cfg):
    """A NativeStack and a ReferenceStack of the same networks, and the structures."""
    structures = [pnn.mask_structure(wm) for wm, _ in masks]
    vals = [w.reshape(-1)[s.pos].clone() for w, s in zip(ws, structures)]
    biases = [(b * bm).contiguous() for b, (_, bm) in zip(bs, masks)]
    bias_masks = [None if bool(bm.all()) else bm for _, bm in masks]
    return NativeStack(structures, vals, biases, bias_masks, cfg), ReferenceStack(ws, bs, masks, cfg), structures


def _close(a, b, dtype):
    tol = 1e-10 if dtype == torch.float64 else 2e-4
    assert torch.allclose(a, b, rtol=tol, atol=tol), float((a - b).abs().max())


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURE_OK)
@given(seed=st.integers(0, 10_000), M=st.integers(1, 4), widths=st.lists(st.integers(1, 24), min_size=2, max_size=5),
       density=st.sampled_from([0.0, 0.05, 0.3, 0.7, 1.0]), batches=st.lists(st.integers(1, 40), min_size=1, max_size=3),
       dtype=st.sampled_from([torch.float64, torch.float32]),
       opt=st.sampled_from(["adam", "adam-wd", "sgd", "sgd-momentum"]), bias_density=st.sampled_from([1.0, 0.5]),
       fused=st.sampled_from([None, "classification", "regression"]))
def test_native_steps_match_the_reference(backend, seed, M, widths, density, batches, dtype, opt, bias_density,
                                          fused):
    """forward + backward_step (a caller's loss), or train_step with the built-in loss (fused), step by step
    against the reference; some networks are not alive in fused steps."""
    cfg = TrainConfig(optimizer=opt.split("-")[0], lr=0.05, weight_decay=0.01 if opt.endswith("wd") else 0.0,
                      momentum=0.9 if opt.endswith("momentum") else 0.0)
    ws, bs, masks = _networks(seed, M, widths, density, dtype, bias_density)
    native_stack, ref, structures = _pair(ws, bs, masks, cfg)
    g = torch.Generator().manual_seed(seed + 1)
    for step, B in enumerate(batches):
        x = torch.randn(M, B, widths[0], generator=g, dtype=dtype)
        lr = 0.05 / (step + 1)
        if fused:
            if fused == "classification":
                y = torch.randint(0, widths[-1], (M, B), generator=g)
            else:
                y = torch.randn(M, B, widths[-1], generator=g, dtype=dtype)
            alive = torch.rand(M, generator=g) < 0.7
            _close(native_stack.train_step(x, y, fused, lr, alive), ref.train_step(x, y, fused, lr, alive), dtype)
        else:
            out = native_stack.forward(x)
            _close(out, ref.forward(x), dtype)
            grad = torch.randn(out.shape, generator=g, dtype=dtype)
            native_stack.backward_step(grad, lr)
            ref.backward_step(grad, lr)
        for a, b in zip(native_stack.vals, ref.kept_values(structures)):
            _close(a, b, dtype)
        for a, b in zip(native_stack.biases, ref.biases):
            _close(a, b.detach(), dtype)
    assert native_stack.steps == len(batches)
    for b, (_, bm) in zip(native_stack.biases, masks):  # pruned biases stay exactly zero
        assert bool((b[~bm] == 0).all())


def test_optimizer_state_is_torch_adams(backend):
    cfg = TrainConfig(lr=0.01)
    ws, bs, masks = _networks(3, 2, [3, 6, 2], 0.5, torch.float64)
    native_stack, ref, structures = _pair(ws, bs, masks, cfg)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    native_stack.forward(x)
    ref.forward(x)
    grad = torch.randn(2, 5, 2, dtype=torch.float64)
    native_stack.backward_step(grad, 0.01)
    ref.backward_step(grad, 0.01)
    w0 = ref.weights[0]
    exp_avg = ref.opt.state[w0]["exp_avg"].reshape(-1)[structures[0].pos]
    assert torch.allclose(torch.from_numpy(native_stack._stack.state(0, 0)), exp_avg, rtol=1e-12, atol=1e-15)
    exp_avg_sq = ref.opt.state[w0]["exp_avg_sq"].reshape(-1)[structures[0].pos]
    assert torch.allclose(torch.from_numpy(native_stack._stack.state(0, 1)), exp_avg_sq, rtol=1e-12, atol=1e-18)


def test_threads_give_the_same_result(backend):
    """Networks run in parallel, each on one thread: the result is bitwise that of one thread."""
    cfg = TrainConfig()
    ws, bs, masks = _networks(5, 8, [4, 100, 100, 3], 0.5, torch.float64)
    results = []
    for threads in (1, 2):
        native_stack, _, _ = _pair(ws, bs, masks, cfg)
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for s in range(3):
                x = torch.randn(8, 32, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(s))
                out = native_stack.forward(x)
                native_stack.backward_step(out * 0.1, 1e-3)
        finally:
            torch.set_num_threads(old)
        results.append([v.clone() for v in native_stack.vals] + [b.clone() for b in native_stack.biases])
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_argument_errors_name_the_problem():
    cfg = TrainConfig()
    ws, bs, masks = _networks(0, 2, [3, 4, 2], 0.5, torch.float64)
    native_stack, _, structures = _pair(ws, bs, masks, cfg)
    with pytest.raises(ValueError, match="needs a forward pass first"):
        native_stack.backward_step(torch.zeros(2, 5, 2, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match=r"x must have shape \(2, \*, 3\)"):
        native_stack.forward(torch.zeros(2, 5, 4, dtype=torch.float64))
    with pytest.raises(TypeError, match="x must have dtype float64"):
        native_stack.forward(torch.zeros(2, 5, 3, dtype=torch.float32))
    with pytest.raises(ValueError, match="at least one sample"):
        native_stack.forward(torch.zeros(2, 0, 3, dtype=torch.float64))
    native_stack.forward(torch.zeros(2, 5, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"grad_out must have shape \(2, 5, 2\)"):
        native_stack.backward_step(torch.zeros(2, 6, 2, dtype=torch.float64), 0.1)
    with pytest.raises(ValueError, match="lr must be finite"):
        native_stack.backward_step(torch.zeros(2, 5, 2, dtype=torch.float64), float("nan"))
    pats = [pnn.native_pattern(s) for s in structures]
    vals = [w.reshape(-1)[s.pos].clone().numpy() for w, s in zip(ws, structures)]
    biases = [b.clone().numpy() for b in bs]
    with pytest.raises(ValueError, match="takes 4 inputs, but patterns\\[0\\] has 4 outputs|takes 3 inputs"):
        ext.SparseStack([pats[0], pats[0]], vals, biases, [None, None])
    with pytest.raises(ValueError, match="one entry per layer"):
        ext.SparseStack(pats, vals[:1], biases, [None, None])
    with pytest.raises(ValueError, match="optimizer must be 'adam' or 'sgd'"):
        ext.SparseStack(pats, vals, biases, [None, None], optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"vals\[1\] must have shape"):
        ext.SparseStack(pats, [vals[0], vals[0][:1]], biases, [None, None])
    with pytest.raises(TypeError, match=r"biases\[0\] must have dtype float64"):
        ext.SparseStack(pats, vals, [biases[0].astype(np.float32), biases[1]], [None, None])
    with pytest.raises(TypeError, match="SparsePattern"):
        ext.SparseStack([pats[0], "layer"], vals, biases, [None, None])
    with pytest.raises(ValueError, match="betas"):
        ext.SparseStack(pats, vals, biases, [None, None], beta1=1.0)


def test_train_step_errors_name_the_problem():
    ws, bs, masks = _networks(0, 2, [3, 4, 2], 0.5, torch.float64)
    native_stack, _, _ = _pair(ws, bs, masks, TrainConfig())
    x = torch.zeros(2, 5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"class label 2 is out of range \[0, 2\)"):
        native_stack.train_step(x, torch.full((2, 5), 2), "classification", 0.1)
    with pytest.raises(ValueError, match=r"targets must have shape \(2, 5\)"):
        native_stack.train_step(x, torch.zeros(2, 4, dtype=torch.int64), "classification", 0.1)
    with pytest.raises(ValueError, match=r"targets must have shape \(2, 5, 2\)"):
        native_stack.train_step(x, torch.zeros(2, 5, 3, dtype=torch.float64), "regression", 0.1)
    with pytest.raises(ValueError, match="int64 labels"):
        native_stack.train_step(x, torch.zeros(2, 5), "classification", 0.1)
    with pytest.raises(ValueError, match=r"alive must have shape \(2,\)"):
        native_stack.train_step(x, torch.zeros(2, 5, dtype=torch.int64), "classification", 0.1, torch.ones(3) > 0)
    logits = native_stack.forward(x)  # the outputs the step's loss is computed on
    labels = torch.tensor([[0, 1, 1, 0, 1], [1, 1, 0, 0, 0]])
    losses = native_stack.train_step(x, labels, "classification", 0.1)
    want = torch.nn.functional.cross_entropy(logits.reshape(10, 2), labels.reshape(10), reduction="none")
    assert losses.shape == (2,) and torch.allclose(losses, want.view(2, 5).mean(dim=1), rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="needs a forward pass first"):  # a fused step leaves nothing to step
        native_stack.backward_step(torch.zeros(2, 5, 2, dtype=torch.float64), 0.1)


def test_construction_arguments_are_checked():
    """NativeStack checks everything once, when it is built (ArgumentError naming the argument); each step then
    relies on the core's own cheap checks (test_argument_errors_name_the_problem)."""
    cfg = TrainConfig()
    ws, bs, masks = _networks(0, 2, [3, 4, 2], 0.5, torch.float64)
    structures = [pnn.mask_structure(wm) for wm, _ in masks]
    vals = [w.reshape(-1)[s.pos].clone() for w, s in zip(ws, structures)]
    biases = [b.clone() for b in bs]
    none = [None, None]
    with names("structures"):
        NativeStack([], vals, biases, none, cfg)
    with names("structures[1]"):
        NativeStack([structures[0], "layer"], vals, biases, none, cfg)
    with names("structures[1]"):
        NativeStack([structures[0], structures[0]], vals, biases, none, cfg)
    with names("vals"):
        NativeStack(structures, vals[:1], biases, none, cfg)
    with names("vals[1]"):
        NativeStack(structures, [vals[0], vals[1][:-1]], biases, none, cfg)
    with names("vals[0]"):
        NativeStack(structures, [v.to(torch.int64) for v in vals], biases, none, cfg)
    with names("biases[0]"):
        NativeStack(structures, vals, [biases[0].float(), biases[1]], none, cfg)
    with names("biases[1]"):
        NativeStack(structures, vals, [biases[0], biases[1].t()], none, cfg)
    with names("bias_masks[0]"):
        NativeStack(structures, vals, biases, [torch.ones(2, 4), None], cfg)
    with names("cfg.optimizer"):  # a config TrainConfig itself would refuse
        NativeStack(structures, vals, biases, none, SimpleNamespace(**{**vars(cfg), "optimizer": "rmsprop"}))
    with names("cfg.betas[0]"):
        NativeStack(structures, vals, biases, none, SimpleNamespace(**{**vars(cfg), "betas": (1.0, 0.999)}))


def test_available_only_for_cpu_floats():
    assert available("cpu", torch.float64) and available("cpu", torch.float32)
    assert not available("cpu", torch.float16)
    assert not available("meta", torch.float32)


# --- carrying the optimiser state over to a rebuilt stack (set_state / set_steps) ---

_CARRY_OPTS = {"adam": dict(optimizer="adam", lr=0.05, weight_decay=0.01),
               "sgd-momentum": dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.01)}


def _carry_setup(opt):
    """A float64 native stack (some pruned biases), its structures and bias masks, the config, and 6 batches
    of (x, labels, grad seed): 3 to train before the rebuild, 3 after."""
    cfg = TrainConfig(**_CARRY_OPTS[opt])
    ws, bs, masks = _networks(11, 3, [4, 7, 5, 3], 0.5, torch.float64, bias_density=0.6)
    native_stack, _, structures = _pair(ws, bs, masks, cfg)
    bias_masks = [None if bool(bm.all()) else bm for _, bm in masks]
    g = torch.Generator().manual_seed(12)
    batches = [(torch.randn(3, B, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (3, B), generator=g))
               for B in (5, 9, 4, 6, 8, 7)]
    return native_stack, structures, bias_masks, cfg, batches


def _train(stack, batches):
    """One fused step, then one forward + backward_step (a caller's loss), alternately."""
    for i, (x, y) in enumerate(batches):
        lr = 0.05 / (i + 1)
        if i % 2:
            out = stack.forward(x)
            stack.backward_step(out * 0.3 - 0.1, lr)
        else:
            stack.train_step(x, y, "classification", lr)


def _snapshot(stack):
    return ([v.clone() for v in stack.vals] + [b.clone() for b in stack.biases]
            + [stack.state(l, w) for l in range(len(stack.vals)) for w in range(4)])


def _rebuilt(stack, structures, bias_masks, cfg, states=True, steps=True):
    """A fresh NativeStack of the same structures and `stack`'s current values and biases, given its optimiser
    state and step count when asked."""
    fresh = NativeStack(structures, [v.clone() for v in stack.vals], [b.clone() for b in stack.biases], bias_masks,
                        cfg)
    if states:
        for l in range(len(stack.vals)):
            for which in range(4):
                fresh.set_state(l, which, stack.state(l, which))
    if steps:
        fresh.set_steps(stack.steps)
    return fresh


@pytest.mark.parametrize("opt", sorted(_CARRY_OPTS))
def test_a_rebuilt_stack_continues_exactly_with_the_carried_state(opt):
    native_stack, structures, bias_masks, cfg, batches = _carry_setup(opt)
    _train(native_stack, batches[:3])
    fresh = _rebuilt(native_stack, structures, bias_masks, cfg)
    assert fresh.steps == native_stack.steps == 3
    for a, b in zip(_snapshot(fresh), _snapshot(native_stack)):
        assert torch.equal(a, b)
    _train(native_stack, batches[3:])
    _train(fresh, batches[3:])
    assert fresh.steps == native_stack.steps == 6
    for a, b in zip(_snapshot(fresh), _snapshot(native_stack)):
        assert torch.equal(a, b)
    sizes = [native_stack.state(0, w).numel() for w in range(4)]
    assert sizes == ([structures[0].nnz, structures[0].nnz, 3 * 7, 3 * 7] if opt == "adam"
                     else [structures[0].nnz, 0, 3 * 7, 0])  # SGD keeps no second moments


@pytest.mark.parametrize("opt", sorted(_CARRY_OPTS))
@pytest.mark.parametrize("carry", ["nothing", "states only", "steps only"])
def test_a_rebuilt_stack_without_the_state_continues_differently(opt, carry):
    """The test above could fail: a stack rebuilt without its state (or without its step count: Adam's bias
    corrections, SGD's first step that ignores the momentum buffer) does not continue the same way."""
    native_stack, structures, bias_masks, cfg, batches = _carry_setup(opt)
    _train(native_stack, batches[:3])
    fresh = _rebuilt(native_stack, structures, bias_masks, cfg, states=carry == "states only",
                     steps=carry == "steps only")
    _train(native_stack, batches[3:])
    _train(fresh, batches[3:])
    assert not all(torch.equal(a, b) for a, b in zip(fresh.vals, native_stack.vals))


def test_set_state_and_set_steps_errors_name_the_problem():
    native_stack, structures, _, _, _ = _carry_setup("adam")
    good = native_stack.state(0, 0)
    n = good.numel()
    with names("layer"):
        native_stack.state(3, 0)  # three layers
    with names("layer"):
        native_stack.set_state(-1, 0, good)
    with names("which"):
        native_stack.set_state(0, 4, good)
    with names("which"):
        native_stack.state(0, 1.5)
    with names("state[0][0]"):
        native_stack.set_state(0, 0, good[:-1])
    with names("state[0][2]"):  # the bias state has another length
        native_stack.set_state(0, 2, good)
    with names("state[0][0]"):
        native_stack.set_state(0, 0, good.float())
    with names("state[0][0]"):
        native_stack.set_state(0, 0, good.reshape(1, n))
    with names("state[0][0]"):
        native_stack.set_state(0, 0, torch.zeros(2 * n, dtype=torch.float64)[::2])
    with names("state[0][0]"):
        native_stack.set_state(0, 0, good.numpy())
    with names("state[0][0]"):
        native_stack.set_state(0, 0, torch.zeros(n, dtype=torch.float64, device="meta"))
    with names("steps"):
        native_stack.set_steps(-1)
    with names("steps"):
        native_stack.set_steps(2.5)
    assert native_stack.steps == 0 and torch.equal(native_stack.state(0, 0), good)  # nothing was changed
    # the core's own checks, when it is called directly
    core = native_stack._stack
    with pytest.raises(ValueError, match=r"layer 3 is outside \[0, 3\)"):
        core.set_state(3, 0, good.numpy())
    with pytest.raises(ValueError, match="which = -1 must lie in 0..3"):
        core.set_state(0, -1, good.numpy())
    with pytest.raises(ValueError, match=rf"state must have shape \({n},\)"):
        core.set_state(0, 0, good[:-1].numpy())
    with pytest.raises(TypeError, match="state must have dtype float64"):
        core.set_state(0, 0, good.float().numpy())
    with pytest.raises(ValueError, match="C-contiguous"):
        core.set_state(0, 0, np.zeros(2 * n)[::2])
    with pytest.raises(ValueError, match="steps must be >= 0"):
        core.set_steps(-3)
    core.set_state(0, 0, np.full(n, 0.5))
    core.set_steps(4)
    assert native_stack.steps == 4 and bool((native_stack.state(0, 0) == 0.5).all())


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), M=st.integers(1, 3), widths=st.lists(st.integers(1, 12), min_size=2, max_size=4),
       density=st.sampled_from([0.1, 0.4, 0.8]), opt=st.sampled_from(["adam", "sgd-momentum"]),
       dtype=st.sampled_from([torch.float64, torch.float32]))
def test_adopt_state_continues_as_masking_the_dense_state(seed, M, widths, density, opt, dtype):
    """Train, change the masks (some weights dropped, some grown, biases pruned), go on: a new native stack that
    adopts the old one's state trains as the reference whose weights and optimiser state are masked in place
    (grown weights start at zero with zero state)."""
    cfg = TrainConfig(optimizer=opt.split("-")[0], lr=0.05, momentum=0.9 if opt.endswith("momentum") else 0.0)
    ws, bs, masks = _networks(seed, M, widths, density, dtype, bias_density=0.7)
    nat, ref, structures = _pair(ws, bs, masks, cfg)
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(M, 8, widths[0], generator=g, dtype=dtype)
    y = torch.randn(M, 8, widths[-1], generator=g, dtype=dtype)
    for _ in range(3):
        nat.train_step(x, y, "regression", 0.05)
        ref.train_step(x, y, "regression", 0.05)
    new = [((torch.rand(wm.shape, generator=g) < density) & (wm | (torch.rand(wm.shape, generator=g) < 0.5)),
            torch.rand(bm.shape, generator=g) < 0.7) for wm, bm in masks]
    # the native side: trained values onto the new structures, then the state
    dense = [torch.zeros(wm.shape, dtype=dtype).reshape(-1).index_put((s.pos,), v).reshape(wm.shape)
             for (wm, _), s, v in zip(masks, structures, nat.vals)]
    st2 = [pnn.mask_structure(wm) for wm, _ in new]
    vals = [d.reshape(-1)[s.pos].clone() for d, s in zip(dense, st2)]
    biases = [(b * bm).contiguous() for b, (_, bm) in zip(nat.biases, new)]
    nat2 = NativeStack(st2, vals, biases, [None if bool(bm.all()) else bm for _, bm in new], cfg)
    nat2.adopt_state(nat, structures, st2)
    assert nat2.steps == nat.steps == 3
    # the reference side: weights, biases and optimiser state masked in place
    with torch.no_grad():
        for l, ((wm, bm), w, b) in enumerate(zip(new, ref.weights, ref.biases)):
            ref.masks[l] = (wm.to(dtype), bm.to(dtype))
            for p, m in ((w, wm), (b, bm)):
                p.mul_(m.to(dtype))
                for t in ref.opt.state[p].values():
                    if isinstance(t, torch.Tensor) and t.shape == p.shape:
                        t.mul_(m.to(dtype))
    for _ in range(3):
        nat2.train_step(x, y, "regression", 0.05)
        ref.train_step(x, y, "regression", 0.05)
    for got, want in zip(nat2.vals, ref.kept_values(st2)):
        _close(got, want, dtype)
    for got, want in zip(nat2.biases, ref.biases):
        _close(got, want.detach(), dtype)


@pytest.mark.parametrize("kind", ["regression", "classification"])
def test_no_alive_flags_train_every_network(kind):
    """alive=None trains every network, as all-True flags do: the binding once read flags past the end of an
    empty array for None, so some networks silently got no gradient (uninitialised memory, seen as a flaky
    adopt_state test)."""
    cfg = TrainConfig(optimizer="adam", lr=0.05)
    M, widths = 64, [3, 5, 2]
    x = torch.randn(M, 8, widths[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = (torch.arange(M * 8).reshape(M, 8) % 2 if kind == "classification"
         else torch.randn(M, 8, widths[-1], generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    for trial in range(20):  # fresh stacks, so each None step meets other memory
        ws, bs, masks = _networks(trial, M, widths, 0.7, torch.float64)
        none, _, _ = _pair(ws, bs, masks, cfg)
        every, _, _ = _pair(ws, bs, masks, cfg)
        for _ in range(2):
            none.train_step(x, y, kind, 0.05)
            every.train_step(x, y, kind, 0.05, torch.ones(M, dtype=torch.bool))
        for got, want in zip(none.vals + none.biases, every.vals + every.biases):
            assert torch.equal(got, want)


def test_adopt_state_refuses_other_networks_and_bad_positions():
    cfg = TrainConfig()
    ws, bs, masks = _networks(0, 2, [3, 4, 2], 0.5, torch.float64)
    nat, _, structures = _pair(ws, bs, masks, cfg)
    other, _, other_st = _pair(*_networks(1, 3, [3, 4, 2], 0.5, torch.float64), cfg)
    with pytest.raises(ValueError, match="same networks"):
        nat.adopt_state(other, other_st, structures)
    with pytest.raises(ValueError, match="one CsrStructure per layer"):
        nat.adopt_state(nat, structures[:1], structures)
    with pytest.raises(ValueError, match="NativeStack"):
        nat.adopt_state(object(), structures, structures)
    if structures[0].nnz >= 2:
        import dataclasses
        bad = dataclasses.replace(structures[0], pos=structures[0].pos.flip(0).contiguous())
        with pytest.raises(ValueError, match="must increase"):
            nat.adopt_state(nat, [bad] + structures[1:], structures)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), M=st.integers(1, 3), widths=st.lists(st.integers(1, 12), min_size=2, max_size=4),
       density=st.sampled_from([0.0, 0.1, 0.5, 1.0]), kind=st.sampled_from(["classification", "regression"]),
       B=st.integers(1, 20), dtype=st.sampled_from([torch.float64, torch.float32]), some_dead=st.booleans())
def test_dense_gradients_match_autograd_and_leave_the_stack_alone(seed, M, widths, density, kind, B, dtype,
                                                                  some_dead):
    """Every position's gradient (pruned ones included) and every bias's, against autograd over the dense masked
    weights; dead networks get zeros; the parameters and a following step are unchanged by the call."""
    cfg = TrainConfig()
    ws, bs, masks = _networks(seed, M, widths, density, dtype, bias_density=0.6)
    nat, ref, _ = _pair(ws, bs, masks, cfg)
    g = torch.Generator().manual_seed(seed + 2)
    x = torch.randn(M, B, widths[0], generator=g, dtype=dtype)
    y = (torch.randint(0, widths[-1], (M, B), generator=g) if kind == "classification"
         else torch.randn(M, B, widths[-1], generator=g, dtype=dtype))
    alive = (torch.arange(M) % 2 == 0) if some_dead else None
    before = [v.clone() for v in nat.vals]
    got, want = nat.dense_gradients(x, y, kind, alive), ref.dense_gradients(x, y, kind, alive)
    for (gw, gb), (rw, rb) in zip(got, want):
        assert gw.shape == rw.shape and gb.shape == rb.shape
        _close(gw, rw, dtype)
        _close(gb, rb, dtype)
        if alive is not None:
            assert not bool(gw[~alive].any()) and not bool(gb[~alive].any())
    assert all(torch.equal(a, b) for a, b in zip(before, nat.vals)) and nat.steps == 0
    _close(nat.train_step(x, y, kind, 0.01), ref.train_step(x, y, kind, 0.01), dtype)
