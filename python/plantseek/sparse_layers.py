"""Masked linear layers as torch modules: `MaskedLinear`, one layer or M stacked layers whose weight (and bias) are
multiplied by fixed bool masks, on `plantseek.kernels.sparse_linear.masked_linear` (the dense formula, or the
sparse CSR kernels below the measured density crossover).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .kernels.checks import ArgumentError
from .kernels.sparse_linear import IMPLS, mask_density, masked_linear


class MaskedLinear(nn.Module):
    """A linear layer whose weight (and bias) are multiplied by fixed bool masks.

    ``n_networks=None`` holds one layer: weight (out, in), input (..., in). ``n_networks=M`` holds M
    independent layers stacked: weight (M, out, in), input (M, B, in). Masks are buffers (all True at
    first); change them with `set_mask` (or in place): the CSR structure is rebuilt on the next forward.
    ``impl`` is passed to `masked_linear`.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, n_networks: int | None = None,
                 impl: str = "auto", device=None, dtype=None):
        super().__init__()
        if impl not in IMPLS:
            raise ArgumentError(f"impl must be one of {IMPLS}, got {impl!r}")
        self.in_features, self.out_features, self.n_networks, self.impl = in_features, out_features, n_networks, impl
        lead = () if n_networks is None else (n_networks,)
        kw = {"device": device, "dtype": dtype}
        self.weight = nn.Parameter(torch.empty(*lead, out_features, in_features, **kw))
        self.bias = nn.Parameter(torch.empty(*lead, out_features, **kw)) if bias else None
        self.register_buffer("weight_mask", torch.ones(*lead, out_features, in_features, dtype=torch.bool, device=device))
        self.register_buffer("bias_mask", torch.ones(*lead, out_features, dtype=torch.bool, device=device) if bias else None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            if self.bias is not None:
                self.bias.uniform_(-bound, bound)

    @torch.no_grad()
    def set_mask(self, weight_mask: torch.Tensor, bias_mask: torch.Tensor | None = None) -> None:
        """Copy new masks in (shapes of the weight and bias; bool)."""
        if weight_mask.shape != self.weight_mask.shape or weight_mask.dtype != torch.bool:
            raise ArgumentError(f"weight_mask must be bool of shape {tuple(self.weight_mask.shape)}")
        self.weight_mask.copy_(weight_mask)
        if bias_mask is not None:
            if self.bias_mask is None:
                raise ArgumentError("this layer has no bias")
            if bias_mask.shape != self.bias_mask.shape or bias_mask.dtype != torch.bool:
                raise ArgumentError(f"bias_mask must be bool of shape {tuple(self.bias_mask.shape)}")
            self.bias_mask.copy_(bias_mask)

    def density(self) -> float:
        return mask_density(self.weight_mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return masked_linear(x, self.weight, self.weight_mask, self.bias, self.bias_mask, impl=self.impl)

    def extra_repr(self) -> str:
        m = "" if self.n_networks is None else f", n_networks={self.n_networks}"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{m}, impl={self.impl!r}"
