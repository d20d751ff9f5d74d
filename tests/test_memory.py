"""Memory-aware batching: the footprint estimate, free memory, and halving a group on out-of-memory errors."""
from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch

from plantseek import memory
from plantseek.store import ResultStore
from plantseek.sweep import load_sweep, run_sweep
from plantseek.sweep.executors import plan_batch_size, run_chunk
from sweep_fake import FakeSeeker, fake_metrics

GiB = 2**30

SWEEP = """
[sweep]
tasks = ["circle"]
pruners = ["random", "synflow", "magnitude"]
protocols = ["singleshot"]
densities = [0.1, 0.01, 0.001]
seeds = [0, 1]
depth = 3
width = 30
epochs = 1
"""


def fp(**kw):
    args = dict(input_dim=2, output_dim=4, depth=5, width=1000, density=1e-3, crossover=0.25)
    args.update(kw)
    return memory.run_footprint(**args).total


def test_footprint_is_monotone_and_sane():
    widths = [100, 1000, 4000, 10_000]
    assert all(fp(width=a) < fp(width=b) for a, b in zip(widths, widths[1:]))
    depths = [2, 3, 5, 8]
    assert all(fp(depth=a) < fp(depth=b) for a, b in zip(depths, depths[1:]))
    densities = [1e-5, 1e-3, 0.1, 0.2, 0.5, 1.0]
    assert all(fp(density=a) <= fp(density=b) for a, b in zip(densities, densities[1:]))
    assert fp(batch_size=32) < fp(batch_size=4096)
    assert fp(n_samples=1000) < fp(n_samples=100_000)
    assert fp(dtype="float32") < fp(dtype="float64")
    # float64 training (5 dense copies) outweighs the scoring phase; the sparse path does not
    assert fp(impl="sparse", density=0.01, dtype="float64") < fp(impl="dense", density=0.01, dtype="float64")
    assert fp(dense_baseline=False, dtype="float64") < fp(dense_baseline=True, dtype="float64")
    assert fp(protocol="singleshot", dtype="float64") < fp(protocol="multishot", dtype="float64")
    assert fp(protocol="singleshot") < fp(protocol="strong")
    # measured peak RSS on the CPU, ~0.4 GB of it the interpreter and PyTorch: width 4000, depth 5 at density
    # 1e-4: 2.13 GB; width 10 000, depth 4: 8.06 GB. The estimate is within 25% of what the run holds.
    for (width, depth), measured in {(4000, 5): 2.13e9, (10_000, 4): 8.06e9}.items():
        est = fp(width=width, depth=depth, density=1e-4, device="cpu") + 0.4e9
        assert 0.75 < est / measured < 1.25, (width, est / 1e9)
    parts = memory.run_footprint(input_dim=2, output_dim=4, depth=3, width=50).as_dict()
    assert parts["total"] == (max(parts["planting"], parts["host"] + max(parts["scoring"], parts["training"]))
                              + parts["activations"] + parts["data"])
    assert all(v > 0 for v in parts.values())
    assert memory.run_footprint(input_dim=2, output_dim=4, depth=3, width=50, device="cuda").planting == 0


def test_footprint_of_seek_kwargs():
    small = memory.footprint_of({"task": "circle", "depth": 3, "width": 30, "density": 0.1}, "cpu")
    wide = memory.footprint_of({"task": "circle", "depth": 3, "width": [300, 30], "density": "ticket"}, "cpu")
    assert 0 < small.total < wide.total


def test_group_size():
    per = 100 * 2**20
    assert memory.group_size(per, 0) == 1  # always at least one run
    assert memory.group_size(per, 100 * GiB, limit=64) == 64
    sizes = [memory.group_size(per, f * GiB) for f in (1, 2, 4, 8)]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    assert memory.group_size(per, 4 * GiB) == int((4 * GiB - memory.RESERVE_BYTES) * memory.SAFETY_FRACTION // per)


def test_free_memory_on_the_cpu_with_and_without_psutil(monkeypatch):
    free = memory.free_memory("cpu")
    total = memory._meminfo_available()
    assert 0 < free
    assert total is None or abs(free - total) < 2 * GiB  # the two readings of the same thing agree
    real_import = builtins.__import__

    def no_psutil(name, *a, **k):
        if name == "psutil":
            raise ImportError("no psutil")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_psutil)
    assert memory.free_memory("cpu") > 0


def test_is_out_of_memory():
    assert memory.is_out_of_memory(MemoryError())
    assert memory.is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert memory.is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                "can't allocate memory: you tried to allocate 80000000000 bytes"))
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom is not None:
        assert memory.is_out_of_memory(oom("CUDA out of memory"))
    assert not memory.is_out_of_memory(ValueError("out of memory"))
    assert not memory.is_out_of_memory(RuntimeError("shape mismatch"))
    assert not memory.is_out_of_memory(None)


class OOMSeeker(FakeSeeker):
    """Batches of more than `fits` runs run out of memory: raised (`mode="raise"`) or handed back per run."""

    def __init__(self, fits: int, mode: str = "raise", never: int | None = None, **kw):
        super().__init__(**kw)
        self.fits, self.mode, self.never = fits, mode, never
        self.batches: list[int] = []

    def batch(self, kwargs_list):
        self.batches.append(len(kwargs_list))
        if len(kwargs_list) > self.fits:
            if self.mode == "raise":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory (fake)") if hasattr(torch.cuda, "OutOfMemoryError") \
                    else MemoryError("fake")
            return [RuntimeError("CPU out of memory (fake)") for _ in kwargs_list]
        out = super().batch(kwargs_list)
        if self.never is not None:  # this seed never fits, even alone
            out = [MemoryError("fake: too wide") if kw["seed"] == self.never else r for kw, r in zip(kwargs_list, out)]
        return out


@pytest.mark.parametrize("mode", ["raise", "return"])
def test_fake_oom_halves_the_group_and_every_run_finishes(tmp_path: Path, mode):
    f = tmp_path / "s.toml"
    f.write_text(SWEEP)
    db = tmp_path / "r.db"
    seeker = OOMSeeker(fits=4, mode=mode)
    lines: list[str] = []
    written: list[int] = []
    rep = run_sweep(f, db, batch_fn=seeker.batch, single_fn=seeker, progress=False, log=lines.append)
    assert (rep.total, rep.ok, rep.failed) == (18, 18, 0)
    # 18 runs: 18 out of memory, 9 out of memory, then batches of 4 (the rest 2)
    assert seeker.batches[:2] == [18, 9] and set(seeker.batches[2:]) <= {4, 2} and sum(seeker.batches[2:]) == 18
    assert any("halving to 9" in m for m in lines) and any("halving to 4" in m for m in lines)
    assert any("18 runs, 18 per batch" in m for m in lines)  # the chosen size is in the log
    with ResultStore(db) as store:
        recs = store.records()
    sweep = load_sweep(f)
    assert {r["key"] for r in recs} == {run.key for run in sweep.runs}
    by_key = {r["key"]: r for r in recs}
    for run in sweep.runs:
        assert by_key[run.key]["metrics"] == pytest.approx(fake_metrics(run.seek_kwargs()))
        assert by_key[run.key]["batch_runs"] in (2, 4)
    del written


def test_a_run_that_never_fits_fails_alone_and_finished_batches_are_written_at_once():
    from plantseek.sweep import parse_sweep

    configs = [r.to_dict() for r in parse_sweep(SWEEP).runs]
    keys = [str(i) for i in range(len(configs))]
    seeker = OOMSeeker(fits=8, mode="return", never=1)
    emitted: list[list[str]] = []
    recs = run_chunk(configs, keys, batch_fn=seeker.batch, max_batch=None,
                     on_records=lambda rs: emitted.append([r.key for r in rs]), log=lambda m: None)
    by_key = {r.key: r for r in recs}
    assert len(recs) == 18
    for c, k in zip(configs, keys):
        assert by_key[k].status == ("failed" if c["seed"] == 1 else "ok")
    assert "MemoryError" in next(r.error for r in recs if r.status == "failed")
    # every record went out through on_records exactly once, batch by batch
    flat = [k for batch in emitted for k in batch]
    assert sorted(flat) == sorted(keys) and len(emitted) > 1


def test_batch_size_follows_free_memory_and_max_batch_overrides(monkeypatch):
    from plantseek.sweep import parse_sweep

    configs = [r.to_dict() for r in parse_sweep(SWEEP).runs]
    kws = [dict(c, device="cpu") for c in configs]
    per = max(memory.footprint_of(kw, "cpu").total for kw in kws)
    monkeypatch.setattr(memory, "free_memory", lambda dev: memory.RESERVE_BYTES + int(5.5 * per / memory.SAFETY_FRACTION))
    size, why = plan_batch_size(kws, "cpu")
    assert size == 5 and "MiB per run" in why
    seeker = OOMSeeker(fits=100)
    lines: list[str] = []
    run_chunk(configs, [str(i) for i in range(18)], device="cpu", batch_fn=seeker.batch, log=lines.append)
    assert seeker.batches == [5, 5, 5, 3] and "5 per batch" in lines[0]
    seeker.batches.clear()
    run_chunk(configs, [str(i) for i in range(18)], device="cpu", batch_fn=seeker.batch, max_batch=7,
              log=lines.append)
    assert seeker.batches == [7, 7, 4] and "--max-batch" in lines[-1]


# ---------------------------------------------------------------------------------------------------------
# refusing runs that cannot fit, before allocating (PLANTSEEK_SKIP_MEMORY_CHECK=1 overrides)

SMALL = dict(task="circle", depth=3, width=30, epochs=1, n_samples=200, dense_baseline=False, progress=False,
             device="cpu", pruner="magnitude", density=0.5)


@pytest.fixture
def checked(monkeypatch):
    monkeypatch.delenv(memory.SKIP_ENV, raising=False)


def _assert_names_the_numbers(msg: str, free: str | None = None):
    assert "needs about" in msg and ("TiB" in msg or "GiB" in msg) and "is free" in msg
    assert "width 200000" in msg and "parameters" in msg
    assert memory.SKIP_ENV + "=1" in msg
    if free is not None:
        assert free in msg


def test_plant_refuses_a_host_that_cannot_fit_before_drawing_it(checked):
    import time

    import plantseek

    t0 = time.perf_counter()
    with pytest.raises(memory.RunTooLargeError) as info:
        plantseek.plant("circle", width=200_000, depth=4)
    assert time.perf_counter() - t0 < 5  # nothing was allocated
    _assert_names_the_numbers(str(info.value))
    assert isinstance(info.value, ValueError) and not memory.is_out_of_memory(info.value)
    assert info.value.estimate > info.value.free > 0


def test_seek_refuses_a_run_that_cannot_fit_and_the_other_runs_of_a_batch_go_on(checked):
    import time

    import plantseek

    t0 = time.perf_counter()
    with pytest.raises(memory.RunTooLargeError) as info:
        plantseek.seek(task="circle", width=200_000, depth=4, device="cpu", progress=False)
    assert time.perf_counter() - t0 < 5
    _assert_names_the_numbers(str(info.value))
    assert "run circle depth=4 width=200000" in str(info.value)
    huge, small = plantseek.seek_batch([dict(SMALL, width=200_000), SMALL])
    assert isinstance(huge, memory.RunTooLargeError)
    assert not isinstance(small, BaseException) and "test_loss" in small.metrics  # a normal run is unaffected


def test_the_environment_variable_overrides_the_refusal(checked, monkeypatch):
    import plantseek

    monkeypatch.setattr(memory, "free_memory", lambda dev="cpu": 2**10)  # 1 KiB "free"
    with pytest.raises(memory.RunTooLargeError) as info:
        plantseek.seek(**SMALL)
    assert "1 KiB is free" in str(info.value) and "width 30" in str(info.value)
    with pytest.raises(memory.RunTooLargeError):
        plantseek.plant("circle", width=2000, depth=3)
    monkeypatch.setenv(memory.SKIP_ENV, "1")
    assert "test_loss" in plantseek.seek(**SMALL).metrics
    assert plantseek.plant("circle", width=2000, depth=3) is not None
    monkeypatch.setenv(memory.SKIP_ENV, "0")  # 0 means check
    with pytest.raises(memory.RunTooLargeError):
        plantseek.seek(**SMALL)


def test_the_cli_prints_the_refusal_on_one_line(checked, capsys):
    from plantseek.cli import main

    assert main(["plant", "--task", "circle", "--depth", "4", "--width", "200000"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cannot fit" in err and memory.SKIP_ENV in err


def test_a_sweep_with_runs_that_cannot_fit_is_refused_before_the_first_run(checked, monkeypatch, tmp_path: Path):
    f = tmp_path / "s.toml"
    f.write_text(SWEEP)
    db = tmp_path / "r.db"
    per = memory.footprint_of(dict(task="circle", depth=3, width=30, device="cpu"), "cpu").total
    monkeypatch.setattr(memory, "free_memory", lambda dev="cpu": per // 10)
    seeker = FakeSeeker()
    calls: list[int] = []

    def batch(kws):
        calls.append(len(kws))
        return seeker.batch(kws)

    with pytest.raises(memory.RunTooLargeError) as info:
        run_sweep(f, db, batch_fn=batch, single_fn=seeker, device="cpu", progress=False, log=lambda m: None)
    msg = str(info.value)
    assert "18 of 18 runs cannot fit" in msg and "run circle depth=3 width=30" in msg
    assert "needs about" in msg and "is free" in msg and memory.SKIP_ENV in msg
    assert calls == []
    with ResultStore(db) as store:
        assert store.records() == []
    monkeypatch.setenv(memory.SKIP_ENV, "1")
    rep = run_sweep(f, db, batch_fn=batch, single_fn=seeker, device="cpu", progress=False, log=lambda m: None)
    assert rep.ok == 18  # overridden: every run goes on (one at a time: the fake free memory fits none)


def test_a_conv_host_that_cannot_fit_is_refused_before_its_ticket_is_learned(monkeypatch):
    """The conv family counts its host's parameters on the meta device; nothing is trained or allocated."""
    import plantseek
    from plantseek.image import ticket
    from plantseek.memory import RunTooLargeError

    def never(*args, **kwargs):
        raise AssertionError("the ticket was learned before the memory check")

    monkeypatch.delenv("PLANTSEEK_SKIP_MEMORY_CHECK", raising=False)
    monkeypatch.setattr(ticket, "learn_ticket", never)
    with pytest.raises(RunTooLargeError, match=r"digits .*cannot fit: it needs about .* parameters; layout 'digits' "
                                               r"at width 200000\), but only .* is free"):
        plantseek.seek(task="digits", pruner="random", protocol="strong", density=0.5, width=200_000,
                       device="cpu", progress=False)
