"""A new task in one file (docs/contributing.md, "A new task"): regression of |x| on [-1, 1].

A task says what its inputs and targets are (`target`; inputs default to U[-1, 1]) and builds its ticket:
|x| = ReLU(x) + ReLU(-x), two hidden neurons, deepened to any depth by identity paths (`deepen`).
Registering it makes it a valid `task` everywhere (seek, the CLI, sweep files, `plantseek tasks`).
"""
from __future__ import annotations

import torch

from plantseek.tasks import Task, register
from plantseek.tickets import DTYPE, Ticket, deepen


@register("absolute")
class AbsoluteTask(Task):
    kind = "regression"
    input_dim = 1
    output_dim = 1
    min_depth = 2
    description = "y = |x|, x ~ U[-1, 1]; ticket: ReLU(x) + ReLU(-x)"

    def target(self, x: torch.Tensor) -> torch.Tensor:
        return x.abs()

    def build_ticket(self, depth: int) -> Ticket:
        w1 = torch.tensor([[1.0], [-1.0]], dtype=DTYPE)
        w2 = torch.tensor([[1.0, 1.0]], dtype=DTYPE)
        base = Ticket([w1, w2], [torch.zeros(2, dtype=DTYPE), torch.zeros(1, dtype=DTYPE)], "absolute")
        return deepen(base, depth, offset=0.0)  # |x| >= 0 passes every later ReLU unchanged
