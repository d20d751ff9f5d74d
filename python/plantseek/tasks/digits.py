"""digits: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes), for the image task.

Offline (the data ship with scikit-learn). Images are (N, 1, 8, 8) float64, pixel values 0..16 scaled to
[0, 1] and standardised with the training split's mean and standard deviation (one scalar each). The ticket is
not built but found by training and pruning a small network: image tasks belong to the conv network family
(`plantseek.families.conv`), whose learned tickets `plantseek.seek` plants like the built ones (docs/image.md).

Every image task takes the same data call, ``data(noise=, seed=, n_train=, n_test=, data_dir=)``, so that the
conv family never asks which task it runs; what differs (where the images come from, how they are split, the
default layout) lives on the task classes.
"""
from __future__ import annotations

import torch

from .base import Task, TaskData, register


def split_and_normalise(x: torch.Tensor, y: torch.Tensor, seed: int, train_fraction: float,
                        n: int | None = None, n_train: int | None = None,
                        n_test: int | None = None) -> tuple[TaskData, dict]:
    """Seeded permutation, optional subsample of ``n``, train/test split, optional subsamples of ``n_train`` /
    ``n_test`` of the two parts, and standardisation with training statistics (per channel). Returns the data
    and the statistics used."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must lie in (0, 1) (got {train_fraction})")
    total = x.shape[0]
    if n is not None:
        if not 2 <= int(n) <= total:
            raise ValueError(f"n must lie in [2, {total}] (got {n})")
        total = int(n)
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    perm = torch.randperm(x.shape[0], generator=g)[:total]
    x, y = x[perm], y[perm]
    split = min(max(int(round(total * train_fraction)), 1), total - 1)
    xtr, ytr, xte, yte = x[:split], y[:split], x[split:], y[split:]
    xtr, ytr = subsample(xtr, ytr, n_train, "n_train")
    xte, yte = subsample(xte, yte, n_test, "n_test")
    dims = (0, 2, 3) if x.dim() == 4 else (0,)
    mean = xtr.mean(dim=dims, keepdim=True)
    std = xtr.std(dim=dims, keepdim=True).clamp_min(1e-12) if xtr.shape[0] > 1 else torch.ones_like(mean)
    data = TaskData((xtr - mean) / std, ytr, (xte - mean) / std, yte)
    return data, {"mean": mean.reshape(-1).tolist(), "std": std.reshape(-1).tolist()}


def subsample(x: torch.Tensor, y: torch.Tensor, n: int | None, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` of an already shuffled split (all when ``n`` is None); ValueError naming ``name`` when
    the split has fewer."""
    if n is None:
        return x, y
    if not 1 <= int(n) <= x.shape[0]:
        raise ValueError(f"{name} must lie in [1, {x.shape[0]}] (the images of the split), got {n}")
    return x[:int(n)], y[:int(n)]


def flip_labels(y: torch.Tensor, noise: float, classes: int, seed: int) -> torch.Tensor:
    """With probability ``noise`` a label is replaced by a uniformly drawn *other* class (seeded)."""
    if noise < 0 or noise > 1:
        raise ValueError(f"noise must lie in [0, 1] (got {noise})")
    if noise == 0:
        return y
    g = torch.Generator(device="cpu").manual_seed(int(seed) + 7919)
    flip = torch.rand(y.shape, generator=g, dtype=torch.float64) < noise
    shift = torch.randint(1, classes, y.shape, generator=g)
    return torch.where(flip, (y + shift) % classes, y)


class ImageTask(Task):
    """Base of the image tasks: classification of (N, C, H, W) float64 images; no built ticket."""

    kind = "classification"
    builds_ticket = False
    family = "conv"  # plantseek.families: VGG-style networks with learned tickets
    input_shape: tuple[int, int, int] = (1, 8, 8)
    default_layout = "digits"

    @property
    def image_size(self) -> int:
        return self.input_shape[1]

    def ticket(self, depth: int | None = None):
        raise ValueError(
            f"task {self.name!r} has no built ticket: its ticket is found by training and pruning a small "
            f"network (plantseek.seek(task={self.name!r}, ...), or plantseek image-ticket --task {self.name})"
        )

    def target(self, x):  # pragma: no cover - image labels come with the data
        raise ValueError(f"task {self.name!r} has labels, not a target function")


@register("digits")
class DigitsTask(ImageTask):
    input_dim = 64
    output_dim = 10
    input_shape = (1, 8, 8)
    default_layout = "digits"
    description = "scikit-learn's 8x8 digits (1797 images, 10 classes); ticket: a pruned small VGG-style net"

    def data(self, n: int | None = None, noise: float = 0.0, seed: int = 0, train_fraction: float = 0.8, *,
             n_train: int | None = None, n_test: int | None = None, data_dir=None) -> TaskData:
        """All 1797 images (or a seeded subsample of ``n``), split ``train_fraction`` / rest (1438 / 359),
        ``n_train`` / ``n_test`` taking seeded subsamples of the two parts, standardised with the training
        images' statistics; ``noise`` flips that share of the training labels to another class. ``data_dir``
        is accepted and ignored (the images ship with scikit-learn) so that every image task takes one call."""
        noise = self.check_noise(noise)
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = torch.as_tensor(bunch.images, dtype=torch.float64).reshape(-1, 1, 8, 8) / 16.0
        y = torch.as_tensor(bunch.target, dtype=torch.int64)
        data, _ = split_and_normalise(x, y, seed, train_fraction, n, n_train, n_test)
        data.y_train = flip_labels(data.y_train, noise, self.output_dim, seed)
        return data
