"""circle: 4 classes by the squared radius x1^2 + x2^2 with boundaries 0.2, 0.5, 0.7.

Tickets (DESIGN.md): depth 2 squares each coordinate with a piecewise-linear block and folds the sum into the
class-logit layer; depth 3 first splits each coordinate into ReLU(x), ReLU(-x); depth >= 4 computes |x_i| in two
layers, then depth-4 rotation layers by pi/4, pi/8, ... (a rotation keeps the radius), then squares and logits.
"""
from __future__ import annotations

import math

import torch

from ..tickets import DTYPE, Ticket, class_logits, pwl_block, rotation
from .base import Task, register

BOUNDARIES = (0.2, 0.5, 0.7)
SLOPES = (5.0, 10.0, 20.0, 40.0)


def square_terms(terms: list[tuple[torch.Tensor, float]], knots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Hidden layer computing z_t^2 blocks for terms z_t = w_t . a on [0 or -hi, hi].

    `terms` holds (input weight vector, interval half/upper bound with sign: hi > 0 means [0, hi], hi < 0 means
    [hi, -hi]). Returns (W, b, read-out row c, read-out bias) with sum_t z_t^2 ~= c . ReLU(W a + b) + bias.
    The read-out bias subtracts the mean interpolation error h^2/6 of each term (x^2 is convex, so its
    interpolant lies above it by t(h - t) inside a knot interval of width h).
    """
    Ws, bs, cs, bias = [], [], [], 0.0
    for w, hi in terms:
        lo, up = (0.0, hi) if hi > 0 else (hi, -hi)
        s = torch.linspace(lo, up, knots, dtype=DTYPE)
        blk = pwl_block(s, s * s)
        Ws.append(blk.hidden_weight(w))
        bs.append(blk.hidden_bias())
        cs.append(blk.coefficients[0])
        h = float(s[1] - s[0])
        bias += float(blk.offset[0]) - h * h / 6.0
    return torch.cat(Ws), torch.cat(bs), torch.cat(cs), bias


@register("circle")
class CircleTask(Task):
    kind = "classification"
    input_dim = 2
    output_dim = 4
    min_depth = 2
    description = "4 classes by x1^2 + x2^2 (boundaries 0.2, 0.5, 0.7); ticket: squares, |x|, rotations"

    def __init__(self, knots: int = 10):
        self.knots = int(knots)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        r2 = (x * x).sum(dim=1)
        return torch.bucketize(r2, torch.tensor(BOUNDARIES, dtype=r2.dtype), right=True).to(torch.int64)

    def corrupt(self, y: torch.Tensor, noise: float, generator: torch.Generator) -> torch.Tensor:
        """With probability `noise` a label moves to a neighbouring class (up or down; the only one at the ends)."""
        if noise == 0:
            return y
        flip = torch.rand(y.shape, generator=generator, dtype=torch.float64) < noise
        step = torch.where(torch.rand(y.shape, generator=generator, dtype=torch.float64) < 0.5, -1, 1)
        step = torch.where(y == 0, 1, torch.where(y == self.output_dim - 1, -1, step))
        return torch.where(flip, y + step, y)

    def build_ticket(self, depth: int) -> Ticket:
        e = torch.eye(2, dtype=DTYPE)
        if depth == 2:
            layers_w, layers_b = [], []
            W, b, c, bias = square_terms([(e[0], -1.0), (e[1], -1.0)], self.knots)
            prev = 2
        elif depth == 3:
            split = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=DTYPE)
            layers_w, layers_b = [split], [torch.zeros(4, dtype=DTYPE)]
            e4 = torch.eye(4, dtype=DTYPE)
            W, b, c, bias = square_terms([(e4[i], 1.0) for i in range(4)], max(self.knots // 2 + 1, 2))
        else:
            split = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 1.0], [0.0, -1.0]], dtype=DTYPE)
            absolute = torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]], dtype=DTYPE)
            layers_w = [split, absolute]
            layers_b = [torch.zeros(4, dtype=DTYPE), torch.zeros(2, dtype=DTYPE)]
            # (a, b) as neuron read-outs: a = A . h, b = B . h over the current layer's neurons h
            a_read = torch.tensor([1.0, 0.0], dtype=DTYPE)
            b_read = torch.tensor([0.0, 1.0], dtype=DTYPE)
            hi = 1.0
            for r in range(depth - 4):
                R = rotation(math.pi / 2 ** (r + 2))
                new_a = R[0, 0] * a_read + R[0, 1] * b_read
                new_b = R[1, 0] * a_read + R[1, 1] * b_read
                layers_w.append(torch.stack([new_a, new_b, -new_b]))  # a' (stays >= 0), b'+, b'-
                layers_b.append(torch.zeros(3, dtype=DTYPE))
                a_read = torch.tensor([1.0, 0.0, 0.0], dtype=DTYPE)
                b_read = torch.tensor([0.0, 1.0, -1.0], dtype=DTYPE)
                hi = math.sqrt(2.0)
            if depth == 4:
                terms = [(a_read, hi), (b_read, hi)]
            else:
                e3 = torch.eye(3, dtype=DTYPE)
                terms = [(e3[0], hi), (e3[1], hi), (e3[2], hi)]
            W, b, c, bias = square_terms(terms, self.knots)
        a, d = class_logits(BOUNDARIES, SLOPES)
        out_w = a[:, None] * c[None, :]
        out_b = a * bias + d
        return Ticket(layers_w + [W, out_w], layers_b + [b, out_b], "circle", {"knots": self.knots})
