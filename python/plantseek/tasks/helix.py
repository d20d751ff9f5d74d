"""helix: regression of a 3-D helix (u cos u, u sin u, u) / (8 pi), u = 5 pi + 3 pi x, from one input."""
from __future__ import annotations

import math

import torch

from ..tickets import Ticket, univariate
from .base import Task, register


def helix(x: torch.Tensor) -> torch.Tensor:
    """The helix target for x of shape (n,) or (n, 1); returns (n, 3)."""
    u = 5 * math.pi + 3 * math.pi * x.reshape(-1)
    return torch.stack([u * torch.cos(u), u * torch.sin(u), u], dim=1) / (8 * math.pi)


@register("helix")
class HelixTask(Task):
    kind = "regression"
    input_dim = 1
    output_dim = 3
    min_depth = 2
    description = "y = (u cos u, u sin u, u)/(8 pi), u = 5 pi + 3 pi x; ticket: shared knots, three read-outs"

    def __init__(self, knots: int = 30):
        self.knots = int(knots)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return helix(x)

    def build_ticket(self, depth: int) -> Ticket:
        return univariate(helix, knots=self.knots, interval=(-1.0, 1.0), depth=depth, name="helix")
