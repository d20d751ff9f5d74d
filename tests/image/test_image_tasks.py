"""The image tasks: digits (bundled with scikit-learn) and CIFAR-10 from a local copy (a tiny file written here)."""
import pickle

import numpy as np
import pytest
import torch

from plantseek import tasks


def write_tiny_cifar(root, n_train=(12, 8), n_test=10, seed=0):
    """A CIFAR-10 python-pickle copy with few images: data_batch_1..len(n_train) and test_batch."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)

    def batch(path, n, label):
        d = {b"batch_label": label, b"labels": rng.integers(0, 10, n).tolist(),
             b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
        with open(path, "wb") as fh:
            pickle.dump(d, fh)

    for i, n in enumerate(n_train, start=1):
        batch(folder / f"data_batch_{i}", n, f"training batch {i} of 5".encode())
    batch(folder / "test_batch", n_test, b"testing batch 1 of 1")
    return folder


def test_digits_all_images_split_and_normalised():
    t = tasks.get("digits")
    d = t.data(seed=0)
    assert t.kind == "classification" and not t.builds_ticket
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_test.shape[1:] == (1, 8, 8)
    assert d.x_train.shape[0] + d.x_test.shape[0] == 1797
    assert d.x_train.dtype == torch.float64 and d.y_train.dtype == torch.int64
    assert abs(float(d.x_train.mean())) < 1e-9 and abs(float(d.x_train.std()) - 1) < 1e-9
    assert set(d.y_train.tolist()) == set(range(10))
    again = t.data(seed=0)
    assert torch.equal(d.x_train, again.x_train) and torch.equal(d.y_test, again.y_test)
    other = t.data(seed=1)
    assert not torch.equal(d.y_train, other.y_train)
    with pytest.raises(ValueError, match="no built ticket"):
        t.ticket()


def test_digits_label_noise_is_seeded():
    t = tasks.get("digits")
    clean, noisy = t.data(seed=3), t.data(seed=3, noise=0.2)
    flipped = float((clean.y_train != noisy.y_train).double().mean())
    assert 0.12 < flipped < 0.28
    assert torch.equal(clean.y_test, noisy.y_test)


def test_cifar10_reads_the_python_pickle_layout(tmp_path):
    write_tiny_cifar(tmp_path)
    t = tasks.get("cifar10")
    d = t.data(data_dir=tmp_path, seed=0)
    assert d.x_train.shape == (20, 3, 32, 32) and d.x_test.shape == (10, 3, 32, 32)
    assert torch.allclose(d.x_train.mean(dim=(0, 2, 3)), torch.zeros(3, dtype=torch.float64), atol=1e-9)
    # the folder itself works too, and subsamples are seeded
    d2 = t.data(data_dir=tmp_path / "cifar-10-batches-py", seed=0, n=5, n_test=4)
    assert d2.x_train.shape[0] == 5 and d2.x_test.shape[0] == 4
    # pixel order: channel-major rows of 1024 values
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    from plantseek.tasks.cifar10 import read_batch

    x, y = read_batch(tmp_path / "cifar-10-batches-py" / "test_batch")
    assert x.shape == (10, 3, 32, 32) and x[0, 1, 0, 0] == raw[b"data"][0, 1024] and y.tolist() == raw[b"labels"]


def test_cifar10_missing_folder_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py.*never downloads|never downloads.*cifar-10-batches-py"):
        tasks.get("cifar10").data(data_dir=tmp_path / "nowhere")
    bad = tmp_path / "bad" / "cifar-10-batches-py"
    bad.mkdir(parents=True)
    (bad / "data_batch_1").write_bytes(b"not a pickle")
    (bad / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="not a CIFAR-10 python batch"):
        tasks.get("cifar10").data(data_dir=tmp_path / "bad")
