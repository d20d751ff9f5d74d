"""The CPU thread policy (plantseek.threads.cpu_threads_for)."""
from __future__ import annotations

import pytest
import torch

from plantseek.threads import SMALL_WORK, cpu_threads_for


@pytest.fixture
def two_threads(monkeypatch):
    """torch on 2 threads with no PLANTSEEK_TRAIN_THREADS, restored afterwards."""
    monkeypatch.delenv("PLANTSEEK_TRAIN_THREADS", raising=False)
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(old)


def test_small_work_runs_on_one_thread_and_restores(two_threads, monkeypatch):
    with cpu_threads_for(SMALL_WORK / 2):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    for kwargs in ({"work": SMALL_WORK * 2}, {"work": 1.0, "parallel_networks": True},
                   {"work": 1.0, "device": "meta"}):
        with cpu_threads_for(**kwargs):
            assert torch.get_num_threads() == 2, kwargs
    monkeypatch.setenv("PLANTSEEK_TRAIN_THREADS", "3")
    with cpu_threads_for(1.0):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == 2


def test_parallel_networks_inside_a_narrowed_block_get_the_callers_threads(two_threads):
    """A group's native-stack training inside `seek`'s one-thread block for small groups runs on the caller's
    threads again, and the narrowing comes back after it."""
    with cpu_threads_for(SMALL_WORK / 2):
        assert torch.get_num_threads() == 1
        with cpu_threads_for(1.0, parallel_networks=True):
            assert torch.get_num_threads() == 2
        assert torch.get_num_threads() == 1
        with cpu_threads_for(1.0):
            assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with cpu_threads_for(1.0, parallel_networks=True):
        assert torch.get_num_threads() == 2
