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
