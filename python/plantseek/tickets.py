"""Tickets: small sparse ReLU networks built from exact building blocks, and the blocks themselves.

A ticket is a list of float64 weight matrices (PyTorch `(out, in)` layout) and bias vectors; the last layer is
linear, every other layer is followed by ReLU. The blocks (DESIGN.md, "Tasks and their tickets"):
- `pwl_block`: univariate piecewise-linear interpolation with alternating-sign hidden units;
- `deepen`: identity across ReLUs, by an offset (values known to stay >= -offset) or by (+, -) pairs;
- tasks combine these (|z| = ReLU(z) + ReLU(-z), z^2 from the block, class logits from one score).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

Tensor = torch.Tensor
DTYPE = torch.float64


@dataclass
class Ticket:
    """A sparse ReLU network: `weights[l]` is (out, in), `biases[l]` is (out,), float64 on the CPU."""

    weights: list[Tensor]
    biases: list[Tensor]
    name: str = "ticket"
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.weights) == 0 or len(self.weights) != len(self.biases):
            raise ValueError("a ticket needs one bias vector per weight matrix and at least one layer")
        self.weights = [torch.as_tensor(w, dtype=DTYPE).detach().clone().cpu() for w in self.weights]
        self.biases = [torch.as_tensor(b, dtype=DTYPE).detach().clone().cpu() for b in self.biases]
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            if w.dim() != 2 or b.dim() != 1 or b.shape[0] != w.shape[0]:
                raise ValueError(f"ticket layer {i}: weight {tuple(w.shape)} and bias {tuple(b.shape)} do not fit")
            if i > 0 and w.shape[1] != self.weights[i - 1].shape[0]:
                raise ValueError(
                    f"ticket layer {i} takes {w.shape[1]} inputs but layer {i - 1} has {self.weights[i - 1].shape[0]} outputs"
                )
            if not (torch.isfinite(w).all() and torch.isfinite(b).all()):
                raise ValueError(f"ticket layer {i} has non-finite values")

    @property
    def depth(self) -> int:
        """Number of linear layers."""
        return len(self.weights)

    @property
    def widths(self) -> list[int]:
        """Layer sizes from input to output: [in, hidden..., out]."""
        return [self.weights[0].shape[1]] + [w.shape[0] for w in self.weights]

    @property
    def input_dim(self) -> int:
        return self.weights[0].shape[1]

    @property
    def output_dim(self) -> int:
        return self.weights[-1].shape[0]

    @property
    def nnz(self) -> int:
        """Nonzero weights and biases: the ticket's parameter count."""
        return int(sum(int((w != 0).sum()) + int((b != 0).sum()) for w, b in zip(self.weights, self.biases)))

    @property
    def weight_nnz(self) -> int:
        """Nonzero weights only."""
        return int(sum(int((w != 0).sum()) for w in self.weights))

    def mask(self) -> list[tuple[Tensor, Tensor]]:
        """The ticket's own support as a mask (one (weight, bias) bool pair per layer)."""
        return [(w != 0, b != 0) for w, b in zip(self.weights, self.biases)]

    def forward(self, x: Tensor) -> Tensor:
        """Compute the ticket on inputs x of shape (n, input_dim), in float64."""
        h = torch.as_tensor(x, dtype=DTYPE)
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = h @ w.to(h.device).T + b.to(h.device)
            if i < self.depth - 1:
                h = torch.relu(h)
        return h

    __call__ = forward

    def deepen(self, depth: int, offset: Sequence[float] | float | None = None) -> "Ticket":
        """The same function with `depth` layers (see `deepen`)."""
        return deepen(self, depth, offset)

    def to_dict(self) -> dict:
        return {"weights": self.weights, "biases": self.biases, "name": self.name, "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict) -> "Ticket":
        return cls(list(d["weights"]), list(d["biases"]), d.get("name", "ticket"), dict(d.get("info", {})))


# ----------------------------------------------------------------------------------------------- blocks

@dataclass
class PWLBlock:
    """Hidden units ReLU(sign_j (z - knot_j)) and read-out coefficients for one or more functions of z."""

    knots: Tensor  # (U,) the knots that carry a unit
    signs: Tensor  # (U,) +1 / -1, alternating, first +1
    coefficients: Tensor  # (F, U) output weight of each unit for each function
    offset: Tensor  # (F,) output bias

    @property
    def units(self) -> int:
        return self.knots.shape[0]

    def hidden_weight(self, input_weight: Tensor) -> Tensor:
        """(U, n_in) weights of the hidden units when z = input_weight . a_prev."""
        return self.signs[:, None] * input_weight[None, :].to(DTYPE)

    def hidden_bias(self) -> Tensor:
        return -self.signs * self.knots


def pwl_block(knots: Tensor | Sequence[float], values: Tensor) -> PWLBlock:
    """Exact interpolation at the knots of F functions given by `values` (K,) or (F, K) on sorted `knots` (K,).

    Units sit at the first K-1 knots with alternating signs; a unit ReLU(-(z - s)) equals -(z - s) + ReLU(z - s)
    on the interval, so the first (+) unit absorbs the linear terms and the output bias fixes the value at s_1.
    Units whose read-out weight is zero for every function are dropped.
    """
    s = torch.as_tensor(knots, dtype=DTYPE).flatten()
    v = torch.as_tensor(values, dtype=DTYPE)
    if v.dim() == 1:
        v = v[None, :]
    if s.numel() < 2:
        raise ValueError("a piecewise-linear block needs at least 2 knots")
    if v.shape[1] != s.numel():
        raise ValueError(f"{v.shape[1]} values for {s.numel()} knots")
    if not bool((s[1:] > s[:-1]).all()):
        raise ValueError("knots must be strictly increasing")
    slopes = (v[:, 1:] - v[:, :-1]) / (s[1:] - s[:-1])  # (F, K-1): slope on [s_j, s_{j+1}]
    U = s.numel() - 1
    signs = torch.tensor([1.0 if j % 2 == 0 else -1.0 for j in range(U)], dtype=DTYPE)
    coef = torch.empty(v.shape[0], U, dtype=DTYPE)
    change = slopes[:, 1:] - slopes[:, :-1]
    # a slope that does not change (a linear stretch) must give an exact zero, not rounding residue: a 1e-16
    # read-out weight would be planted as a real ticket weight with an absurd neuron scale
    tiny = 1e-12 * (slopes[:, 1:].abs() + slopes[:, :-1].abs())
    coef[:, 1:] = torch.where(change.abs() <= tiny, torch.zeros_like(change), change)
    negative = signs < 0
    coef[:, 0] = slopes[:, 0] + coef[:, negative].sum(dim=1)
    # value at s_1: unit 0 is zero there, a negative unit j contributes coef_j * (s_j - s_1)
    at_s1 = (coef[:, negative] * (s[:U][negative] - s[0])).sum(dim=1)
    offset = v[:, 0] - at_s1
    keep = (coef != 0).any(dim=0)
    keep[0] = True  # keep the first unit so a constant function still has a well-formed block
    return PWLBlock(s[:U][keep], signs[keep], coef[:, keep], offset)


def univariate_layers(block: PWLBlock, input_weight: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(W1, b1, W2, b2) of the two-layer network computing the block's functions of z = input_weight . x."""
    return block.hidden_weight(input_weight), block.hidden_bias(), block.coefficients.clone(), block.offset.clone()


def deepen(ticket: Ticket, depth: int, offset: Sequence[float] | float | None = None) -> Ticket:
    """Make `ticket` `depth` layers deep without changing its function.

    With `offset` (one number or one per output, such that output + offset >= 0 on the inputs of interest), the
    last layer gets +offset in its bias, identity layers carry the shifted outputs across ReLUs and the final
    layer removes the offset: one neuron per output and layer. Without an offset each output z is carried as the
    pair (ReLU(z), ReLU(-z)) and recombined, which is exact everywhere at two neurons per output.
    """
    if depth < ticket.depth:
        raise ValueError(f"cannot make a depth-{ticket.depth} ticket shallower (asked for depth {depth})")
    if depth == ticket.depth:
        return ticket
    extra = depth - ticket.depth
    m = ticket.output_dim
    W, b = ticket.weights[-1], ticket.biases[-1]
    eye = torch.eye(m, dtype=DTYPE)
    if offset is not None:
        off = torch.as_tensor(offset, dtype=DTYPE).expand(m).clone()
        if (off < 0).any():
            raise ValueError("offsets must be >= 0")
        layers_w = [W.clone()] + [eye.clone() for _ in range(extra - 1)] + [eye.clone()]
        layers_b = [b + off] + [torch.zeros(m, dtype=DTYPE) for _ in range(extra - 1)] + [-off]
    else:
        pair = torch.cat([eye, -eye], dim=0)
        layers_w = [pair @ W] + [torch.eye(2 * m, dtype=DTYPE) for _ in range(extra - 1)] + [torch.cat([eye, -eye], dim=1)]
        layers_b = [pair @ b] + [torch.zeros(2 * m, dtype=DTYPE) for _ in range(extra - 1)] + [torch.zeros(m, dtype=DTYPE)]
    return Ticket(ticket.weights[:-1] + layers_w, ticket.biases[:-1] + layers_b, ticket.name, dict(ticket.info))


def univariate(
    f: Callable[[Tensor], Tensor],
    knots: int | Sequence[float] | Tensor = 10,
    interval: tuple[float, float] = (-1.0, 1.0),
    depth: int = 2,
    name: str = "univariate",
) -> Ticket:
    """A ticket for a user's function of one input: interpolation at `knots` (a count, spread evenly over
    `interval`, or explicit positions). `f` maps a (K,) tensor to (K,) or (K, F) values (F outputs).
    Deeper tickets carry the outputs across ReLUs with an offset that keeps them non-negative."""
    if depth < 2:
        raise ValueError(f"a univariate ticket needs depth >= 2 (got {depth})")
    if isinstance(knots, int):
        if knots < 2:
            raise ValueError(f"need at least 2 knots (got {knots})")
        s = torch.linspace(interval[0], interval[1], knots, dtype=DTYPE)
    else:
        s = torch.as_tensor(knots, dtype=DTYPE).flatten()
    vals = torch.as_tensor(f(s), dtype=DTYPE)
    if vals.dim() == 1:
        vals = vals[:, None]
    if vals.shape[0] != s.numel():
        raise ValueError(f"f returned {vals.shape[0]} values for {s.numel()} knots")
    if not torch.isfinite(vals).all():
        raise ValueError("f returned non-finite values at the knots")
    block = pwl_block(s, vals.T)
    W1, b1, W2, b2 = univariate_layers(block, torch.ones(1, dtype=DTYPE))
    t = Ticket([W1, W2], [b1, b2], name, {"knots": s.numel()})
    if depth > 2:
        low = vals.min(dim=0).values  # the interpolant's minimum over [s_1, s_K] is at a knot
        off = torch.where(low >= 0, torch.zeros_like(low), 1.0 - low)
        t = deepen(t, depth, off)
    return t


def class_logits(boundaries: Sequence[float], slopes: Sequence[float]) -> tuple[Tensor, Tensor]:
    """Affine class logits a_k g + d_k in one score g whose argmax changes exactly at the boundaries."""
    a = torch.as_tensor(slopes, dtype=DTYPE)
    t = torch.as_tensor(boundaries, dtype=DTYPE)
    if a.numel() != t.numel() + 1:
        raise ValueError("need one more slope than boundaries")
    if not bool((a[1:] > a[:-1]).all()) or not bool((t[1:] > t[:-1]).all()):
        raise ValueError("slopes and boundaries must be increasing")
    d = torch.zeros_like(a)
    for k in range(1, a.numel()):
        d[k] = d[k - 1] - (a[k] - a[k - 1]) * t[k - 1]
    return a, d


def rotation(theta: float) -> Tensor:
    """2x2 matrix taking (a, b) at angle phi to the same vector at angle phi - theta."""
    c, s = math.cos(theta), math.sin(theta)
    return torch.tensor([[c, s], [-s, c]], dtype=DTYPE)
