"""The network-family contract (`plantseek.families`), checked over the whole registry as scikit-learn checks its
estimators: planting, data, forward, the training block, the read-out and the checks of every family. A new
family needs one entry in EXAMPLES (a fast configuration of one of its tasks) and an option of another family."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from plantseek import families, metric_schema as schema, protocols
from plantseek.seek import _data, _planted, normalize, seek

FAST = dict(epochs=1, progress=False, device="cpu", dtype="float64")
# per family: a fast configuration of one of its tasks, and an option of another family with a non-default value
EXAMPLES = {
    "mlp": (dict(task="circle", depth=3, width=20, n_samples=400), ("layout", "digits")),
    "conv": (dict(task="digits", width=32, n_train=120, n_test=60, ticket_pruner="magnitude",
                  ticket_target_density=0.2, ticket_train_epochs=1, ticket_finetune_epochs=1), ("depth", 3)),
}


@pytest.fixture(params=families.available())
def family(request):
    name = request.param
    assert name in EXAMPLES, f"family {name!r} has no contract example in tests/test_families.py"
    return families.get(name), EXAMPLES[name]


def _cfg(example, **more):
    return normalize({**example[0], **FAST, "pruner": "ticket", "density": "ticket", **more})


def test_registry_and_task_families():
    assert {"mlp", "conv"} <= set(families.available())
    assert families.of("circle").name == "mlp" and families.of("digits").name == "conv"
    assert set(families.tasks_of("conv")) >= {"digits", "cifar10"}
    with pytest.raises(ValueError, match="unknown network family 'rnn'; available: .*conv.*mlp"):
        families.get("rnn")
    for name in families.available():
        assert families.get(name).metrics in schema.FAMILIES


def test_planting_data_and_forward(family):
    fam, example = family
    cfg = _cfg(example)
    net, data = _planted(cfg), _data(cfg)
    assert fam.plant_key(cfg) == fam.plant_key(_cfg(example)) and _planted(cfg) is net  # cached under its key
    assert fam.data(cfg, 7).x_train.dtype == torch.float64
    assert torch.equal(fam.data(cfg, 7).x_train, fam.data(cfg, 7).x_train)  # seeded
    assert len(net.ticket_mask) == len(net.weights) == len(net.biases) and net.output_scale > 0
    assert 0 < net.ticket_density < 1
    out = fam.forward(net, net.weights, net.biases, data.x_test)
    assert out.shape[0] == data.x_test.shape[0] and torch.isfinite(out).all()
    ticket = fam.ticket_metrics(fam_task(cfg), net, data)
    assert "ticket_test_loss" in ticket and all(schema.is_declared(k) for k in ticket)


def fam_task(cfg):
    from plantseek import tasks

    return tasks.get(cfg["task"])


def test_the_oracle_is_exact_under_strong(family):
    """The masked host computes output_scale x the ticket: read through 1/output_scale it is the ticket."""
    fam, example = family
    m = seek(**example[0], **FAST, pruner="ticket", density="ticket", protocol="strong").metrics
    assert m["recall"] == 1.0 and m["precision"] == 1.0 and m["ticket_survived"] is True
    assert m["kept_density"] == pytest.approx(m["ticket_density"], rel=0, abs=1e-15)
    assert m["test_loss_planted_scale"] == pytest.approx(m["ticket_test_loss"], rel=1e-9, abs=0)


@pytest.mark.parametrize("protocol", ["strong", "singleshot"])
def test_every_metric_is_the_familys_and_none_is_missing(family, protocol):
    fam, example = family
    r = seek(**example[0], **FAST, pruner="magnitude", density=0.3, protocol=protocol)
    task = fam_task(r.config)
    expected = schema.expected(protocol, fam.metrics, kind=task.kind, n_layers=len(r.masks),
                               n_outputs=task.output_dim)
    assert sorted(set(r.metrics) - set(expected)) == [] and sorted(set(expected) - set(r.metrics)) == []
    assert list(r.metrics) == schema.order(r.metrics)


def test_the_training_block(family):
    """The family's trainer trains kept parameters, keeps pruned ones at zero, is seeded, and stores a failure
    on its run instead of raising."""
    fam, example = family
    cfg = _cfg(example)
    net, data = _planted(cfg), _data(cfg)
    task = fam_task(cfg)
    settings = protocols.Settings(task=task, epochs=1, rescale="none", trainer=fam.trainer)
    mask = [(torch.rand(w.shape, generator=torch.Generator().manual_seed(l)) < 0.5, torch.ones(b.shape, dtype=torch.bool))
            for l, (w, b) in enumerate(zip(net.weights, net.biases))]

    def run(lr=1e-3):
        r = protocols.Run(label="contract", net=net, data=data, train_generator=torch.Generator().manual_seed(3))
        with fam.threads([cfg]):
            protocols.train_runs([r], [mask], replace(settings, lr=lr), 1)
        return r

    a, b = run(), run()
    assert a.ok, a.error
    assert all(torch.equal(x, y) for x, y in zip(a.weights, b.weights))
    assert all(bool((w[~wm] == 0).all()) for w, (wm, _) in zip(a.weights, mask))
    assert any(not torch.equal(w, w0 * wm) for w, w0, (wm, _) in zip(a.weights, net.weights, mask))
    bad = run(lr=1e300)  # diverges
    assert not bad.ok and "diverged" in str(bad.error)


def test_options_of_another_family_are_refused(family):
    fam, example = family
    key, value = example[1]
    with pytest.raises(ValueError, match=f"option {key}={value!r} does not apply to task"):
        seek(**example[0], **FAST, pruner="random", density=0.5, **{key: value})
