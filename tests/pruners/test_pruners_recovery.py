"""What the baselines recover of a planted ticket: random ~ density, magnitude does not find the hidden ticket."""
import math

import pytest
import torch

from plantseek import pruners

from pruner_helpers import n_kept, planted, recall, task_data


@pytest.mark.parametrize("task", ["circle", "helix"])
@pytest.mark.parametrize("density", [0.1, 0.5])
def test_random_recall_is_close_to_the_density(task, density):
    net = planted(task, 100, 4)
    T = n_kept(net.ticket_mask)
    N = net.n_params
    # hypergeometric: mean = density, sd <= sqrt(d (1 - d) / T * (N - T) / (N - 1))
    sd = math.sqrt(density * (1 - density) / T * (N - T) / (N - 1))
    recalls = []
    for seed in range(8):
        m = pruners.get("random").prune(net, None, density, generator=torch.Generator().manual_seed(seed))
        r = recall(m, net.ticket_mask)
        assert abs(r - density) <= 4.5 * sd, (seed, r)
        recalls.append(r)
    assert abs(sum(recalls) / len(recalls) - density) <= 4.5 * sd / math.sqrt(len(recalls))


@pytest.mark.parametrize("task", ["circle", "helix", "relu"])
def test_magnitude_does_not_find_the_hidden_ticket(task):
    net = planted(task, 100, 4)
    m = pruners.get("magnitude").prune(net, task_data(task), "ticket")
    assert n_kept(m) == round(net.ticket_density * net.n_params)
    assert recall(m, net.ticket_mask) < 0.5
