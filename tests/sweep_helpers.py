"""Helpers shared by the sweep executor and report tests."""
from pathlib import Path

from plantseek.store import ResultStore
from plantseek.sweep import run_sweep
from sweep_fake import FakeSeeker


def results_by_key(db) -> dict:
    """{run key: (status, metrics, config)} of every run in the results database `db`."""
    with ResultStore(db) as store:
        return {r["key"]: (r["status"], r["metrics"], r["config"]) for r in store.records()}


def fake_results_db(tmp: Path, sweep_toml: str, **fake) -> Path:
    """Run the sweep ``sweep_toml`` in the folder ``tmp`` with a `FakeSeeker(**fake)`; its results database."""
    (tmp / "s.toml").write_text(sweep_toml)
    f = FakeSeeker(**fake)
    run_sweep(tmp / "s.toml", tmp / "r.db", batch_fn=f.batch, single_fn=f, progress=False, log=lambda m: None)
    return tmp / "r.db"
