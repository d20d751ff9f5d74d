"""Tickets: exact building blocks, every depth, and the task performance the paper reports."""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from plantseek import tasks, tickets
from plantseek.tickets import Ticket, deepen, pwl_block, univariate

GRID = torch.linspace(-1, 1, 2001, dtype=torch.float64)[:, None]


def interpolant(knots, values, x):
    return torch.from_numpy(__import__("numpy").interp(x.numpy(), knots.numpy(), values.numpy()))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-5, 5), min_size=2, max_size=12), st.integers(0, 10_000))
def test_pwl_block_interpolates_exactly(values, seed):
    g = torch.Generator().manual_seed(seed)
    k = len(values)
    knots = torch.sort(torch.rand(k, generator=g, dtype=torch.float64)).values * 2 - 1
    knots = knots + torch.arange(k, dtype=torch.float64) * 1e-3  # strictly increasing
    vals = torch.tensor(values, dtype=torch.float64)
    blk = pwl_block(knots, vals)
    x = torch.linspace(float(knots[0]), float(knots[-1]), 500, dtype=torch.float64)
    h = torch.relu(blk.signs[None, :] * (x[:, None] - blk.knots[None, :]))
    y = h @ blk.coefficients[0] + blk.offset[0]
    assert torch.allclose(y, interpolant(knots, vals, x), atol=1e-9 * (1 + vals.abs().max()))
    # hidden units alternate in sign, starting positive
    assert blk.signs[0] == 1


def test_univariate_user_function_all_depths():
    f = lambda s: torch.sin(3 * s)  # noqa: E731
    base = univariate(f, knots=15, depth=2)
    x = torch.linspace(-1, 1, 301, dtype=torch.float64)[:, None]
    for depth in range(2, 9):
        t = univariate(f, knots=15, depth=depth)
        assert t.depth == depth
        assert torch.allclose(t(x), base(x), atol=1e-12)
    assert (base(x)[:, 0] - torch.sin(3 * x[:, 0])).abs().max() < 0.05


def test_univariate_errors():
    with pytest.raises(ValueError, match="depth >= 2"):
        univariate(torch.sin, depth=1)
    with pytest.raises(ValueError, match="at least 2 knots"):
        univariate(torch.sin, knots=1)
    with pytest.raises(ValueError, match="non-finite"):
        univariate(lambda s: 1 / s, knots=[-1.0, 0.0, 1.0])


def test_deepen_pair_method_is_exact_everywhere():
    t = Ticket([torch.tensor([[1.0], [-2.0]]), torch.tensor([[1.0, 3.0], [-1.0, 0.5]])],
               [torch.tensor([0.1, 0.2]), torch.tensor([-5.0, 2.0])])
    x = torch.linspace(-10, 10, 101, dtype=torch.float64)[:, None]
    for depth in (3, 4, 7):
        d = deepen(t, depth)
        assert d.depth == depth and torch.allclose(d(x), t(x), atol=1e-12)
    with pytest.raises(ValueError, match="shallower"):
        deepen(t, 1)


def test_ticket_validation():
    with pytest.raises(ValueError, match="non-finite"):
        Ticket([torch.tensor([[float("nan")]])], [torch.zeros(1)])
    with pytest.raises(ValueError, match="takes 3 inputs"):
        Ticket([torch.ones(2, 1), torch.ones(1, 3)], [torch.zeros(2), torch.zeros(1)])


@pytest.mark.parametrize("name", ["relu", "helix"])
def test_regression_tickets_compute_the_same_function_at_every_depth(name):
    task = tasks.get(name)
    ref = task.ticket(2)(GRID)
    for depth in range(2, 13):
        t = task.ticket(depth)
        assert t.depth == depth
        assert torch.allclose(t(GRID), ref, atol=1e-10), depth


def test_relu_ticket_is_a_single_path():
    for depth in range(2, 13):
        t = tasks.get("relu").ticket(depth)
        assert t.nnz == depth and t.widths == [1] * (depth + 1)
        assert all(float(w.item()) == 1.0 for w in t.weights) and all(float(b.item()) == 0 for b in t.biases)


def test_circle_tickets_agree_away_from_boundaries():
    task = tasks.get("circle")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(20000, 2, generator=g, dtype=torch.float64) * 2 - 1
    r2 = (x * x).sum(1)
    far = torch.stack([(r2 - b).abs() > 0.05 for b in (0.2, 0.5, 0.7)]).all(0)
    labels = task.target(x)
    for depth in range(2, 13):
        pred = task.ticket(depth)(x).argmax(1)
        assert torch.equal(pred[far], labels[far]), depth


def test_deep_circle_tickets_use_rotations():
    t = tasks.get("circle").ticket(6)
    assert t.widths[1:5] == [4, 2, 3, 3]  # split, |x|, two rotation layers (a, b+, b-)
    rot = t.weights[2]
    assert torch.allclose(rot[0], torch.tensor([math.cos(math.pi / 4), math.sin(math.pi / 4)], dtype=torch.float64))


THRESHOLDS = {("circle", 2): 0.94, ("circle", 4): 0.97}


@pytest.mark.parametrize("depth", [2, 3, 4, 6, 9, 12])
def test_tickets_solve_their_tasks(depth):
    data = {n: tasks.get(n).data(n=100_000, noise=0.01, seed=1, train_fraction=0.9) for n in ("relu", "circle", "helix")}
    circle = tasks.get("circle").evaluate(tasks.get("circle").ticket(depth)(data["circle"].x_test), data["circle"].y_test)
    assert circle["accuracy"] >= (0.94 if depth < 4 else 0.97)
    relu = tasks.get("relu").evaluate(tasks.get("relu").ticket(depth)(data["relu"].x_test), data["relu"].y_test)
    assert relu["loss"] <= 1.5e-4
    helix = tasks.get("helix").evaluate(tasks.get("helix").ticket(depth)(data["helix"].x_test), data["helix"].y_test)
    assert helix["loss"] <= 6e-4


def test_ticket_nnz_counts_weights_and_biases():
    t = tasks.get("circle").ticket(2)
    assert t.nnz == sum(int((w != 0).sum()) + int((b != 0).sum()) for w, b in zip(t.weights, t.biases))
    assert t.weight_nnz < t.nnz
    assert [tuple(m[0].shape) for m in t.mask()] == [tuple(w.shape) for w in t.weights]


@pytest.mark.parametrize("name", ["relu", "circle", "helix"])
def test_no_rounding_residue_in_tickets(name):
    # a 1e-16 read-out weight (a linear stretch whose slope "changes" by rounding) would be planted as a
    # real ticket weight with an absurd neuron scale
    for depth in (2, 3, 5):
        t = tasks.get(name).ticket(depth)
        for w in t.weights:
            nz = w[w != 0].abs()
            assert float(nz.min()) > 1e-9 * float(nz.max())
