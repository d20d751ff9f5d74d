"""A user's own pruner is ~10 lines and goes through the same framework (the docs/pruners.md example)."""
import pytest
import torch

from plantseek import pruners


@pruners.register("my-magnitude")
class MyMagnitude(pruners.ScorePruner):
    """Keep the largest |w| and |b| (the README's example)."""

    def scores(self, net, data, generator, mask):
        return [(w.abs(), b.abs()) for w, b in zip(net.weights, net.biases)]


def test_user_pruner_is_registered():
    assert "my-magnitude" in pruners.available()
    assert pruners.descriptions()["my-magnitude"].startswith("Keep the largest")


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("prune_bias", [True, False])
def test_user_pruner_gives_exactly_the_magnitude_masks(small_circle, scope, prune_bias):
    net, data = small_circle
    for density in (1.0, 0.5, 0.1, 0.01, "ticket"):
        ours = pruners.get("my-magnitude").prune(net, data, density, scope=scope, prune_bias=prune_bias)
        ref = pruners.get("magnitude").prune(net, data, density, scope=scope, prune_bias=prune_bias)
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(ours, ref))
    it = pruners.get("my-magnitude", iterations=3).prune(net, data, 0.1, scope=scope, prune_bias=prune_bias)
    ref = pruners.get("magnitude", iterations=3).prune(net, data, 0.1, scope=scope, prune_bias=prune_bias)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(it, ref))


def test_scores_without_mask_argument(small_circle):
    net, data = small_circle

    class NoMaskArg(pruners.ScorePruner):
        def scores(self, net, data, generator):
            return [(w.abs(), b.abs()) for w, b in zip(net.weights, net.biases)]

    ours = NoMaskArg().prune(net, data, 0.2)
    ref = pruners.get("magnitude").prune(net, data, 0.2)
    assert all(torch.equal(a, c) for (a, _), (c, _) in zip(ours, ref))


def test_subclass_with_own_scores_is_not_bypassed_by_the_native_synflow(small_circle):
    net, data = small_circle
    from plantseek.pruners.synflow import SynFlowPruner

    class MagnitudeInDisguise(SynFlowPruner):
        def scores(self, net, data, generator, mask):
            return [(w.abs(), b.abs()) for w, b in zip(net.weights, net.biases)]

    ours = MagnitudeInDisguise(iterations=1).prune(net, data, 0.2)
    ref = pruners.get("magnitude").prune(net, data, 0.2)
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(ours, ref))
