"""Helpers shared by the kernel and metrics argument-validation tests."""
from __future__ import annotations

import os
import re
from unittest import mock

import pytest


def names(arg):
    """pytest.raises(ValueError) whose message names `arg` (not as part of a longer word)."""
    return pytest.raises(ValueError, match=rf"(^|\W){re.escape(arg)}(\W|$)")


def no_native(fn):
    """`fn` called with PLANTSEEK_NATIVE=0 (the PyTorch fallback of a native wrapper)."""
    def call(*args, **kwargs):
        with mock.patch.dict(os.environ, {"PLANTSEEK_NATIVE": "0"}):
            return fn(*args, **kwargs)
    return call
