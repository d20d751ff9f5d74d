"""Host initialisations behind a registry: each draws float64 weights and biases on the CPU from a generator."""
from __future__ import annotations

import math
from typing import Callable

import torch

Init = Callable[[list[int], torch.Generator], tuple[list[torch.Tensor], list[torch.Tensor]]]
_INITS: dict[str, Init] = {}


def register(name: str):
    """Function decorator adding an initialisation `f(widths, generator) -> (weights, biases)`."""
    def wrap(fn: Init) -> Init:
        _INITS[name] = fn
        return fn
    return wrap


def get(name: str) -> Init:
    if name not in _INITS:
        raise ValueError(f"unknown init {name!r}; available: {', '.join(available())}")
    return _INITS[name]


def available() -> list[str]:
    return sorted(_INITS)


@register("he-scaled")
def he_scaled(widths: list[int], g: torch.Generator):
    """He normal weights N(0, 2/fan_in) and nonzero biases with std = prod of the layers' sqrt(2/fan_in) so far,
    as in the Plant 'n' Seek paper (biases on the scale of the activations they are added to)."""
    weights, biases, std = [], [], 1.0
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        s = math.sqrt(2.0 / fan_in)
        std *= s
        weights.append(torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) * s)
        biases.append(torch.randn(fan_out, generator=g, dtype=torch.float64) * std)
    return weights, biases


@register("he")
def he(widths: list[int], g: torch.Generator):
    """He normal weights N(0, 2/fan_in) and biases N(0, 2/fan_in) (every layer on the same scale)."""
    weights, biases = [], []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        s = math.sqrt(2.0 / fan_in)
        weights.append(torch.randn(fan_out, fan_in, generator=g, dtype=torch.float64) * s)
        biases.append(torch.randn(fan_out, generator=g, dtype=torch.float64) * s)
    return weights, biases


@register("kaiming-uniform")
def kaiming_uniform(widths: list[int], g: torch.Generator):
    """PyTorch's default nn.Linear initialisation: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    weights, biases = [], []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        bound = 1.0 / math.sqrt(fan_in)
        weights.append((torch.rand(fan_out, fan_in, generator=g, dtype=torch.float64) * 2 - 1) * bound)
        biases.append((torch.rand(fan_out, generator=g, dtype=torch.float64) * 2 - 1) * bound)
    return weights, biases
