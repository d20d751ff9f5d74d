"""`score`: submitted masks run through the ordinary path and written into a results database.

The hidden ticket is rebuilt from each run's seed (planted again, and checked against the fingerprint of the
exported network and data, so a plantseek that plants differently refuses rather than scores against another
network); every run's mask is handed to `plantseek.seek_batch` by a pruner object that returns it
(`SubmittedMask`), so the protocol's own training (singleshot) or fitted read-out (strong) and `measure` produce
the same metrics as a native run. The rows go through the sweep's `run_chunk` into the store with the
submission's name as ``pruner``, and keys ``challenge:<run key>`` that no native run has. The ticket oracle of the
same runs (the reference every verdict compares with) is added when the database lacks it.

Every run of the submission is checked before anything runs (`plantseek.challenge.submission`): a bad
submission writes nothing, and a name already scored on these runs is refused unless ``replace``.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import files as _files
from . import manifest as _manifest
from . import submission as _submission
from .manifest import ChallengeError, Manifest

KEY_PREFIX = "challenge:"
ORACLE = "ticket"


class SubmittedMask:
    """A pruner that returns one submitted mask (the protocol checks its shapes, device and exact count)."""

    needs_data = False
    exact = True

    def __init__(self, name: str, mask) -> None:
        self.name = name
        self.options: dict[str, Any] = {}
        self.mask = mask

    def prune(self, net, data, density, *, scope="global", prune_bias=True, generator=None, mask=None):
        if mask is not None:
            raise ValueError(f"submission {self.name!r} holds one mask chosen at initialisation; a protocol that "
                             f"prunes again within a previous mask (multishot) cannot score it")
        return [(wm.to(net.device), bm.to(net.device)) for wm, bm in self.mask]

    def __repr__(self) -> str:
        return f"SubmittedMask({self.name!r})"


@dataclass
class ScoreReport:
    """What `score` wrote: one entry per run of the export (id, key, status, metrics, error) and the number of
    reference (ticket oracle) runs added."""

    name: str
    db: str
    runs: list[dict] = field(default_factory=list)
    reference_runs: int = 0

    @property
    def ok(self) -> int:
        return sum(r["status"] == "ok" for r in self.runs)


def _torch_mask(masks: dict, depth: int):
    import torch

    names = _files.parameter_names(depth)
    return [(torch.from_numpy(masks[names[2 * i]].copy()), torch.from_numpy(masks[names[2 * i + 1]].copy()))
            for i in range(depth)]


def _checked_spec(manifest: Manifest):
    """The export's options as a checked `RunSpec` under this plantseek (an option it no longer knows is refused)."""
    from .. import spec

    try:
        return spec.RunSpec.from_flat({**manifest.seek_options(), "density": 1.0}).checked()
    except (TypeError, ValueError) as exc:
        raise ChallengeError(f"{str(manifest.path)!r}: its options cannot run under this plantseek: {exc}") from None


def verify_rebuild(manifest: Manifest, run_spec) -> None:
    """ChallengeError unless planting each seed again gives the exported network and data (by their arrays'
    SHA-256): the ticket the masks are scored against is the one hidden in the files the participant saw."""
    from .. import __version__
    from .export import data_arrays, network_arrays, rebuild

    files = manifest["files"]
    seen: set[int] = set()
    for run in manifest.runs:
        if run.seed in seen:
            continue
        seen.add(run.seed)
        net, data = rebuild(run_spec, run.seed)
        for what, name, arrays in (("network", run.network, network_arrays(net)),
                                   ("data", run.data, data_arrays(data, run_spec.data.pruning_samples))):
            want = (files.get(name) or {}).get("arrays_sha256")
            if want != _files.arrays_sha256(arrays):
                raise ChallengeError(
                    f"run {run.id}: planting seed {run.seed} again does not give the exported {what} ({name}: its "
                    f"arrays' SHA-256 differs); the export was written by plantseek "
                    f"{manifest.raw.get('plantseek_version')}, which plants or draws differently from this one "
                    f"({__version__}): score it with that version")


def _config(manifest: Manifest, pruner: str, seed: int, density) -> dict:
    """A run's configuration as a sweep stores it: the grid keys and the options that differ from their defaults."""
    from .. import spec
    from ..sweep.config import RunConfig

    defaults = spec.defaults()
    opts = {k: v for k, v in manifest["options"].items() if v != defaults.get(k)}
    flat = {"task": manifest["task"], "pruner": pruner, "protocol": manifest["protocol"], "density": density,
            "seed": seed, "depth": manifest["depth"], "width": manifest["width"], **opts}
    return RunConfig.from_dict(flat).to_dict()


def challenge_key(config: dict) -> str:
    """The key of a submitted run: ``challenge:`` + the spec's key of its configuration (never a native key)."""
    from ..spec import run_key

    return KEY_PREFIX + run_key(config)


def _reference_configs(manifest: Manifest, done: set[str]) -> list[dict]:
    """The ticket oracle's runs (density "ticket") of the export's seeds that the database has not finished."""
    from ..sweep.config import RunConfig

    configs = [_config(manifest, ORACLE, seed, "ticket") for seed in dict.fromkeys(r.seed for r in manifest.runs)]
    return [c for c in configs if RunConfig.from_dict(c).key not in done]


def _batch_fn(name: str, masks: dict, progress: bool) -> Callable[[list[dict]], list]:
    """`seek_batch` with the submission's runs handed their masks (`SubmittedMask`); other runs are native."""
    def batch(kwargs_list: list[dict]) -> list:
        from ..seek import seek_batch

        items = []
        for kw in kwargs_list:
            kw = {**kw, "progress": progress}
            if kw["pruner"] == name:
                kw["pruner"] = SubmittedMask(name, masks[(kw["seed"], kw["density"])])
            items.append(kw)
        return seek_batch(items, on_oom="return")
    return batch


def _prepared(directory, submission, name: str):
    """Everything checked before a run starts: the manifest, the name, every run's mask, the export's options
    under this plantseek, and the rebuilt networks and data against the exported ones."""
    manifest = _manifest.load(directory)
    name = _manifest.check_name(name)
    masks = _submission.read(submission, manifest)
    verify_rebuild(manifest, _checked_spec(manifest))
    by_run = {(r.seed, r.density): _torch_mask(masks[r.id], manifest["depth"]) for r in manifest.runs}
    return manifest, name, by_run


def score(directory: str | os.PathLike, submission: str | os.PathLike, *, db: str | os.PathLike, name: str,
          device: str = "auto", reference: bool = True, replace: bool = False, progress: bool = False,
          max_batch: int | None = None, log: Callable[[str], None] | None = None) -> ScoreReport:
    """Score the masks in the directory `submission` against the export in `directory`; write the rows to `db`.

    ``reference``: also run the ticket oracle of the same seeds when `db` lacks it. ``replace``: score a
    name that `db` already holds for these runs again (otherwise refused). Nothing is written unless every
    run's mask is good; the rows are written in one transaction once every run has finished."""
    from ..device import resolve_device
    from ..store import ResultStore
    from ..sweep.config import RunConfig, package_version
    from ..sweep.executors import run_chunk

    dev = str(resolve_device(device))
    manifest, name, masks = _prepared(directory, submission, name)
    runs = manifest.runs
    configs = [_config(manifest, name, r.seed, r.density) for r in runs]
    keys = [challenge_key(c) for c in configs]
    with ResultStore(db) as store:
        done = store.keys(status="ok")
        again = [r.id for r, k in zip(runs, keys) if k in done]
        if again and not replace:
            raise ChallengeError(f"{str(db)!r} already holds {len(again)} scored run(s) of {name!r} on this export "
                                 f"(e.g. {again[0]}); pass --replace to score them again, or choose another --name")
        refs = _reference_configs(manifest, done) if reference else []
        ref_keys = [RunConfig.from_dict(c).key for c in refs]
        records = run_chunk(configs + refs, keys + ref_keys, device=dev, batch_fn=_batch_fn(name, masks, progress),
                            version=package_version(), sweep=f"challenge:{name}", max_batch=max_batch, log=log)
        store.put(records)
        source = json.dumps({"export": str(Path(directory).resolve()), "submission": str(Path(submission).resolve()),
                             "manifest_sha256": _files.sha256_file(manifest.path)}, sort_keys=True)
        store.record_sweep(f"challenge:{name}", path=str(manifest.path), source=source, n_runs=len(records),
                           version=package_version())
    by_key = {r.key: r for r in records}
    report = ScoreReport(name=name, db=str(db), reference_runs=sum(by_key[k].status == "ok" for k in ref_keys))
    report.runs = [{"id": r.id, "key": k, "status": by_key[k].status, "metrics": by_key[k].metrics or {},
                    "error": by_key[k].error} for r, k in zip(runs, keys)]
    return report
