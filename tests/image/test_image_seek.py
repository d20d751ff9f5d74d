"""The image tasks as ordinary `plantseek.seek` runs (the conv family): the image family's metrics, the learned
ticket cached per configuration, what does not apply refused, and the conv training block's rescale."""
from __future__ import annotations

import pytest
import torch

import plantseek
from plantseek import metric_schema as schema

TINY = dict(task="digits", width=32, n_train=160, n_test=80, ticket_pruner="magnitude", ticket_target_density=0.2,
            ticket_train_epochs=2, ticket_finetune_epochs=1, epochs=1, progress=False, device="cpu")


def _seek_module():
    import importlib

    return importlib.import_module("plantseek.seek")


def test_seek_digits_strong_returns_the_image_familys_metrics():
    r = plantseek.seek(**TINY, pruner="edge-popup-annealed", pruner_options={"epochs": 1}, protocol="strong",
                       density="ticket")
    assert isinstance(r, _seek_module().SeekResult)
    assert all(schema.get(k).families and "image" in schema.get(k).families for k in r.metrics)
    n_layers = len(r.masks)
    assert n_layers == 5 and r.masks[0][0].dim() == 4  # digits: 3 convolutions, a hidden linear layer, the output
    assert set(r.metrics) == set(schema.expected("strong", "image", kind="classification", n_layers=n_layers))
    m = r.metrics
    assert m["kept_density"] == pytest.approx(m["ticket_density"], rel=2e-3)  # per layer, rounded in each
    assert m["dense_epochs"] == 1 and m["planting_exactness"] < 1e-5 and m["host_params"] > 0
    assert r.config["task"] == "digits" and r.config["width"] == 32 and r.config["ticket_pruner"] == "magnitude"


def test_singleshot_trains_the_kept_weights_after_the_rescale():
    r = plantseek.seek(**TINY, pruner="ticket", density="ticket", protocol="singleshot", dtype="float64")
    m = r.metrics
    assert set(m) == set(schema.expected("singleshot", "image", kind="classification", n_layers=len(r.masks)))
    assert m["recall"] == 1.0 and m["train_loss"] == m["train_loss"] and m["rescale_factor"] > 0
    assert all(bool((w[~wm] == 0).all()) for w, (wm, _) in zip(r.weights, r.masks))


def test_the_learned_ticket_is_learned_once_per_ticket_configuration(monkeypatch):
    """Seekers, densities, host widths and protocols share one learned ticket; a seed or a ticket setting
    learns another."""
    from plantseek.image import ticket as ticket_mod

    mod = _seek_module()
    mod.clear_caches()
    calls = []
    real = ticket_mod.learn_ticket
    monkeypatch.setattr(ticket_mod, "learn_ticket", lambda cfg, task, data: calls.append(cfg["seed"]) or real(cfg, task, data))
    rows = [dict(TINY, pruner=p, density=d, protocol="strong", dense_baseline=False, pruner_options=o)
            for p, o in (("random", {}), ("edge-popup", {"epochs": 1})) for d in (0.1, 0.5)]
    rows += [dict(TINY, pruner="random", density=0.1, width=48, dense_baseline=False)]  # another host
    rows += [dict(TINY, pruner="random", density=0.1, seed=1, dense_baseline=False)]  # another seed
    rows += [dict(TINY, pruner="random", density=0.1, ticket_target_density=0.3, dense_baseline=False)]
    results = mod.seek_batch(rows)
    assert not [r for r in results if isinstance(r, BaseException)], results
    assert sorted(calls) == [0, 0, 1]
    # the runs of one ticket share it: same ticket metrics
    tickets = {r.metrics["ticket_nnz"] for r in results[:5]}
    assert len(tickets) == 1


@pytest.mark.parametrize("options, message", [
    (dict(depth=3), r"option depth=3 does not apply to task 'digits' \(the conv family\)"),
    (dict(n_samples=500), r"option n_samples=500 does not apply"),
    (dict(impl="sparse"), r"option impl='sparse' does not apply"),
    (dict(protocol="multishot"), r"cannot run protocol 'multishot'.*strong.*singleshot|singleshot, strong"),
    (dict(width=8), r"width must be >= 16"),
    (dict(width=[32, 16]), r"width must be one integer"),
    (dict(layout="vgg99"), r"unknown layout 'vgg99'"),
    (dict(ticket_pruner="ticket"), r"ticket_pruner must be a registered pruner that finds a ticket"),
    (dict(ticket_target_density=0.0), r"ticket_target_density must lie in \(0, 1\]"),
    (dict(ticket_scope="local"), r"unknown ticket_scope 'local'"),
    (dict(n_train=0), r"n_train must be an integer >= 1"),
])
def test_what_does_not_apply_is_refused_naming_the_option(options, message):
    with pytest.raises(ValueError, match=message):
        plantseek.seek(**{**TINY, "pruner": "random", "density": 0.5, **options})


def test_conv_options_are_refused_on_mlp_tasks_and_keys_are_unchanged():
    with pytest.raises(ValueError, match=r"option layout='digits' does not apply to task 'circle' \(the mlp family\)"):
        plantseek.seek(task="circle", layout="digits", progress=False, device="cpu")
    with pytest.raises(ValueError, match=r"n_train=100 does not apply"):
        plantseek.seek(task="relu", depth=2, width=10, n_train=100, progress=False, device="cpu")
    from plantseek import spec

    assert spec.run_key({"task": "relu", "layout": None, "ticket_width": 1.0, "n_train": None,
                         "data_dir": "/x"}) == spec.run_key({"task": "relu"})


def test_the_conv_rescale_preserves_the_function():
    """Weights x g^(1/L), biases x g^(l/L), hidden channels balanced: the network computes g x its function."""
    from plantseek.image.training import outputs, rescaled

    mod = _seek_module()
    cfg = mod.normalize({**TINY, "pruner": "random", "dtype": "float64"})
    net, data = mod._planted(cfg), mod._data(cfg)
    w, b = [w.clone() for w in net.weights], [b.clone() for b in net.biases]
    y = outputs(net, w, b, data.x_train).argmax(dim=1)  # labels the network predicts: a positive temperature fits
    for balance in (False, True):
        w2, b2, g = rescaled(net, w, b, data.x_train, y, "classification", balance=balance)
        assert g > 0 and g != 1.0
        before, after = outputs(net, w, b, data.x_test), outputs(net, w2, b2, data.x_test)
        assert torch.allclose(after, g * before, rtol=1e-9, atol=1e-12 * float(after.abs().max()))
    assert not all(torch.allclose(x, x2) for x, x2 in zip(w, w2))  # balancing changed the parametrisation
