"""Fixtures of the pruner tests."""
import pytest

from pruner_helpers import planted, task_data


@pytest.fixture(scope="session")
def small_circle():
    """circle, depth 3, width 24: 2*24 + 24*24 + 24*4 weights + 52 biases = 772 parameters."""
    return planted("circle", 24, 3), task_data("circle")
