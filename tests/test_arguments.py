"""One validation for seeds, widths and depths (issue 19): `plant`, `seek`, the CLI and sweep files accept and
refuse the same values, with an error naming the argument, the bad value and what is allowed."""
from __future__ import annotations

import numpy as np
import pytest

import plantseek
from plantseek import arguments
from plantseek.cli import main
from plantseek.seek import normalize
from plantseek.sweep.config import SweepConfigError, parse_sweep

BAD_SEEDS = [-4, 1.5, "3", True, None, 2**63]
BAD_WIDTHS = ["10", 10.5, 0, -3, [], [10, 0], [10, "a"], True, None]
BAD_DEPTHS = [0, -1, 2.0, "3", True]


REFUSALS = {"seed": r"seed must be an integer", "width": r"width must be an integer >= 1, or a list of them"}


@pytest.mark.parametrize("key, value", [("seed", v) for v in BAD_SEEDS] + [("width", v) for v in BAD_WIDTHS])
def test_bad_seeds_and_widths_are_refused_everywhere(key, value):
    ticket = plantseek.tasks.get("relu").ticket(2)
    for call in (lambda: getattr(arguments, key)(value), lambda: plantseek.plant(ticket, **{"width": 8, key: value}),
                 lambda: normalize({"task": "relu", "depth": 2, "width": 8, key: value})):
        with pytest.raises(ValueError, match=REFUSALS[key]) as info:
            call()
        assert repr(value) in str(info.value)


@pytest.mark.parametrize("value", BAD_DEPTHS)
def test_bad_depths_are_refused_everywhere(value):
    ticket = plantseek.tasks.get("relu").ticket(2)
    for call in (lambda: arguments.depth(value), lambda: plantseek.plant(ticket, width=8, depth=value),
                 lambda: plantseek.plant("relu", width=8, depth=value), lambda: plantseek.tasks.get("relu").ticket(value),
                 lambda: normalize({"task": "relu", "depth": value, "width": 8})):
        with pytest.raises(ValueError, match=r"depth must be an integer >= 1 \(the number of linear layers\)") as info:
            call()
        assert repr(value) in str(info.value)


def test_good_values_are_accepted_the_same_way():
    ticket = plantseek.tasks.get("relu").ticket(2)
    assert plantseek.plant(ticket, width=np.int64(8), seed=np.int64(3)).widths == [1, 8, 1]
    assert plantseek.plant("relu", width=(8, 6), depth=3).widths == [1, 8, 6, 1]
    cfg = normalize({"task": "relu", "depth": 3, "width": (8, 6), "seed": np.int64(2)})
    assert cfg["width"] == [8, 6] and cfg["seed"] == 2 and type(cfg["seed"]) is int


@pytest.mark.parametrize("argv, words", [
    (["plant", "--task", "relu", "--seed", "-4"], ["--seed", "seed must be an integer >= 0, got -4"]),
    (["plant", "--task", "relu", "--seed", "1.5"], ["--seed", "got '1.5'"]),
    (["plant", "--task", "relu", "--width", "10.5"], ["--width", "width must be an integer >= 1", "'10.5'"]),
    (["plant", "--task", "relu", "--width", "10,x"], ["--width", "'10,x'"]),
    (["plant", "--task", "relu", "--depth", "0"], ["--depth", "depth must be an integer >= 1", "got 0"]),
    (["seek", "--seed", "-4"], ["--seed", "seed must be an integer >= 0, got -4"]),
    (["seek", "--width", "0"], ["--width", "got 0"]),
    (["tasks", "--depth", "0"], ["--depth", "depth must be an integer >= 1", "got 0"]),
    (["tasks", "--width", "abc"], ["--width", "'abc'"]),
    (["sweep", "s.toml", "--db", "r.db", "--max-batch", "0"], ["--max-batch", "max_batch must be an integer >= 1, got 0"]),
])
def test_cli_refuses_the_same_values(argv, words, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"plantseek {argv[0]}: error: argument" in err and "Traceback" not in err
    for w in words:
        assert w in err, err


def test_tasks_depth_below_every_minimum(capsys):
    assert main(["tasks", "--depth", "1"]) == 2
    err = capsys.readouterr().err
    assert "depth 1 is below every task's minimum depth" in err and "depth >= 2" in err


def test_plant_cli_takes_per_layer_widths(tmp_path, capsys):
    assert main(["plant", "--task", "relu", "--depth", "3", "--width", "8,6", "--seed", "1",
                 "--out", str(tmp_path / "p.pt")]) == 0
    net = plantseek.load(tmp_path / "p.pt")
    assert net.widths == [1, 8, 6, 1] and net.config["seed"] == 1


@pytest.mark.parametrize("line, allowed", [
    ("seed = -4", "non-negative integers"),
    ("seed = 1.5", "non-negative integers"),
    (f"seed = {2**63}", "below 2**63"),
    ("width = 10.5", "integers >= 1"),
    ('width = "10"', "integers >= 1"),
    ("depth = 0", "integers >= 1"),
])
def test_sweep_files_use_the_same_rules(line, allowed):
    key = line.split("=")[0].strip()
    base = {"task": 'task = "relu"', "pruner": 'pruner = "random"', "protocol": 'protocol = "singleshot"',
            "density": "density = 0.5", "seed": "seed = 0", "depth": "depth = 2", "width": "width = 8"}
    base[key] = line
    with pytest.raises(SweepConfigError, match=rf"key '{key}': bad value") as info:
        parse_sweep("[sweep]\n" + "\n".join(base.values()), origin="s.toml")
    assert allowed in str(info.value)
