"""cifar10: CIFAR-10 from a local copy in the standard python-pickle layout (never downloaded at run time).

Expected layout: ``<data_dir>/cifar-10-batches-py/data_batch_1`` ... ``data_batch_5`` and ``test_batch`` (each a
pickle of a dict with ``b"data"``: (n, 3072) uint8 rows in channel-major order and ``b"labels"``), as unpacked
from the official ``cifar-10-python.tar.gz``. ``data_dir`` may also point at the ``cifar-10-batches-py``
folder itself. Default ``data_dir``: the ``PLANTSEEK_DATA`` environment variable, else ``./data``.

Images are (N, 3, 32, 32) float64 scaled to [0, 1] and standardised per channel with training statistics; the
official train/test split is kept (``seed`` only shuffles the order, and draws a subsample when ``n``/``n_test``
ask for fewer images).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from .base import TaskData, register
from .digits import ImageTask, flip_labels

FOLDER = "cifar-10-batches-py"
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILE = "test_batch"


def find_folder(data_dir: str | os.PathLike | None) -> Path:
    """The ``cifar-10-batches-py`` folder under ``data_dir`` (or ``data_dir`` itself); FileNotFoundError saying
    where to put the data otherwise."""
    base = Path(data_dir if data_dir is not None else os.environ.get("PLANTSEEK_DATA", "data")).expanduser()
    for cand in (base / FOLDER, base):
        if (cand / TEST_FILE).is_file() and any((cand / f).is_file() for f in TRAIN_FILES):
            return cand
    raise FileNotFoundError(
        f"CIFAR-10 not found under {str(base)!r}: plantseek never downloads data. Put the python version of "
        f"CIFAR-10 there, unpacked, so that {str(base / FOLDER / 'data_batch_1')!r} ... 'data_batch_5' and "
        f"{str(base / FOLDER / TEST_FILE)!r} exist (tar xzf cifar-10-python.tar.gz -C {str(base)!r}), or pass "
        "--data-dir / data_dir= (or set PLANTSEEK_DATA) to the folder that holds cifar-10-batches-py"
    )


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch as ((n, 3, 32, 32) uint8, (n,) int64)."""
    with open(path, "rb") as fh:
        try:
            d = pickle.load(fh, encoding="bytes")
        except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
            raise ValueError(f"{path} is not a CIFAR-10 python batch ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(d, dict):
        raise ValueError(f"{path} is not a CIFAR-10 python batch (a pickled dict)")
    data = d.get(b"data", d.get("data"))
    labels = d.get(b"labels", d.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path} is not a CIFAR-10 python batch: no 'data'/'labels' entries")
    data = np.asarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or data.shape[0] != len(labels):
        raise ValueError(f"{path}: expected (n, 3072) uint8 rows and n labels, got {data.shape} and {len(labels)}")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


@register("cifar10")
class Cifar10Task(ImageTask):
    input_dim = 3 * 32 * 32
    output_dim = 10
    input_shape = (3, 32, 32)
    default_layout = "vgg16"
    description = "CIFAR-10 from a local copy (--data-dir); ticket: a pruned VGG-style net (VGG16 on a GPU)"

    def data(self, n: int | None = None, noise: float = 0.0, seed: int = 0, train_fraction: float | None = None,
             data_dir: str | os.PathLike | None = None, n_test: int | None = None, *,
             n_train: int | None = None) -> TaskData:
        """The official split from the local copy (missing training batches are skipped; at least one must
        exist); ``n_train`` (or ``n``) / ``n_test`` take seeded subsamples; ``noise`` flips that share of
        training labels. ``train_fraction`` is ignored: the split is the official one."""
        if n_train is not None:
            n = n_train
        noise = self.check_noise(noise)
        folder = find_folder(data_dir)
        parts = [read_batch(folder / f) for f in TRAIN_FILES if (folder / f).is_file()]
        xtr = np.concatenate([p[0] for p in parts])
        ytr = np.concatenate([p[1] for p in parts])
        xte, yte = read_batch(folder / TEST_FILE)
        g = torch.Generator(device="cpu").manual_seed(int(seed))
        ptr = torch.randperm(len(ytr), generator=g)
        pte = torch.randperm(len(yte), generator=g)
        if n is not None:
            ptr = ptr[: max(1, int(n))]
        if n_test is not None:
            pte = pte[: max(1, int(n_test))]
        x_train = torch.from_numpy(xtr)[ptr].to(torch.float64) / 255.0
        x_test = torch.from_numpy(xte)[pte].to(torch.float64) / 255.0
        mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
        std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-12) if x_train.shape[0] > 1 else torch.ones_like(mean)
        y_train = flip_labels(torch.from_numpy(ytr)[ptr], noise, self.output_dim, seed)
        return TaskData((x_train - mean) / std, y_train, (x_test - mean) / std, torch.from_numpy(yte)[pte])
