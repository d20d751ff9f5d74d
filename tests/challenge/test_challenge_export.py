"""`plantseek.challenge.export`: the planted networks and seek's own data, a manifest that says what to keep,
and nothing from which the ticket can be read off."""
import importlib
import json
import struct

import numpy as np
import pytest
import torch

import plantseek
from plantseek.challenge import ChallengeError, export, load_manifest, parse_seeds
from plantseek.challenge import files as cfiles
from plantseek.pruners.selection import kept_count

from challenge_helpers import SMALL, oracle_masks

seek_module = importlib.import_module("plantseek.seek")  # the module (plantseek.seek is the function)


def _files(manifest):
    return [manifest.directory / name for name in manifest["files"]]


def test_manifest_says_what_to_keep(singleshot_export):
    m = singleshot_export
    assert m["plantseek_version"] == plantseek.__version__
    assert (m["task"], m["depth"], m["width"], m["protocol"]) == ("circle", 3, 24, "singleshot")
    assert m["layer_sizes"] == [2, 24, 24, 4] and m["mask_rules"]["prunable"] == 772
    assert m["options"]["epochs"] == 1 and m["options"]["n_samples"] == 400
    assert [r.id for r in m.runs] == ["seed0_d0.2", "seed0_ticket", "seed1_d0.2", "seed1_ticket"]
    net = plantseek.plant("circle", width=24, depth=3, seed=0)
    for r in m.runs:
        assert isinstance(r.budget, float) and r.keep == kept_count(r.budget, 772)
    ticket = [r for r in m.runs if r.density == "ticket"][0]
    assert ticket.budget == pytest.approx(net.ticket_density) and ticket.keep == net.ticket.nnz
    assert [p["name"] for p in m["parameters"]][:3] == ["layers.0.weight", "layers.0.bias", "layers.1.weight"]
    for path in _files(m):  # every file is listed with its hash, the README included
        assert m["files"][path.relative_to(m.directory).as_posix()]["sha256"] == cfiles.sha256_file(path)
    assert "README.md" in m["files"] and "seed0_ticket" in (m.directory / "README.md").read_text()


def test_files_hold_the_planted_network_and_seeks_data(singleshot_export):
    m = singleshot_export
    for seed in (0, 1):
        params = cfiles.read_arrays(m.directory / f"seed{seed}/network.safetensors")
        module = plantseek.plant("circle", width=24, depth=3, seed=seed).to_module()
        linear = [l for l in module if isinstance(l, torch.nn.Linear)]
        for i, layer in enumerate(linear):
            assert np.array_equal(params[f"layers.{i}.weight"], layer.weight.detach().numpy())
            assert np.array_equal(params[f"layers.{i}.bias"], layer.bias.detach().numpy())
        assert params["layers.0.weight"].dtype == np.float64
        data = cfiles.read_arrays(m.directory / f"seed{seed}/data.safetensors")
        cfg = seek_module.normalize({"task": "circle", "depth": 3, "width": 24, "seed": seed, "pruner": "random",
                                     "n_samples": 400, "epochs": 1})
        native = seek_module._data(cfg)  # the samples seek itself trains and tests on
        assert np.array_equal(data["x_train"], native.x_train.numpy())
        assert np.array_equal(data["y_test"], native.y_test.numpy()) and data["y_test"].dtype == np.int64
        assert np.array_equal(data["x_prune"], native.x_train[:40].numpy()) and len(data["y_prune"]) == 40


def _leaks(array: np.ndarray, mask: np.ndarray) -> bool:
    """Whether `array` spells out `mask` (as its nonzeros, zeros or ones); a mask that keeps all or nothing of
    a layer says nothing."""
    if array.shape != mask.shape or mask.all() or not mask.any():
        return False
    return any(np.array_equal(p, mask) for p in (array != 0, array == 0, array == 1))


@pytest.mark.parametrize("fixture", ["singleshot_export", "strong_export"])
def test_nothing_reveals_the_ticket(fixture, request):
    m = request.getfixturevalue(fixture)
    texts = [(m.directory / n).read_text() for n in ("manifest.json", "README.md")]
    blobs = [p.read_bytes() for p in _files(m)] + [t.encode() for t in texts]
    for seed in sorted({r.seed for r in m.runs}):
        net = plantseek.plant("circle", width=24, depth=3, seed=seed)
        masks = oracle_masks(m, [r for r in m.runs if r.seed == seed][0])
        flat = np.concatenate([masks[n].ravel() for n, _ in m.parameters])
        for path in _files(m):
            if path.suffix in (".safetensors", ".npz"):
                for name, a in cfiles.read_arrays(path).items():
                    for mask in masks.values():
                        assert not _leaks(a, mask), f"{path.name}:{name} reveals a ticket mask"
                    assert a.size != flat.size or not np.array_equal(a.ravel() != 0, flat), f"{path.name}:{name}"
        scale = float(net.output_scale)
        for needle in (np.packbits(flat).tobytes(), flat.astype(np.uint8).tobytes(), struct.pack("<d", scale),
                       struct.pack("<f", scale)):
            assert not any(needle in b for b in blobs)
        for text in texts:
            assert repr(scale) not in text and f"{scale:.6g}" not in text and f"{scale:.4g}" not in text
    for text in texts:
        assert "output_scale" not in text and "hiding" not in text and "neuron" not in text
    assert not ({"output_scale", "hiding", "ticket_mask", "neuron_map"} & set(json.loads(texts[0])))


def test_npz_and_safetensors_hold_the_same_arrays(singleshot_export, strong_export):
    for name in ("network", "data"):
        a = singleshot_export["files"][f"seed0/{name}.safetensors"]["arrays_sha256"]
        b = strong_export["files"][f"seed0/{name}.npz"]["arrays_sha256"]
        assert a == b
    assert strong_export["file_format"] == "npz" and strong_export.runs[0].id == "seed0_ticket"


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,1,7-8") == [5, 1, 7, 8]
    for bad, msg in (("a", "ranges such as"), ("3-1", "empty"), ("1,1", "twice"), ("-1", "ranges such as")):
        with pytest.raises(ValueError, match=msg):
            parse_seeds(bad)


@pytest.mark.parametrize("kwargs, match", [
    (dict(protocol="multishot"), "multishot prunes again after every round"),
    (dict(protocol="dynamic"), "dynamic changes the mask while it trains"),
    (dict(protocol="gradual"), "gradual changes the mask while it trains"),
    (dict(task="digits", depth=3), "image task"),
    (dict(options={"seed": 3}), "set by the export itself"),
    (dict(options={"no_such": 1}), "unknown option"),
    (dict(options={"epochs": -1}), "epochs must be an integer >= 0"),
    (dict(densities=[1e-9]), "smallest density that keeps one"),
    (dict(densities=[0.1, 0.1]), "twice"),
    (dict(densities=[2.0]), r"density must lie in \(0, 1\]"),
    (dict(fmt="pt"), "unknown format"),
    (dict(width=3), "at least"),
])
def test_bad_exports_are_refused(tmp_path, kwargs, match):
    args = {**SMALL, "seeds": [0, 1], **kwargs}
    with pytest.raises(ValueError, match=match):
        export(tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()  # whole or absent


def test_a_failed_export_leaves_the_empty_directory_empty(tmp_path, monkeypatch):
    real, calls = cfiles.write_arrays, []

    def failing(path, arrays):  # the disk fills up on the third file
        calls.append(path)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        real(path, arrays)

    monkeypatch.setattr(cfiles, "write_arrays", failing)  # the module export writes through
    (tmp_path / "out").mkdir()
    with pytest.raises(OSError, match="No space"):
        export(tmp_path / "out", seeds=[0, 1], **SMALL)
    assert (tmp_path / "out").is_dir() and not any((tmp_path / "out").iterdir())


def test_export_refuses_a_directory_that_is_not_empty(tmp_path):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(ChallengeError, match="not empty"):
        export(tmp_path, seeds=[0], **SMALL)
    with pytest.raises(ChallengeError, match="no manifest.json"):
        load_manifest(tmp_path)


@pytest.mark.parametrize("fixture", ["singleshot_export", "strong_export"])
def test_the_readme_example_runs_as_written(fixture, request, tmp_path):
    """The README's NumPy-only script, run from a copy of the export, writes a submission that is accepted."""
    import shutil
    import subprocess
    import sys

    from plantseek.challenge import submission as csub

    m = request.getfixturevalue(fixture)
    copy = tmp_path / "export"
    shutil.copytree(m.directory, copy)
    text = (copy / "README.md").read_text()
    script = text.split("```python\n", 1)[1].split("```", 1)[0]
    proc = subprocess.run([sys.executable, "-c", script], cwd=copy, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    masks = csub.read(copy / "submission", load_manifest(copy))
    assert set(masks) == {r.id for r in m.runs}
