"""Batched masked training (plantseek.train): batched equals one by one, equals torch.optim, masks hold,
divergence is reported."""
from __future__ import annotations

import math

import pytest
import torch

from plantseek import impl_choice
from plantseek import train as T

F64 = torch.float64


def _problem(M=3, N=150, din=2, H=12, dout=4, density=0.5, seed=0, classification=True):
    g = torch.Generator().manual_seed(seed)
    shapes = [(H, din), (H, H), (dout, H)]
    ws = [torch.randn((M,) + s, generator=g, dtype=F64) * 0.5 for s in shapes]
    bs = [torch.randn((M, s[0]), generator=g, dtype=F64) * 0.1 for s in shapes]
    masks = [(torch.rand(w.shape, generator=g) < density, torch.rand(b.shape, generator=g) < density) for w, b in zip(ws, bs)]
    x = torch.randn(M, N, din, generator=g, dtype=F64)
    y = torch.randint(0, dout, (M, N), generator=g) if classification else torch.randn(M, N, dout, generator=g, dtype=F64)
    return ws, bs, masks, x, y


def _slice(ws, bs, masks, x, y, k):
    return ([w[k:k + 1] for w in ws], [b[k:k + 1] for b in bs], [(a[k:k + 1], c[k:k + 1]) for a, c in masks],
            x[k:k + 1], y[k:k + 1])


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize("kind", ["classification", "regression"])
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_batched_equals_one_by_one(kind, optimizer):
    ws, bs, masks, x, y = _problem(classification=kind == "classification")
    cfg = T.TrainConfig(epochs=3, batch_size=16, optimizer=optimizer, lr=1e-2,
                        momentum=0.9 if optimizer == "sgd" else 0.0, weight_decay=1e-3 if optimizer == "sgd" else 0.0)
    res = T.train(ws, bs, masks, x, y, kind=kind, generators=_gens([5, 6, 7]), config=cfg)
    assert res.failed == [None, None, None]
    for k in range(3):
        one = T.train(*_slice(ws, bs, masks, x, y, k)[:3], *_slice(ws, bs, masks, x, y, k)[3:], kind=kind,
                      generators=_gens([5 + k]), config=cfg)
        for a, b in zip(res.weights + res.biases, one.weights + one.biases):
            assert torch.allclose(a[k], b[0], rtol=0, atol=1e-12)


def test_single_run_matches_torch_adam():
    ws, bs, _, x, y = _problem(M=1, density=1.0)
    full = [(torch.ones(w.shape, dtype=torch.bool), torch.ones(b.shape, dtype=torch.bool)) for w, b in zip(ws, bs)]
    res = T.train(ws, bs, full, x, y, kind="classification", generators=_gens([3]),
                  config=T.TrainConfig(epochs=2, batch_size=32))
    net = torch.nn.Sequential(torch.nn.Linear(2, 12), torch.nn.ReLU(), torch.nn.Linear(12, 12), torch.nn.ReLU(),
                              torch.nn.Linear(12, 4)).double()
    lins = [net[0], net[2], net[4]]
    with torch.no_grad():
        for l, lin in enumerate(lins):
            lin.weight.copy_(ws[l][0])
            lin.bias.copy_(bs[l][0])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(3)
    for _ in range(2):
        perm = torch.randperm(x.shape[1], generator=g)
        for s in range(0, x.shape[1], 32):
            idx = perm[s:s + 32]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[0, idx]), y[0, idx]).backward()
            opt.step()
    for l, lin in enumerate(lins):
        assert torch.allclose(res.weights[l][0], lin.weight.detach(), rtol=0, atol=1e-12)
        assert torch.allclose(res.biases[l][0], lin.bias.detach(), rtol=0, atol=1e-12)


def test_pruned_parameters_stay_zero_and_kept_ones_move():
    ws, bs, masks, x, y = _problem(M=2, density=0.3)
    res = T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([0, 1]), config=T.TrainConfig(epochs=1))
    for (wm, bm), w, b, w0 in zip(masks, res.weights, res.biases, ws):
        assert torch.all(w[~wm] == 0) and torch.all(b[~bm] == 0)
        assert bool((w[wm] != w0[wm]).any())
    # the inputs were not modified
    assert not torch.all(ws[0][~masks[0][0]] == 0)


def test_divergence_names_the_epoch_and_spares_the_others():
    ws, bs, masks, x, y = _problem(M=3, classification=False)
    ws = [w.clone() for w in ws]
    ws[0][1] *= 1e200  # run 1 overflows in its first epoch
    cfg = T.TrainConfig(epochs=2, batch_size=16)
    res = T.train(ws, bs, masks, x, y, kind="regression", generators=_gens([1, 2, 3]), config=cfg,
                  labels=["a", "b", "c"])
    assert res.failed[0] is None and res.failed[2] is None
    err = res.failed[1]
    assert isinstance(err, T.TrainingDiverged) and err.epoch == 1
    assert "epoch 1 of 2" in str(err) and "b" in str(err)
    one = T.train(*_slice(ws, bs, masks, x, y, 2)[:3], *_slice(ws, bs, masks, x, y, 2)[3:], kind="regression",
                  generators=_gens([3]), config=cfg)
    assert torch.allclose(res.weights[0][2], one.weights[0][0], rtol=0, atol=1e-12)


def test_bad_shapes_and_settings():
    ws, bs, masks, x, y = _problem(M=2)
    bad = [(m[:, :-1], bm) for m, bm in masks]
    with pytest.raises(ValueError, match="mask layer 0"):
        T.train(ws, bs, bad, x, y, kind="classification", generators=_gens([0, 1]))
    with pytest.raises(ValueError, match="one generator per run"):
        T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([0]))
    with pytest.raises(ValueError, match="inputs must be"):
        T.train(ws, bs, masks, x[:, :, :1], y, kind="classification", generators=_gens([0, 1]))
    with pytest.raises(ValueError, match="bool"):
        T.train(ws, bs, [(m.double(), bm) for m, bm in masks], x, y, kind="classification", generators=_gens([0, 1]))
    with pytest.raises(ValueError, match="lr"):
        T.TrainConfig(lr=float("nan"))
    with pytest.raises(ValueError, match="optimizer"):
        T.TrainConfig(optimizer="lbfgs")


def test_progress_bar_and_history(capsys):
    ws, bs, masks, x, y = _problem(M=1)
    res = T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([0]),
                  config=T.TrainConfig(epochs=2), progress=True)
    assert len(res.history) == 2 and math.isfinite(res.train_loss[0])


def test_sparse_path_equals_dense():
    ws, bs, masks, x, y = _problem(M=2, density=0.05, H=16)
    cfg = dict(epochs=2, batch_size=16)
    dense = T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([0, 1]),
                    config=T.TrainConfig(impl="dense", **cfg))
    sparse = T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([0, 1]),
                     config=T.TrainConfig(impl="sparse", **cfg))
    for a, b in zip(dense.weights + dense.biases, sparse.weights + sparse.biases):
        assert torch.allclose(a, b, rtol=0, atol=1e-10)


def test_forward_with_masks_matches_per_network():
    ws, bs, masks, x, _ = _problem(M=2)
    out = T.evaluate_outputs(ws, bs, x, masks)
    for k in range(2):
        h = x[k]
        for l, (w, b) in enumerate(zip(ws, bs)):
            h = torch.nn.functional.linear(h, w[k] * masks[l][0][k], b[k] * masks[l][1][k])
            if l < 2:
                h = torch.relu(h)
        assert torch.allclose(out[k], h, rtol=0, atol=1e-12)


@pytest.mark.parametrize("impl", ["auto", "sparse", "dense"])
def test_dense_members_get_their_own_block(impl):
    """Networks with nothing pruned (dense baselines) train in their own block, anywhere in the stack, and every
    network still gets what it gets alone; results come back in the caller's order."""
    ws, bs, masks, x, y = _problem(M=4, density=0.2, H=24)
    full = [(wm.clone(), bm.clone()) for wm, bm in masks]
    for wm, bm in full:
        wm[1] = True
        bm[1] = True
        wm[3] = True
        bm[3] = True
    cfg = T.TrainConfig(epochs=2, batch_size=16, impl=impl)
    res = T.train(ws, bs, full, x, y, kind="classification", generators=_gens([0, 1, 2, 3]), config=cfg,
                  labels=list("abcd"))
    assert res.failed == [None] * 4 and len(res.history[0]) == 4
    for k in range(4):
        one = T.train(*_slice(ws, bs, full, x, y, k)[:3], *_slice(ws, bs, full, x, y, k)[3:], kind="classification",
                      generators=_gens([k]), config=cfg)
        for a, b in zip(res.weights + res.biases, one.weights + one.biases):
            assert torch.allclose(a[k], b[0], rtol=0, atol=1e-10)
        assert res.train_loss[k] == pytest.approx(one.train_loss[0], rel=1e-10)


def test_divergence_in_a_reordered_stack_names_the_right_run():
    ws, bs, masks, x, y = _problem(M=3, classification=False, density=0.3)
    masks = [(wm.clone(), bm.clone()) for wm, bm in masks]
    for wm, bm in masks:  # run 0 is dense, so the pruned runs 1 and 2 come first inside
        wm[0] = True
        bm[0] = True
    ws = [w.clone() for w in ws]
    ws[0][2] *= 1e200
    res = T.train(ws, bs, masks, x, y, kind="regression", generators=_gens([1, 2, 3]),
                  config=T.TrainConfig(epochs=1, batch_size=16), labels=["a", "b", "c"])
    assert res.failed[0] is None and res.failed[1] is None
    assert isinstance(res.failed[2], T.TrainingDiverged) and res.failed[2].run == 2 and "c" in str(res.failed[2])


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("kind", ["classification", "regression"])
def test_native_stack_equals_the_autograd_values_path(monkeypatch, optimizer, kind):
    """A block whose layers are all on the values path trains in one native call per pass (kernels.sparse_stack);
    it gives what the layer-by-layer autograd path gives, including for a run that diverges."""
    from plantseek.kernels import sparse_stack as S
    if not S.available("cpu", F64):
        pytest.skip("native SparseStack not available")
    ws, bs, masks, x, y = _problem(M=3, density=0.1, H=40, classification=kind == "classification")
    ws = [w.clone() for w in ws]
    ws[0][1] *= 1e200  # run 1 diverges
    cfg = T.TrainConfig(epochs=2, batch_size=16, impl="sparse", optimizer=optimizer, schedule="cosine",
                        momentum=0.9 if optimizer == "sgd" else 0.0, weight_decay=1e-3)
    native = T.train(ws, bs, masks, x, y, kind=kind, generators=_gens([0, 1, 2]), config=cfg)
    blocks = []
    monkeypatch.setattr(T._Block, "forward", _recording(T._Block.forward, blocks))
    monkeypatch.setattr(S, "available", lambda *a: False)
    layered = T.train(ws, bs, masks, x, y, kind=kind, generators=_gens([0, 1, 2]), config=cfg)
    assert blocks and all(blk.stack is None for blk in blocks)
    assert native.failed[0] is None and native.failed[2] is None
    assert [type(f) for f in native.failed] == [type(f) for f in layered.failed]
    if kind == "regression":
        assert isinstance(native.failed[1], T.TrainingDiverged) and native.failed[1].epoch == 1
    for k in (0, 2):
        for a, b in zip(native.weights + native.biases, layered.weights + layered.biases):
            assert torch.allclose(a[k], b[k], rtol=0, atol=1e-12)
        assert native.train_loss[k] == pytest.approx(layered.train_loss[k], rel=1e-12)


def _recording(fn, seen):
    def wrapper(self, xb):
        seen.append(self)
        return fn(self, xb)
    return wrapper


def test_a_native_stack_batch_runs_its_networks_on_all_threads(monkeypatch):
    """A batch that runs only the fused native step keeps torch's thread count (networks in parallel, the result
    bitwise that of one thread); a single run, a caller's loss or the dense path stay on one thread."""
    from plantseek.kernels import sparse_stack as S
    if not S.available("cpu", F64):
        pytest.skip("native SparseStack not available")
    monkeypatch.delenv("PLANTSEEK_TRAIN_THREADS", raising=False)
    ws, bs, masks, x, y = _problem(M=4, density=0.3, H=64)
    assert impl_choice.stack_only(masks, "auto", F64)
    seen = []
    real = S.NativeStack.train_step_arrays

    def recorded(self, x, targets, alive, lr, threads):  # the trainer's step: the threads it hands the core
        seen.append(threads)
        return real(self, x, targets, alive, lr, threads)

    monkeypatch.setattr(S.NativeStack, "train_step_arrays", recorded)
    old = torch.get_num_threads()
    results = []
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            cfg = T.TrainConfig(epochs=1, batch_size=16)
            results.append(T.train(ws, bs, masks, x, y, kind="classification", generators=_gens(range(4)), config=cfg))
            assert set(seen) == {threads}
            seen.clear()
        torch.set_num_threads(2)
        T.train(*_slice(ws, bs, masks, x, y, 0)[:3], *_slice(ws, bs, masks, x, y, 0)[3:], kind="classification",
                generators=_gens([0]), config=T.TrainConfig(epochs=1, batch_size=16))
        assert set(seen) == {1}  # one network: the small-work rule
    finally:
        torch.set_num_threads(old)
    for a, b in zip(results[0].weights + results[0].biases, results[1].weights + results[1].biases):
        assert torch.equal(a, b)


def _with_copies(ws, bs, masks, x, y, copies):
    """The stack with network copies[i] appended as network M + i (same parameters, masks and data)."""
    pick = torch.tensor(list(range(ws[0].shape[0])) + list(copies))
    return ([w[pick].clone() for w in ws], [b[pick].clone() for b in bs],
            [(wm[pick].clone(), bm[pick].clone()) for wm, bm in masks], x[pick].clone(), y[pick].clone())


@pytest.mark.parametrize("impl", ["dense", "auto"])
def test_identical_networks_train_once_with_the_result_of_each(impl, monkeypatch):
    """Networks whose training reads the same parameters, masks, data and generator state (a seed's runs at
    density 1 and its dense baseline) train once: each copy gets its representative's result and generator
    state, which is what it gets trained in the full stack (float64), and only the distinct ones train."""
    ws, bs, masks, x, y = _problem(M=3, N=64, density=0.5)
    masks = [(torch.cat([wm[:1], torch.ones_like(wm[1:2]), wm[2:]]),  # network 1 dense, as a baseline
              torch.cat([bm[:1], torch.ones_like(bm[1:2]), bm[2:]])) for wm, bm in masks]
    stack = _with_copies(ws, bs, masks, x, y, [1, 0, 1])  # networks 3 and 5 copy 1, network 4 copies 0
    seeds = [1, 2, 3, 2, 1, 2]
    assert T.identical_networks(*stack, _gens(seeds)) == [0, 1, 2, 1, 0, 1]
    cfg = T.TrainConfig(epochs=2, batch_size=16, impl=impl)
    trained = []
    real_loop = T._train_loop
    monkeypatch.setattr(T, "_train_loop", lambda w, *a, **k: trained.append(w[0].shape[0]) or real_loop(w, *a, **k))
    gens = _gens(seeds)
    res = T.train(*stack, kind="classification", generators=gens, config=cfg, labels=list("abcdef"))
    assert trained == [3]
    monkeypatch.setattr(T, "identical_networks", lambda *a: list(range(6)))  # the whole stack, trained as it is
    full_gens = _gens(seeds)
    full = T.train(*stack, kind="classification", generators=full_gens, config=cfg)
    assert trained == [3, 6]
    for a, b in zip(res.weights + res.biases, full.weights + full.biases):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)
    for k, r in ((3, 1), (4, 0), (5, 1)):
        assert all(torch.equal(t[k], t[r]) for t in res.weights + res.biases)
        assert res.train_loss[k] == res.train_loss[r] and [h[k] for h in res.history] == [h[r] for h in res.history]
    for g, h in zip(gens, full_gens):  # the shuffles a copy would have drawn, drawn
        assert torch.equal(g.get_state(), h.get_state())


def test_networks_that_differ_in_one_thing_are_not_identical():
    ws, bs, masks, x, y = _problem(M=2, N=32, density=0.5)
    base = _with_copies(ws, bs, masks, x, y, [0])
    assert T.identical_networks(*base, _gens([1, 2, 1])) == [0, 1, 0]
    assert T.identical_networks(*base, _gens([1, 2, 4])) == [0, 1, 2]  # another shuffle
    for what in ("mask", "weight", "bias", "x", "y"):
        w, b, m, xx, yy = _with_copies(ws, bs, masks, x, y, [0])  # fresh copies, changed in network 2 below
        if what == "mask":
            m[1][0][2, 0, 0] = ~m[1][0][2, 0, 0]
        elif what == "weight":
            w[2][2, 0, 0] += 1e-12
        elif what == "bias":
            b[0][2, 0] = -b[0][2, 0]
        elif what == "x":
            xx[2, 5, 1] += 1.0
        else:
            yy[2, 7] = (yy[2, 7] + 1) % 4
        assert T.identical_networks(w, b, m, xx, yy, _gens([1, 2, 1])) == [0, 1, 2], what


def test_a_diverging_copy_is_named_in_its_own_error():
    ws, bs, masks, x, y = _problem(M=2, classification=False)
    ws = [w.clone() for w in ws]
    ws[0][1] *= 1e200
    stack = _with_copies(ws, bs, masks, x, y, [1])
    res = T.train(*stack, kind="regression", generators=_gens([1, 2, 2]), config=T.TrainConfig(epochs=1, batch_size=16),
                  labels=["a", "b", "c"])
    assert res.failed[0] is None
    for k in (1, 2):
        assert isinstance(res.failed[k], T.TrainingDiverged) and res.failed[k].run == k and res.failed[k].epoch == 1
    assert "(b;" in str(res.failed[1]) and "trained once for c" in str(res.failed[2])


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("density", [0.0, 0.05, 0.5, 1.0])
def test_masked_outputs_are_the_masked_forward_and_per_network(dtype, density):
    """The rescale's outputs (native kept-weights path on the CPU) equal the dense masked forward, and each
    network's outputs are the same bitwise whether it is evaluated alone or in a stack, with several chunks."""
    ws, bs, masks, x, _ = _problem(M=4, N=70, density=density, seed=3)
    ws, bs, x = [w.to(dtype) for w in ws], [b.to(dtype) for b in bs], x.to(dtype)
    masks[1] = (masks[1][0].clone(), masks[1][1].clone())
    masks[1][0][2] = True  # one network with a full layer (the dense kernel), one with an empty one
    masks[1][0][3] = False
    ref = T.evaluate_outputs(ws, bs, x, masks)
    out = T.masked_outputs(ws, bs, masks, x, chunk=32)
    tol = 1e-12 if dtype == F64 else 1e-5
    assert out.shape == ref.shape and out.dtype == dtype
    assert torch.allclose(out, ref, rtol=tol, atol=tol)
    for k in range(4):  # alone, in one chunk or in others: the same outputs, bitwise
        w1, b1, m1, x1, _ = _slice(ws, bs, masks, x, x, k)
        assert torch.equal(T.masked_outputs(w1, b1, m1, x1)[0], out[k])
        assert torch.equal(T.masked_outputs(w1, b1, m1, x1, chunk=17)[0], out[k])
