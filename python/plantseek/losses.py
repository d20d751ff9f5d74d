"""Losses of stacked networks: one mean loss per network of an (M, ...) batch.

The trainer (`plantseek.train`) differentiates their sum, and the native training stack (`plantseek.kernels.sparse_stack`)
uses them as the reference its own loss must agree with.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def per_network_loss(outputs: Tensor, targets: Tensor, kind: str) -> Tensor:
    """(M,) mean loss of each network: MSE over samples and outputs, or cross-entropy over samples."""
    M, B = outputs.shape[0], outputs.shape[1]
    if kind == "classification":
        return F.cross_entropy(outputs.reshape(M * B, -1), targets.reshape(M * B), reduction="none").view(M, B).mean(dim=1)
    diff = outputs - targets
    return (diff * diff).mean(dim=(1, 2))
