"""Helpers shared by the sweep executor tests."""
from plantseek.store import ResultStore


def results_by_key(db) -> dict:
    """{run key: (status, metrics, config)} of every run in the results database `db`."""
    with ResultStore(db) as store:
        return {r["key"]: (r["status"], r["metrics"], r["config"]) for r in store.records()}
