"""Foundation CLI: tasks, plant, show, info, and --help everywhere."""
import json
import subprocess
import sys

import pytest

from plantseek.cli import build_parser, main


def test_tasks_table(capsys):
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    for name in ("relu", "circle", "helix"):
        assert name in out
    assert "ticket_nnz" in out


def test_plant_and_show(tmp_path, capsys):
    out_pt, out_json = tmp_path / "net.pt", tmp_path / "net.json"
    assert main(["plant", "--task", "circle", "--depth", "5", "--width", "100", "--seed", "0",
                 "--out", str(out_pt), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "ticket_nnz" in printed and "hiding_median_percentile" in printed
    info = json.loads(out_json.read_text())
    assert info["ticket_nnz"] == 177 and info["depth"] == 5
    assert info["planted_test_loss"] == pytest.approx(info["ticket_test_loss"], rel=1e-9)
    assert main(["show", str(out_pt)]) == 0
    assert "ticket_density" in capsys.readouterr().out


def test_uneven_width_and_errors(capsys):
    assert main(["plant", "--task", "relu", "--depth", "3", "--width", "5,7"]) == 0
    assert main(["plant", "--task", "circle", "--depth", "2", "--width", "3"]) == 2
    assert "at least 18" in capsys.readouterr().err
    assert main(["show", "/nonexistent/net.pt"]) == 2


def test_help_everywhere():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name in sub.choices:
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0


def test_console_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "plantseek", "info"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "plantseek" in res.stdout


def _info(monkeypatch, capsys, devices: list[str]) -> str:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(devices))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: len(devices))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: devices[i])
    assert main(["info"]) == 0
    return capsys.readouterr().out


def test_info_tells_the_cuda_module_from_a_cuda_device(monkeypatch, capsys):
    from plantseek import native

    out = _info(monkeypatch, capsys, [])
    built = "yes" if native.cuda_available() else "no"
    assert f"CUDA module built: {built}" in out and "CUDA device: none" in out
    assert "native cuda: True" not in out
    out = _info(monkeypatch, capsys, ["NVIDIA H200", "NVIDIA H200"])
    assert "CUDA device: 2 (cuda:0 NVIDIA H200, cuda:1 NVIDIA H200)" in out
    assert "available: cpu, cuda:0, cuda:1" in out


def test_info_says_when_the_cuda_module_is_missing_or_broken(monkeypatch, capsys):
    from plantseek import native

    native._load()
    monkeypatch.setattr(native, "_cuda", None)
    monkeypatch.setattr(native, "_cuda_built", False)
    assert "CUDA module built: no" in _info(monkeypatch, capsys, [])
    monkeypatch.setattr(native, "_cuda_built", True)
    monkeypatch.setattr(native, "_cuda_error", "libcudart.so.12: cannot open shared object file")
    out = _info(monkeypatch, capsys, [])
    assert "CUDA module built: yes, but it did not load (libcudart.so.12" in out


# ------------------------------------------------------------------------------------------------ plantseek seek

# a non-default command-line value for every option of seek.DEFAULTS that is not a flag, and what seek receives
SEEK_VALUES = {
    "task": ("relu", "relu"), "depth": ("3", 3), "width": ("5,7", [5, 7]), "pruner": ("magnitude", "magnitude"),
    "density": ("ticket", "ticket"), "protocol": ("multishot", "multishot"), "epochs": ("2", 2), "seed": ("7", 7),
    "device": ("cpu", "cpu"), "dtype": ("float64", "float64"), "lr": ("0.01", 0.01), "batch_size": ("16", 16),
    "optimizer": ("sgd", "sgd"), "rounds": ("3", 3), "round_epochs": ("2", 2), "scope": ("layer", "layer"),
    "update_every": ("50", 50), "update_begin": ("0.1", 0.1), "update_end": ("0.5", 0.5),
    "drop_fraction": ("0.2", 0.2), "grow": ("random", "random"), "gradual_initial": ("0.5", 0.5),
    "n_samples": ("500", 500), "noise": ("0.05", 0.05), "pruning_samples": ("8", 8), "init": ("he", "he"),
    "impl": ("sparse", "sparse"), "rescale": ("none", "none"),
    # the image tasks' options (plantseek.spec.TicketSpec, DataSpec.n_train/n_test, ExecSpec.data_dir)
    "n_train": ("100", 100), "n_test": ("50", 50), "layout": ("small", "small"), "ticket_width": ("0.5", 0.5),
    "ticket_pruner": ("magnitude", "magnitude"), "ticket_target_density": ("0.1", 0.1),
    "ticket_scope": ("layer", "layer"), "ticket_train_epochs": ("3", 3), "ticket_finetune_epochs": ("2", 2),
    "ticket_lr": ("0.01", 0.01), "ticket_batch_size": ("16", 16), "data_dir": ("/data/x", "/data/x"),
}
SEEK_FLAGS = {"prune_bias": "--no-prune-bias", "dense_baseline": "--no-dense", "progress": "--no-progress"}


@pytest.fixture
def seek_calls(monkeypatch):
    """Replace `plantseek.seek.seek` by a recorder of the keyword arguments the CLI passes it."""
    import importlib

    from plantseek.seek import DEFAULTS, SeekResult

    mod = importlib.import_module("plantseek.seek")
    calls = []

    def fake(**kwargs):
        calls.append(kwargs)
        return SeekResult(metrics={}, masks=None, config={**DEFAULTS, **kwargs})

    monkeypatch.setattr(mod, "seek", fake)
    return calls


def test_option_docs_cover_exactly_the_seek_options():
    from plantseek import spec
    from plantseek.seek import DEFAULTS, OPTION_DOCS

    OPTION_CHOICES = {k: c for k in DEFAULTS if (c := spec.choices(k)) is not None}

    assert set(OPTION_DOCS) == set(DEFAULTS)
    assert all(isinstance(d, str) and d for d in OPTION_DOCS.values())
    assert set(OPTION_CHOICES) <= set(DEFAULTS)


def test_every_seek_option_reaches_seek(seek_calls):
    from plantseek.seek import BOOLEAN_KEYS, DEFAULTS, option_choices

    assert set(SEEK_VALUES) == set(DEFAULTS) - set(BOOLEAN_KEYS) - {"pruner_options", "ticket_pruner_options"}
    assert set(SEEK_FLAGS) == set(BOOLEAN_KEYS)
    argv = ["seek"]
    for key, (text, _) in SEEK_VALUES.items():
        assert (choices := option_choices(key)) is None or text in choices, key
        argv += ["--" + key.replace("_", "-"), text]
    argv += list(SEEK_FLAGS.values()) + ["--pruner-option", "iterations=2", "--pruner-option", "mode=x",
                                         "--ticket-pruner-option", "iterations=5"]
    assert main(argv) == 0
    (got,) = seek_calls
    assert set(got) == set(DEFAULTS)
    for key, (_, value) in SEEK_VALUES.items():
        assert got[key] == value and got[key] != DEFAULTS[key], key
    assert all(got[key] is False for key in SEEK_FLAGS)
    assert got["pruner_options"] == {"iterations": 2, "mode": "x"}
    assert got["ticket_pruner_options"] == {"iterations": 5}


def test_seek_defaults_reach_seek_unchanged(seek_calls):
    from plantseek.seek import DEFAULTS

    assert main(["seek"]) == 0
    assert seek_calls == [DEFAULTS]


def test_seek_optimizer_and_init_from_the_cli(seek_calls, capsys):
    from plantseek import host_init

    assert main(["seek", "--optimizer", "sgd", "--init", "kaiming-uniform"]) == 0
    assert seek_calls[0]["optimizer"] == "sgd" and seek_calls[0]["init"] == "kaiming-uniform"
    with pytest.raises(SystemExit) as exc:
        main(["seek", "--optimizer", "rmsprop"])
    assert exc.value.code == 2 and "adam" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["seek", "--init", "no-such-init"])
    err = capsys.readouterr().err
    assert all(name in err for name in host_init.available())


def test_seek_optimizer_and_init_run(tmp_path):
    out = tmp_path / "run.json"
    assert main(["seek", "--task", "relu", "--depth", "2", "--width", "8", "--epochs", "1", "--n-samples", "200",
                 "--optimizer", "sgd", "--init", "he", "--no-dense", "--no-progress", "--device", "cpu",
                 "--json", str(out)]) == 0
    config = json.loads(out.read_text())["config"]
    assert config["optimizer"] == "sgd" and config["init"] == "he"


def test_seek_help_lists_every_option_with_its_doc_and_default(monkeypatch, capsys):
    from plantseek.seek import DEFAULTS, OPTION_DOCS

    monkeypatch.setenv("COLUMNS", "1000")  # one line per option
    with pytest.raises(SystemExit):
        main(["seek", "--help"])
    entries: list[str] = []  # one per option: its invocation and the help argparse may put on the next line
    for line in capsys.readouterr().out.split("options:", 1)[1].splitlines():
        if line.strip().startswith("-"):
            entries.append(line.strip())
        elif entries and line.strip():
            entries[-1] += " " + line.strip()
    lines = {e.split()[0]: e for e in entries}
    for key, default in DEFAULTS.items():
        options = isinstance(default, dict)  # pruner_options, ticket_pruner_options: a repeatable --*-option
        flag = "--" + key.replace("_", "-")[:-1] if options else SEEK_FLAGS.get(key, "--" + key.replace("_", "-"))
        assert OPTION_DOCS[key] in lines[flag], key
        if not options:
            shown = "on" if default is True else "unset" if default is None else default
            assert f"(default: {shown})" in lines[flag], (key, lines[flag])


def test_a_curve_prints_its_ends_and_length():
    from plantseek.cli.seek import _fmt

    assert _fmt([0.0, 0.25, 0.5]) == "[0, 0.25, 0.5] (3 points)"
    long = _fmt([i / 10 for i in range(20)])
    assert long.startswith("[0, 0.1, 0.2, 0.3, ...,") and long.endswith("1.9] (20 points)")
