"""A new pruner in one file (docs/contributing.md, "A new pruner"): keep the SMALLEST |w| and |b|.

A `ScorePruner` only writes scores; plantseek keeps exactly the requested count of the highest scores, in the
scope asked for, with its tie-breaking, and checks the result. Registering it makes it a valid `pruner` for
`plantseek.seek`, `plantseek seek --pruner` and sweep files. (A deliberately bad pruner: it prunes the ticket.)
"""
from __future__ import annotations

from plantseek.pruners import ScorePruner, register


@register("smallest-magnitude")
class SmallestMagnitude(ScorePruner):
    """Keeps the parameters of smallest magnitude (the opposite of magnitude pruning)."""

    def scores(self, net, data, generator, mask):
        return [(-w.abs(), -b.abs()) for w, b in zip(net.weights, net.biases)]
