"""Tasks: seeded vectorised data, evaluation, registry errors."""
import pytest
import torch

from plantseek import tasks


@pytest.mark.parametrize("name", ["relu", "circle", "helix"])
def test_data_is_seeded_and_split(name):
    task = tasks.get(name)
    torch.manual_seed(123)
    a = task.data(n=1000, seed=5)
    torch.manual_seed(999)  # global RNG state must not matter
    b = task.data(n=1000, seed=5)
    c = task.data(n=1000, seed=6)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert a.x_train.shape == (900, task.input_dim) and a.x_test.shape == (100, task.input_dim)
    assert a.x_train.dtype == torch.float64
    assert float(a.x_train.min()) >= -1 and float(a.x_train.max()) <= 1
    if task.kind == "classification":
        assert a.y_train.dtype == torch.int64 and set(a.y_train.unique().tolist()) <= {0, 1, 2, 3}
    else:
        assert a.y_train.dtype == torch.float64 and a.y_train.shape == (900, task.output_dim)


def test_regression_noise_has_requested_scale():
    task = tasks.get("relu")
    d = task.data(n=20000, noise=0.1, seed=0)
    resid = d.y_train - torch.relu(d.x_train)
    assert abs(float(resid.std()) - 0.1) < 0.005
    clean = task.data(n=1000, noise=0.0, seed=0)
    assert torch.equal(clean.y_train, torch.relu(clean.x_train))


def test_circle_label_noise_moves_to_neighbours():
    task = tasks.get("circle")
    noisy = task.data(n=20000, noise=0.2, seed=3)
    clean_labels = task.target(noisy.x_train)
    moved = noisy.y_train != clean_labels
    assert 0.17 < float(moved.double().mean()) < 0.23
    assert int((noisy.y_train - clean_labels).abs().max()) == 1


def test_circle_labels_follow_radius():
    task = tasks.get("circle")
    x = torch.tensor([[0.0, 0.1], [0.6, 0.0], [0.8, 0.0], [0.9, 0.9]], dtype=torch.float64)
    assert task.target(x).tolist() == [0, 1, 2, 3]


def test_evaluate_returns_loss_and_accuracy():
    task = tasks.get("circle")
    logits = torch.tensor([[5.0, 0, 0, 0], [0, 5.0, 0, 0]], dtype=torch.float64)
    out = task.evaluate(logits, torch.tensor([0, 2]))
    assert out["accuracy"] == 0.5 and out["loss"] > 0
    reg = tasks.get("helix").evaluate(torch.zeros(4, 3), torch.ones(4, 3))
    assert reg == {"loss": 1.0}


def test_unknown_task_lists_known_ones():
    with pytest.raises(ValueError, match="circle.*helix.*relu"):
        tasks.get("spiral")


def test_bad_data_arguments():
    task = tasks.get("relu")
    with pytest.raises(ValueError, match="train_fraction"):
        task.data(train_fraction=1.5)
    with pytest.raises(ValueError, match="noise"):
        task.data(noise=-1)


@pytest.mark.parametrize("name", ["circle", "digits", "cifar10"])
@pytest.mark.parametrize("noise", [1.5, -0.1, float("nan"), float("inf"), True, "0.1"])
def test_classification_noise_is_a_flip_probability(name, noise):
    task = tasks.get(name)
    with pytest.raises(ValueError, match=rf"task '{name}': noise must be a number in \[0, 1\] \(the probability"):
        task.check_noise(noise)
    with pytest.raises(ValueError, match=rf"task '{name}': noise"):  # the data generators go through it
        task.data(n=100, noise=noise, seed=0)
    assert task.check_noise(1) == 1.0 and task.check_noise(0) == 0.0


@pytest.mark.parametrize("name", ["relu", "helix"])
@pytest.mark.parametrize("noise", [-1.0, float("nan"), float("inf"), False])
def test_regression_noise_is_a_finite_standard_deviation(name, noise):
    task = tasks.get(name)
    with pytest.raises(ValueError, match=rf"task '{name}': noise must be a finite number >= 0 \(the standard deviation"):
        task.data(n=100, noise=noise, seed=0)
    assert task.check_noise(1.5) == 1.5
