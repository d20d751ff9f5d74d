"""Training with masks that change (`plantseek.train.MaskSchedule`): split into segments at the update steps,
the training is the same as without them (optimiser state, step count and shuffle carried over, on every
path), and a new mask takes effect: dropped parameters are zero with zero optimiser state, grown ones start
at zero."""
from __future__ import annotations

import pytest
import torch

from plantseek import train as T
from test_train import _gens, _problem

F64 = torch.float64


def _full(ws, bs):
    return [(torch.ones(w.shape, dtype=torch.bool), torch.ones(b.shape, dtype=torch.bool)) for w, b in zip(ws, bs)]


def _cases():
    # impl, density (of the first networks), a dense member (a dense baseline beside the pruned ones)
    return [("dense", 0.5, False), ("sparse", 0.3, False), ("auto", 0.3, True), ("auto", 1.0, False)]


@pytest.mark.parametrize("impl,density,with_dense", _cases())
@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_segments_without_a_change_train_exactly_as_one_segment(impl, density, with_dense, optimizer):
    ws, bs, masks, x, y = _problem(M=3, N=100, H=12, density=density)
    if with_dense:  # the last network has nothing pruned: a block of its own
        masks = [(torch.cat([wm[:2], torch.ones_like(wm[2:])]), torch.cat([bm[:2], torch.ones_like(bm[2:])]))
                 for wm, bm in masks]
    cfg = T.TrainConfig(epochs=3, batch_size=16, optimizer=optimizer, lr=1e-2, impl=impl,
                        momentum=0.9 if optimizer == "sgd" else 0.0)
    whole = T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([1, 2, 3]), config=cfg)
    seen = []

    def keep(step, weights, biases, current, alive, dense_grads):
        seen.append((step, len(alive)))
        return None

    # 7 steps per epoch: inside the first epoch, at its end, and twice inside the last
    sched = T.MaskSchedule(steps=[3, 7, 15, 19], update=keep)
    parts = T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([1, 2, 3]), config=cfg,
                    schedule=sched)
    assert seen == [(3, 3), (7, 3), (15, 3), (19, 3)]
    for a, b in zip(whole.weights + whole.biases, parts.weights + parts.biases):
        assert torch.equal(a, b)
    assert whole.history == parts.history and whole.train_loss == parts.train_loss


def test_a_new_mask_takes_effect_and_grown_weights_start_at_zero():
    ws, bs, masks, x, y = _problem(M=2, N=64, H=10, density=0.5, classification=False)
    cfg = T.TrainConfig(epochs=2, batch_size=16, lr=1e-2, impl="sparse")
    g = torch.Generator().manual_seed(9)
    new_masks = [(torch.rand(wm.shape, generator=g) < 0.5, bm.clone()) for wm, bm in masks]
    at_update = {}

    def swap(step, weights, biases, current, alive, dense_grads):
        at_update["weights"] = [w.clone() for w in weights]
        at_update["grads"] = dense_grads()
        return new_masks

    res = T.train(ws, bs, masks, x, y, kind="regression", generators=_gens([4, 5]), config=cfg,
                  schedule=T.MaskSchedule(steps=[5], update=swap))
    for w, (wm, _), w_then, (om, _) in zip(res.weights, new_masks, at_update["weights"], masks):
        assert not bool(w[~wm].any())  # what the new mask drops is zero at the end
        assert not bool(w_then[~om].any())  # the update saw zeros where the old mask pruned
        kept_both = wm & om
        assert bool((w[kept_both] != w_then[kept_both]).any())  # the kept weights trained on
    # the dense gradient covers pruned positions too (RigL grows by it)
    for (gw, gb), (wm, _) in zip(at_update["grads"], masks):
        assert gw.shape == wm.shape and bool(gw[~wm].abs().sum() > 0)


def test_grown_weights_restart_from_zero_with_fresh_adam_state():
    """One network, one update that grows a weight: from then on it trains as a weight that starts at zero
    with zero moments (checked against a second training that starts from the update's state)."""
    ws, bs, masks, x, y = _problem(M=1, N=48, H=6, density=0.5, classification=False)
    cfg = T.TrainConfig(epochs=2, batch_size=16, lr=1e-2, impl="dense")
    grown = [(wm | (torch.rand(wm.shape, generator=torch.Generator().manual_seed(1)) < 0.3), bm) for wm, bm in masks]
    res = T.train(ws, bs, masks, x, y, kind="regression", generators=_gens([2]), config=cfg,
                  schedule=T.MaskSchedule(steps=[3], update=lambda *a: grown))
    for w, (wm, _), (om, _) in zip(res.weights, grown, masks):
        new = wm & ~om
        if bool(new.any()):
            assert bool((w[new] != 0).any())  # grown weights moved off zero
            assert bool(w[new].abs().max() < 3 * 1e-2 * 3)  # by about lr per step for 3 steps (Adam)


def test_bad_schedules_are_refused():
    ws, bs, masks, x, y = _problem(M=1, N=32)
    cfg = T.TrainConfig(epochs=1, batch_size=16)
    for steps, match in (([0], r"\[1, 2\)"), ([2], r"\[1, 2\)"), ([1.5], "whole numbers"), ([True], "whole")):
        with pytest.raises(ValueError, match=match):
            T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([0]), config=cfg,
                    schedule=T.MaskSchedule(steps=steps, update=lambda *a: None))
    cfg = T.TrainConfig(epochs=2, batch_size=16)
    with pytest.raises(ValueError, match="must increase"):
        T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([0]), config=cfg,
                schedule=T.MaskSchedule(steps=[2, 2], update=lambda *a: None))


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_native_stacks_carry_their_state_across_new_masks_as_the_dense_state_does(optimizer, monkeypatch):
    """Segments on native stacks hand their stacks to the next segment, whose state is mapped onto the new
    structures directly (`_remap_state`); a next segment on another layout (here: a network becomes dense, so it
    moves to a block of its own) densifies it first. Both give exactly what the dense carry gives (forced for
    every transition by declaring no two layouts the same)."""
    from plantseek.kernels import sparse_stack
    if not sparse_stack.available("cpu", F64):
        pytest.skip("native stack not built")
    ws, bs, masks, x, y = _problem(M=3, N=100, H=12, density=0.3)
    cfg = T.TrainConfig(epochs=3, batch_size=16, optimizer=optimizer, lr=1e-2, impl="auto",
                        momentum=0.9 if optimizer == "sgd" else 0.0)
    g = torch.Generator().manual_seed(3)
    moved = [(torch.rand(wm.shape, generator=g) < 0.3, torch.rand(bm.shape, generator=g) < 0.5) for wm, bm in masks]
    dense_last = [(torch.cat([wm[:2], torch.ones_like(wm[2:])]), torch.cat([bm[:2], torch.ones_like(bm[2:])]))
                  for wm, bm in moved]
    plans = []

    def run():
        plans.clear()
        order = iter([moved, None, dense_last])
        return T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([1, 2, 3]), config=cfg,
                       schedule=T.MaskSchedule(steps=[5, 9, 16], update=lambda *a: next(order)))

    real_plan = T.plan_training
    monkeypatch.setattr(T, "plan_training", lambda *a: plans.append(real_plan(*a)) or plans[-1])
    direct = run()
    assert [len(p.spans) for p in plans] == [1, 1, 1, 2]  # the last segment: a layout of its own
    assert all(i == "sparse" for i in plans[0].impls[0])
    monkeypatch.setattr(T, "_same_layout", lambda *a: False)
    dense = run()
    for a, b in zip(direct.weights + direct.biases, dense.weights + dense.biases):
        assert torch.equal(a, b)
    assert direct.history == dense.history
    for w, b, (wm, bm) in zip(direct.weights, direct.biases, dense_last):
        assert not bool(w[~wm].any()) and not bool(b[~bm].any())


def test_native_stacks_give_the_dense_gradient_of_autograd():
    """RigL's dense gradient at an update: from the native stacks (`NativeStack.dense_gradients`) with the
    built-in loss, by autograd over the dense weights with a caller's loss (the same loss): equal to rounding."""
    from plantseek.kernels import sparse_stack
    from plantseek.losses import per_network_loss
    if not sparse_stack.available("cpu", F64):
        pytest.skip("native stack not built")
    ws, bs, masks = _problem(M=3, N=64, H=10, density=0.3)[:3]
    x, y = _problem(M=3, N=64, H=10, density=0.3)[3:]
    cfg = T.TrainConfig(epochs=1, batch_size=16, lr=1e-2, impl="sparse")
    seen = {}

    def grab(name):
        def update(step, weights, biases, current, alive, dense_grads):
            seen[name] = dense_grads()
            return None
        return update

    for name, loss_fn in (("native", None), ("autograd", lambda out, t: per_network_loss(out, t, "classification"))):
        T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([1, 2, 3]), config=cfg, loss_fn=loss_fn,
                schedule=T.MaskSchedule(steps=[2], update=grab(name)))
    for (gw, gb), (rw, rb), (wm, _) in zip(seen["native"], seen["autograd"], masks):
        assert torch.allclose(gw, rw, rtol=1e-9, atol=1e-12) and torch.allclose(gb, rb, rtol=1e-9, atol=1e-12)
        assert bool(gw[~wm].abs().sum() > 0)  # pruned positions have their gradient too


def test_a_schedule_that_keeps_counts_reuses_the_plan_with_the_same_result(monkeypatch):
    """``keeps_counts=True`` (the dynamic protocol's updates): one plan for every segment; the training equals
    planning each segment (the masks move, each network's kept count does not)."""
    ws, bs, masks, x, y = _problem(M=3, N=64, H=10, density=0.3)
    cfg = T.TrainConfig(epochs=2, batch_size=16, lr=1e-2, impl="auto")
    g = torch.Generator().manual_seed(4)

    def shuffled(current):  # each network's kept weights moved to random positions across its layers
        sizes = [wm[0].numel() for wm, _ in current]
        out = [wm.clone() for wm, _ in current]
        for m in range(current[0][0].shape[0]):
            flat = torch.cat([wm[m].reshape(-1) for wm, _ in current])
            flat = flat[torch.randperm(flat.numel(), generator=g)]
            for l, part in enumerate(flat.split(sizes)):
                out[l][m] = part.view_as(out[l][m])
        return [(w, bm) for w, (_, bm) in zip(out, current)]

    plans = []
    real_plan = T.plan_training
    monkeypatch.setattr(T, "plan_training", lambda *a: plans.append(1) or real_plan(*a))
    results = []
    for keeps in (True, False):
        plans.clear()
        g.manual_seed(4)
        sched = T.MaskSchedule(steps=[3, 6], update=lambda step, w, b, cur, alive, dg: shuffled(cur), keeps_counts=keeps)
        results.append(T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([1, 2, 3]), config=cfg,
                               schedule=sched))
        assert len(plans) == (1 if keeps else 3)
    for a, b in zip(results[0].weights + results[0].biases, results[1].weights + results[1].biases):
        assert torch.equal(a, b)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("grow", ["random", "gradient"])
def test_updates_inside_one_loop_train_exactly_as_segments(optimizer, grow, monkeypatch):
    """A schedule that keeps counts, on native stacks only, updates inside one training loop (`_Remask`); forcing
    a segment per update instead gives the same parameters, losses and masks seen by the schedule (float64).
    The plan reorders the networks (the full network first in the caller's order goes to a block of its own),
    updates fall inside an epoch and at its end, one keeps the masks, and RigL reads the dense gradient."""
    from plantseek import mask_updates as mu
    from plantseek.kernels import sparse_stack
    if not sparse_stack.available("cpu", F64):
        pytest.skip("native stack not built")
    ws, bs, masks, x, y = _problem(M=3, N=100, H=12, density=0.3)
    masks = [(torch.cat([torch.ones_like(wm[:1]), wm[1:]]), torch.cat([torch.ones_like(bm[:1]), bm[1:]]))
             for wm, bm in masks]
    cfg = T.TrainConfig(epochs=3, batch_size=16, optimizer=optimizer, lr=1e-2, impl="auto",
                        momentum=0.9 if optimizer == "sgd" else 0.0)

    def run():
        seen, loops = [], []
        gens = _gens([7, 8])

        def update(step, weights, biases, current, alive, dense_grads):
            seen.append([t.clone() for t in weights + biases])
            if step == 9:
                return None
            grads = dense_grads() if grow == "gradient" else None
            out = [[(wm[0], bm[0]) for wm, bm in current]]
            for m in (1, 2):  # the pruned networks, one at a time (their counts differ)
                new, _ = mu.drop_and_grow([w[m] for w in weights], [b[m] for b in biases],
                                          [(wm[m], bm[m]) for wm, bm in current], 0.3, scope="layer", grow=grow,
                                          grads=None if grads is None else [(gw[m], gb[m]) for gw, gb in grads],
                                          generator=gens[m - 1])
                out.append(new)
            return [(torch.stack([o[l][0] for o in out]), torch.stack([o[l][1] for o in out]))
                    for l in range(len(current))]

        real_loop = T._train_loop
        monkeypatch.setattr(T, "_train_loop", lambda *a, **k: loops.append(1) or real_loop(*a, **k))
        res = T.train(ws, bs, masks, x, y, kind="classification", generators=_gens([1, 2, 3]), config=cfg,
                      schedule=T.MaskSchedule(steps=[5, 7, 9, 16], update=update, keeps_counts=True))
        monkeypatch.setattr(T, "_train_loop", real_loop)
        return res, seen, len(loops)

    inside, seen_inside, loops_inside = run()
    assert T.plan_training(masks, "auto", F64).order == [1, 2, 0]
    monkeypatch.setattr(T, "_updates_in_loop", lambda *a: False)
    segments, seen_segments, loops_segments = run()
    assert (loops_inside, loops_segments) == (1, 5)
    for a, b in zip(inside.weights + inside.biases, segments.weights + segments.biases):
        assert torch.equal(a, b)
    assert inside.history == segments.history and inside.train_loss == segments.train_loss
    assert len(seen_inside) == len(seen_segments) == 4
    for a, b in zip(seen_inside, seen_segments):
        assert all(torch.equal(s, t) for s, t in zip(a, b))
    assert not all(torch.equal(s, t) for s, t in zip(seen_inside[0], seen_inside[-1]))  # it trained between
