"""relu: regression of ReLU(x) on [-1, 1]; its ticket is a single path, the sparsest ticket there is."""
from __future__ import annotations

import torch

from ..tickets import DTYPE, Ticket, deepen
from .base import Task, register


@register("relu")
class ReluTask(Task):
    kind = "regression"
    input_dim = 1
    output_dim = 1
    min_depth = 2
    description = "y = ReLU(x), x ~ U[-1, 1]; ticket: one weight 1 per layer, biases 0"

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)

    def build_ticket(self, depth: int) -> Ticket:
        one = torch.ones(1, 1, dtype=DTYPE)
        zero = torch.zeros(1, dtype=DTYPE)
        base = Ticket([one, one.clone()], [zero, zero.clone()], "relu")
        return deepen(base, depth, offset=0.0)  # ReLU(x) >= 0 passes every later ReLU unchanged
