"""Stored masks: the packed form (round trips, bit order, bad bytes), the files (`plantseek masks`, `load_masks`),
a sweep's rows holding the masks its runs found (MLP and conv), re-scoring from a stored mask, and the sizes
that bench/RESULTS.md reports."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import plantseek
from plantseek import mask_io
from plantseek.cli import main
from plantseek.store import ResultStore, StoreError
from plantseek.sweep import load_sweep, parse_sweep, run_sweep
from plantseek.sweep.executors import run_chunk

BENCH = Path(__file__).resolve().parents[1] / "bench"

SWEEP = textwrap.dedent("""
    [sweep]
    tasks = ["relu", "circle"]
    pruners = ["random", "magnitude", "ticket"]
    protocols = ["singleshot", "strong"]
    densities = [0.5, "ticket"]
    seeds = [0]
    depth = 3
    width = 24
    epochs = 1
    n_samples = 300
    dtype = "float64"
""")


def _equal(a, b) -> bool:
    """Two masks (torch or NumPy pairs) are the same: same layers, shapes and bits."""
    return len(a) == len(b) and all(
        tuple(np.shape(x)) == tuple(np.shape(y)) and bool((np.asarray(x) == np.asarray(y)).all())
        for pa, pb in zip(a, b) for x, y in zip((_np(pa[0]), _np(pa[1])), (_np(pb[0]), _np(pb[1]))))


def _np(t):
    return t.detach().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)


# ------------------------------------------------------------------------------------------------ packed form

_dims = st.integers(0, 9)
_layer = st.tuples(st.lists(_dims, min_size=1, max_size=4), _dims, st.sampled_from(["random", "ones", "zeros"]))


@settings(max_examples=150, deadline=None)
@given(st.lists(_layer, max_size=5), st.integers(0, 2**32 - 1))
def test_pack_unpack_round_trip_over_random_shapes(layers, seed):
    rng = np.random.default_rng(seed)
    masks = []
    for wshape, out, fill in layers:
        make = {"random": lambda s: rng.random(s) < rng.random(), "ones": lambda s: np.ones(s, bool),
                "zeros": lambda s: np.zeros(s, bool)}[fill]
        masks.append((torch.from_numpy(make(tuple(wshape))), torch.from_numpy(make((out,)))))
    blob = mask_io.pack(masks)
    assert blob[:4] == mask_io.MAGIC
    back = mask_io.unpack(blob)
    assert _equal(back, masks) and all(w.dtype == bool and b.dtype == bool for w, b in back)
    assert mask_io.shapes(blob) == [(tuple(w.shape), tuple(b.shape)) for w, b in masks]
    assert _equal(mask_io.unpack(mask_io.pack(back)), masks)  # NumPy masks pack the same way


def test_empty_all_ones_and_conv_masks_round_trip():
    for masks in ([], [(torch.zeros(0, 3, dtype=torch.bool), torch.zeros(0, dtype=torch.bool))],
                  [(torch.ones(7, 5, dtype=torch.bool), torch.ones(7, dtype=torch.bool))],
                  [(torch.rand(8, 3, 3, 3) < 0.3, torch.rand(8) < 0.5),
                   (torch.rand(10, 72) < 0.1, torch.ones(10, dtype=torch.bool))]):
        assert _equal(mask_io.unpack(mask_io.pack(masks)), masks)
    big = [(torch.ones(1000, 1000, dtype=torch.bool), torch.ones(1000, dtype=torch.bool))]
    assert len(mask_io.pack(big)) < 1000  # all ones compresses to almost nothing


def test_bits_are_in_the_kernels_order():
    """Bit j of a tensor is bit j % 8 of its byte j // 8, as in plantseek.kernels.masks.pack (less its word padding)."""
    import zlib

    from plantseek.kernels import masks as kernel

    mask = [(torch.rand(13, 5) < 0.4, torch.rand(13) < 0.4), (torch.rand(3, 13) < 0.4, torch.rand(3) < 0.4)]
    words, offsets = kernel.pack([mask])
    as_bytes = words[0].view(np.uint8)
    blob = mask_io.pack(mask)
    _, at = mask_io._header(blob)
    body, pos = zlib.decompress(blob[at:]), 0
    for k, t in enumerate(t for pair in mask for t in pair):
        n = (t.numel() + 7) // 8
        assert body[pos:pos + n] == as_bytes[int(offsets[k]) * 8:int(offsets[k]) * 8 + n].tobytes()
        pos += n


def test_bad_masks_and_bad_bytes_are_clear_errors():
    with pytest.raises(ValueError, match=r"masks\[0\]\[0\] must be a boolean mask.*values other than 0 and 1"):
        mask_io.pack([(torch.full((2, 2), 0.5), torch.ones(2, dtype=torch.bool))])
    with pytest.raises(ValueError, match="pair"):
        mask_io.pack([torch.ones(2, dtype=torch.bool)])
    ok = mask_io.pack([(np.array([[1, 0]], dtype=np.uint8), np.array([1]))])  # 0/1 integers are masks too
    assert mask_io.unpack(ok)[0][0].tolist() == [[True, False]]
    with pytest.raises(ValueError, match="not a plantseek stored mask"):
        mask_io.unpack(b"hello world")
    with pytest.raises(ValueError, match="newer"):
        mask_io.unpack(ok[:4] + bytes([9]) + ok[5:])
    with pytest.raises(ValueError, match="truncated"):
        mask_io.unpack(ok[:12])
    with pytest.raises(ValueError, match="corrupt"):
        mask_io.unpack(ok[:-3])


# ------------------------------------------------------------------------------------------------ files

@pytest.mark.parametrize("suffix", [".safetensors", ".npz"])
def test_files_round_trip_with_parameter_names(tmp_path, suffix):
    masks = [(torch.rand(6, 2) < 0.5, torch.rand(6) < 0.5),
             (torch.rand(4, 6, 3, 3) < 0.2, torch.zeros(4, dtype=torch.bool))]
    masks += [(torch.rand(2, 4) < 0.5, torch.ones(2, dtype=torch.bool))] * 10  # layers.10 sorts after layers.9
    path = mask_io.write_masks(tmp_path / f"m{suffix}", masks, metadata={"run": "abc", "config": {"task": "circle"}})
    arrays, meta = mask_io.read_named(path)
    assert set(arrays) == set(mask_io.parameter_names(len(masks)))
    assert all(a.dtype == bool for a in arrays.values())
    assert meta["run"] == "abc" and json.loads(meta["config"]) == {"task": "circle"}
    back = plantseek.load_masks(path)
    assert _equal(back, masks) and all(w.dtype == torch.bool and b.dtype == torch.bool for w, b in back)


def test_load_masks_takes_a_dict_and_state_dict_names():
    net = plantseek.plant("circle", width=20, depth=4, seed=0)
    # a module's state-dict names (Linear layers between ReLUs: 0, 2, 4, 6), 0/1 floats
    state = {name: net.ticket_mask[i // 2][i % 2].float()
             for i, name in enumerate(net.to_module().state_dict())}
    assert _equal(plantseek.load_masks(state), net.ticket_mask)
    assert _equal(plantseek.load_masks(mask_io.named(net.ticket_mask)), net.ticket_mask)
    assert _equal(plantseek.load_masks({f"{k}_mask": v for k, v in state.items()}), net.ticket_mask)  # prune buffers
    with pytest.raises(ValueError, match="layer 0 has no bias mask"):
        plantseek.load_masks({"layers.0.weight": np.ones((2, 2), bool)})
    with pytest.raises(ValueError, match="not named like"):
        plantseek.load_masks({"weight": np.ones((2, 2), bool)})
    with pytest.raises(ValueError, match="mix the prefixes"):
        plantseek.load_masks({"a.0.weight": np.ones(1, bool), "a.0.bias": np.ones(1, bool),
                              "b.1.weight": np.ones(1, bool), "b.1.bias": np.ones(1, bool)})
    with pytest.raises(ValueError, match="boolean mask"):
        plantseek.load_masks({"layers.0.weight": np.full((1, 1), np.nan), "layers.0.bias": np.ones(1, bool)})


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.safetensors or \.npz"):
        mask_io.write_masks(tmp_path / "m.pt", [])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        plantseek.load_masks(tmp_path / "none.npz")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        plantseek.load_masks(tmp_path / "bad.safetensors")
    (tmp_path / "bad.npz").write_bytes(b"nonsense")
    with pytest.raises(ValueError, match="not a readable npz file"):
        plantseek.load_masks(tmp_path / "bad.npz")


# ------------------------------------------------------------------------------------------------ sweeps

@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A tiny sweep with the real seeker: (sweep file, results database)."""
    tmp = tmp_path_factory.mktemp("masks")
    (tmp / "s.toml").write_text(SWEEP)
    rep = run_sweep(tmp / "s.toml", tmp / "r.db", progress=False, log=lambda m: None)
    assert rep.ok == 20
    return tmp / "s.toml", tmp / "r.db"


def test_sweep_rows_hold_the_masks_seek_batch_finds(swept):
    f, db = swept
    runs = load_sweep(f).runs
    results = plantseek.seek_batch([r.seek_kwargs() for r in runs])
    with ResultStore(db, readonly=True) as store:
        for run, res in zip(runs, results):
            blob = store.masks(run.key)
            assert blob is not None and _equal(mask_io.unpack(blob), res.masks), run.key
    recs = ResultStore(db, readonly=True).records()
    assert all(r["mask_bytes"] and r["mask_bytes"] < 400 for r in recs)


def test_recall_recomputed_from_a_stored_mask_equals_the_stored_metric(swept):
    from plantseek.metrics import recovery

    _, db = swept
    with ResultStore(db, readonly=True) as store:
        recs = store.records()
        for r in recs:
            c = r["config"]
            ticket = plantseek.plant(c["task"], width=c["width"], depth=c["depth"], seed=c["seed"]).ticket_mask
            found = plantseek.load_masks(mask_io.named(store.masks(r["key"])))
            scores = recovery(found, ticket)
            assert scores["recall"] == r["metrics"]["recall"], r["key"]
            assert scores["precision"] == pytest.approx(r["metrics"]["precision"], abs=1e-12)
    assert {r["metrics"]["recall"] for r in recs if r["config"]["pruner"] == "ticket"} == {1.0}


def test_plantseek_masks_lists_and_writes_files_that_load_back(swept, tmp_path, capsys):
    _, db = swept
    with ResultStore(db, readonly=True) as store:
        rec = [r for r in store.records() if r["config"]["task"] == "circle"][2]
        stored = mask_io.unpack(store.masks(rec["key"]))
    assert main(["masks", str(db)]) == 0
    out = capsys.readouterr().out
    assert "20 of 20 runs have a stored mask" in out and rec["key"][:12] in out
    for suffix in (".safetensors", ".npz"):
        path = tmp_path / f"m{suffix}"
        assert main(["masks", str(db), "--run", rec["key"][:10], "--out", str(path)]) == 0
        assert f"wrote the masks of run {rec['key']}" in capsys.readouterr().out
        assert _equal(plantseek.load_masks(path), stored)
        names, meta = mask_io.read_named(path)
        assert list(sorted(names)) == sorted(mask_io.parameter_names(len(stored))) and meta["run"] == rec["key"]
    assert main(["masks", str(db), "--run", rec["key"]]) == 0  # without --out: its layers
    assert f"layers.0.weight [24, 2] kept {int(stored[0][0].sum())}; layers.0.bias [24]" in capsys.readouterr().out
    for argv, msg in ((["--run", "zzz"], "no run in"), (["--run", ""], "must not be empty"),
                      (["--out", str(tmp_path / "x.npz")], "--out needs --run"),
                      (["--run", rec["key"], "--out", str(tmp_path / "x.pt")], "must end in")):
        assert main(["masks", str(db), *argv]) == 2
        assert msg in capsys.readouterr().err
    keys = [r["key"] for r in ResultStore(db, readonly=True).records()]
    shared = next(k[:1] for k in keys if sum(o.startswith(k[:1]) for o in keys) > 1)
    assert main(["masks", str(db), "--run", shared]) == 2
    assert "give more of the key" in capsys.readouterr().err


def test_failed_runs_have_no_mask_and_old_databases_list_none(tmp_path, capsys):
    """A failed run is stored without a mask; a result without masks (a fake, an old seeker) stores NULL."""

    class Result:
        def __init__(self, kw, masks):
            self.metrics, self.masks = {"recall": 1.0}, masks

    mask = [(torch.ones(3, 1, dtype=torch.bool), torch.zeros(3, dtype=torch.bool))]

    def single(**kw):
        if kw["seed"] == 1:
            raise RuntimeError("boom")
        return Result(kw, mask if kw["seed"] == 0 else None)

    first = parse_sweep(SWEEP).runs[0].to_dict()
    configs = [{**first, "seed": s} for s in (0, 1, 2)]
    recs = run_chunk(configs, ["a", "b", "c"], single_fn=single, batch_fn=lambda kws: [single(**kw) for kw in kws])
    assert [r.status for r in recs] == ["ok", "failed", "ok"]
    assert _equal(mask_io.unpack(recs[0].masks), mask) and recs[1].masks is None and recs[2].masks is None
    db = tmp_path / "r.db"
    with ResultStore(db) as store:
        store.put(recs)
        assert store.masks("a") is not None and store.masks("b") is None and store.masks("c") is None
        with pytest.raises(StoreError, match="no run with key"):
            store.masks("zz")
    assert main(["masks", str(db)]) == 0
    assert "1 of 3 runs have a stored mask (the others failed" in capsys.readouterr().out
    assert main(["masks", str(db), "--run", "b", "--out", str(tmp_path / "b.npz")]) == 2
    assert "run b has no stored mask (it failed)" in capsys.readouterr().err
    assert main(["masks", str(db), "--run", "c", "--out", str(tmp_path / "c.npz")]) == 2
    assert "run c has no stored mask (it was stored before masks were kept)" in capsys.readouterr().err


def test_image_family_masks_are_stored_through_the_executor(tmp_path):
    """Conv masks (4-D weight masks) go through the same record building as MLP masks."""
    text = textwrap.dedent("""
        [sweep]
        tasks = ["digits"]
        width = 32
        seeds = [0]
        n_train = 80
        n_test = 40
        ticket_pruner = "magnitude"
        ticket_target_density = 0.2
        ticket_train_epochs = 1
        ticket_finetune_epochs = 1
        epochs = 1
        protocols = ["strong"]
        pruners = ["magnitude", "ticket"]
        densities = [0.3, "ticket"]
    """)
    runs = parse_sweep(text).runs
    recs = run_chunk([r.to_dict() for r in runs], [r.key for r in runs], device="cpu", progress=False)
    assert all(r.status == "ok" for r in recs), [r.error for r in recs]
    for run, rec in zip(runs, recs):
        found = mask_io.unpack(rec.masks)
        assert found[0][0].ndim == 4 and len(found) == 5
        again = plantseek.seek(**run.seek_kwargs("cpu"), progress=False).masks
        assert _equal(found, again)
    db = tmp_path / "r.db"
    with ResultStore(db) as store:
        store.put(recs)
    assert main(["masks", str(db), "--run", recs[0].key, "--out", str(tmp_path / "c.safetensors")]) == 0
    assert _equal(plantseek.load_masks(tmp_path / "c.safetensors"), mask_io.unpack(recs[0].masks))


# ------------------------------------------------------------------------------------------------ bench

def test_the_stored_sizes_in_bench_results_are_what_packing_gives():
    """bench/RESULTS.md's "Stored masks" table is bench/bench_masks.py's output: the sizes recomputed here (zlib
    builds may differ by a few bytes: within 3%; the other columns exactly)."""
    sys.path.insert(0, str(BENCH))
    import bench_masks

    text = (BENCH / "RESULTS.md").read_text()
    section = text[text.index(f"## {bench_masks.HEADING}"):]
    rows = bench_masks.rows()
    ours = bench_masks.table(rows).splitlines()
    for line, row in zip(ours[2:], rows):
        prefix = f"| {row['width']} | {row['mask']} | {row['params']} | {row['kept']} | "
        committed = next(s for s in section.splitlines() if s.startswith(prefix))
        stored = int(committed[len(prefix):].split("|")[0])
        assert stored == pytest.approx(row["stored"], rel=0.03), line
        cells, mine = committed.split("|"), line.split("|")
        assert cells[7] == mine[7] and cells[9] == mine[9]  # bit-packed size and entropy bound
    assert row["width"] == 1000 and len(rows) == 2 * len(bench_masks.MASKS)
