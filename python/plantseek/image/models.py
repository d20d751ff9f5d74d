"""Small VGG-style networks (conv blocks + linear head) parameterised by a width multiplier.

A *layout* lists the convolution channels and ``"M"`` for a 2x2 pooling step; the head lists the hidden
units of the linear layers after the flatten step (the output layer is added). A width multiplier scales
every channel and hidden count (rounded, at least 1), so a ticket network (width 1) and a wider host (width 4)
are the same family with the same layer sequence: exactly what `plantseek.image.planting.plant_state_dict`
needs. Every model is a flat ``torch.nn.Sequential`` (Conv2d 3x3 padding 1, ReLU, pooling, Flatten, Linear,
ReLU, ..., Linear), so ticket and host state dicts share their keys.

Layouts: ``digits`` (8x8 inputs: 16, 16, M, 32, M -> 32 x 2 x 2 features, head 64), ``small`` (one block per
pool, for tests), ``vgg11`` and ``vgg16`` (Simonyan & Zisserman, ICLR 2015; the CIFAR-10 variant with one
linear layer on the 512 x 1 x 1 features, as in the SynFlow and Plant 'n' Seek code).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

LAYOUTS: dict[str, list] = {
    "digits": [16, 16, "M", 32, "M"],
    "small": [8, "M", 16, "M"],
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}
HEADS: dict[str, list[int]] = {"digits": [64], "small": [32], "vgg11": [], "vgg16": []}


def available() -> list[str]:
    """Names of the built-in layouts."""
    return sorted(LAYOUTS)


def scaled(n: int, width: float) -> int:
    """Channel / unit count ``n`` scaled by the width multiplier (rounded half up, at least 1)."""
    return max(1, int(math.floor(n * float(width) + 0.5)))


def _check_layout(layout) -> tuple[list, list[int] | None]:
    if isinstance(layout, str):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown layout {layout!r}; available: {', '.join(available())}")
        return list(LAYOUTS[layout]), list(HEADS[layout])
    layout = list(layout)
    for item in layout:
        if not (item == "M" or item == "A" or (isinstance(item, int) and item > 0)):
            raise ValueError(f"layout entries are positive channel counts, 'M' (max pool) or 'A' (avg pool); got {item!r}")
    return layout, None


def vgg(
    layout: str | Sequence = "digits",
    width: float = 1.0,
    *,
    in_channels: int = 1,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 8,
    head: Sequence[int] | None = None,
    pool: str = "max",
    batch_norm: bool = False,
) -> nn.Sequential:
    """A VGG-style ``nn.Sequential`` with every channel and hidden count scaled by ``width``.

    ``layout`` is a name of `LAYOUTS` or a list of channel counts and ``"M"`` (2x2 pooling: max, or average with
    ``pool="avg"``; ``"A"`` is always average). ``head`` lists hidden linear units (default: the layout's).
    ``batch_norm=True`` adds BatchNorm2d after each convolution (for training tickets; fold it with
    `fold_batch_norm` before planting: hosts never carry BatchNorm).
    """
    items, default_head = _check_layout(layout)
    head = list(default_head or []) if head is None else [int(h) for h in head]
    if float(width) <= 0:
        raise ValueError(f"width multiplier must be > 0, got {width!r}")
    if pool not in ("max", "avg"):
        raise ValueError(f"pool must be 'max' or 'avg', got {pool!r}")
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    layers: list[nn.Module] = []
    c = int(in_channels)
    for item in items:
        if item in ("M", "A"):
            if h < 2 or w < 2:
                raise ValueError(f"layout pools a {h}x{w} feature map: the image ({image_size}) is too small for it")
            layers.append(nn.MaxPool2d(2) if item == "M" and pool == "max" else nn.AvgPool2d(2))
            h, w = h // 2, w // 2
        else:
            out = scaled(item, width)
            layers.append(nn.Conv2d(c, out, kernel_size=3, padding=1, bias=True))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(nn.ReLU())
            c = out
    layers.append(nn.Flatten())
    features = c * h * w
    for units in head:
        u = scaled(units, width)
        layers += [nn.Linear(features, u), nn.ReLU()]
        features = u
    layers.append(nn.Linear(features, int(num_classes)))
    return nn.Sequential(*layers)


def init_he_scaled(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-draw every Conv2d/Linear parameter in place as the MLP hosts are drawn (`plantseek.host_init`, "he-scaled"):
    weights N(0, 2/fan_in) with fan_in = in_channels x kernel area, biases N(0, std_l) with std_l the product
    of sqrt(2/fan_in) over the layers up to l. Drawn on the CPU in float64 from ``generator``, then cast."""
    std = 1.0
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                s = math.sqrt(2.0 / fan_in)
                std *= s
                w = torch.randn(m.weight.shape, generator=generator, dtype=torch.float64) * s
                m.weight.copy_(w.to(m.weight))
                if m.bias is not None:
                    b = torch.randn(m.bias.shape, generator=generator, dtype=torch.float64) * std
                    m.bias.copy_(b.to(m.bias))
    return module


def init_default(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """PyTorch's default Conv2d/Linear initialisation (Kaiming-uniform weights, U(+-1/sqrt(fan_in)) biases),
    drawn from ``generator`` instead of the global RNG: the trainable small networks use it."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                bound = 1.0 / math.sqrt(m.weight[0].numel())
                w = (torch.rand(m.weight.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
                m.weight.copy_(w.to(m.weight))
                if m.bias is not None:
                    b = (torch.rand(m.bias.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
                    m.bias.copy_(b.to(m.bias))
    return module


INITS = {"he-scaled": init_he_scaled, "default": init_default}


def build(layout="digits", width=1.0, *, seed: int = 0, init: str = "default", dtype=torch.float64, **kwargs) -> nn.Sequential:
    """`vgg(...)` with parameters drawn from ``seed`` by ``init`` ("default" or "he-scaled"), float64 by default."""
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; available: {', '.join(sorted(INITS))}")
    m = vgg(layout, width, **kwargs).to(dtype)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return INITS[init](m, g)
