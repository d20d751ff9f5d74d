"""`export`: planted networks and their data, without the ticket, for a challenge that any framework can enter.

Per seed it writes ``seed{s}/network.<ext>`` (the planted network's parameters ``layers.{i}.weight`` /
``layers.{i}.bias``, float64, PyTorch ``(out, in)`` layout) and ``seed{s}/data.<ext>`` (``x_train``, ``y_train``,
``x_prune``, ``y_prune``, ``x_test``, ``y_test``: the samples `plantseek.seek` draws for that seed; the pruning
set is the first ``pruning_samples`` training samples, as every native pruner sees it), then ``README.md`` (how
to submit) and ``manifest.json`` (`plantseek.challenge.manifest`). Nothing written holds the ticket mask,
``output_scale``, the hiding statistics or the neuron map: the network is what a native pruner is handed, the
data is the task's.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .. import arguments as _args
from . import files as _files
from . import manifest as _manifest
from .manifest import ChallengeError, ChallengeRun


def _spec_of(task: str, depth, width, protocol: str, options: Mapping[str, Any]):
    """The checked `RunSpec` of the export's seed-0 run (density 1): the export's options, validated once."""
    from .. import families, spec, tasks

    bad = sorted(set(options) & set(_manifest.RESERVED))
    if bad:
        raise ChallengeError(f"option(s) {', '.join(bad)} are set by the export itself, not as options")
    multishot = sorted(set(options) & set(_manifest.MULTISHOT_ONLY))
    if multishot:
        raise ChallengeError(f"option(s) {', '.join(multishot)} are multishot's, which no challenge protocol runs")
    unknown = sorted(set(options) - set(spec.FLAT))
    if unknown:
        skip = set(_manifest.RESERVED) | set(_manifest.MULTISHOT_ONLY)
        known = [k for k, f in spec.fields() if k in spec.FLAT and k not in skip and f.metadata.get("family") != "conv"]
        raise ChallengeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    if isinstance(task, str) and task in tasks.available() and families.of(task).name != "mlp":
        raise ChallengeError(f"task {task!r} is an image task (the conv family); challenge exports hold the "
                             f"MLP tasks: {', '.join(families.tasks_of('mlp'))}")
    return spec.RunSpec.from_flat({"task": task, "depth": depth, "width": width, "protocol": protocol,
                                   "density": 1.0, **options}).checked()


def parse_seeds(text: str) -> list[int]:
    """``0-9``, ``0,3,7`` or ``0-4,9``: the seeds in order, each once."""
    seeds: list[int] = []
    for part in str(text).replace(" ", "").split(","):
        lo, sep, hi = part.partition("-")
        try:
            values = range(int(lo), int(hi) + 1) if sep else [int(lo)]
        except ValueError:
            raise ValueError(f"--seeds must be seeds or ranges such as 0-9 or 0,3,7, got {text!r}") from None
        if sep and int(hi) < int(lo):
            raise ValueError(f"--seeds: the range {part!r} is empty")
        seeds += [_args.seed(s) for s in values]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds lists a seed twice: {text!r}")
    return seeds


def _densities(densities: Iterable[Any]) -> list[float | str]:
    out = [_args.parse_density(d) for d in densities]
    if not out:
        raise ChallengeError("densities: give at least one density (a number in (0, 1] or 'ticket')")
    if len(set(out)) != len(out):
        raise ChallengeError(f"densities lists one twice: {out}")
    return out


def network_arrays(net) -> dict:
    """The planted network's parameters as NumPy float64 arrays under their names (nothing else of it)."""
    names = _files.parameter_names(net.depth)
    tensors = [t for w, b in zip(net.weights, net.biases) for t in (w, b)]
    return {n: t.detach().to("cpu").double().numpy() for n, t in zip(names, tensors)}


def data_arrays(data, pruning_samples: int) -> dict:
    """The run's data as NumPy arrays: train, the pruning set (the first `pruning_samples` training samples,
    `plantseek.pruners.base.pruning_set`) and test."""
    n = min(int(pruning_samples), int(data.x_train.shape[0]))
    arrays = {"x_train": data.x_train, "y_train": data.y_train, "x_prune": data.x_train[:n],
              "y_prune": data.y_train[:n], "x_test": data.x_test, "y_test": data.y_test}
    return {k: v.detach().to("cpu").numpy().copy() for k, v in arrays.items()}


def rebuild(run_spec, seed: int):
    """The planted network and data of `seed` (CPU, float64) as `plantseek.seek` makes them (the MLP family)."""
    import dataclasses

    from .. import families
    from ..seek import derive_seed

    cfg = dataclasses.replace(run_spec, seed=int(seed)).flat()
    fam = families.of(cfg["task"])
    return fam.plant(cfg, None), fam.data(cfg, derive_seed(int(seed), "data"))


def _budget(net, density) -> float:
    from ..pruners.base import check_keeps_one, prunable_counts

    budget = float(net.ticket_density) if density == "ticket" else float(density)
    check_keeps_one(budget, prunable_counts(net, _manifest.PRUNE_BIAS), _manifest.SCOPE)
    return budget


def _options(run) -> dict[str, Any]:
    """Every run setting of the export other than the reserved ones (MLP options only), under flat names."""
    from .. import spec

    flat = run.flat()
    conv = {k for k, f in spec.fields() if f.metadata.get("family") == "conv"}
    skip = set(_manifest.RESERVED) | set(_manifest.MULTISHOT_ONLY) | conv
    return {k: v for k, v in flat.items() if k not in skip}


def export(out: str | os.PathLike, *, task: str, depth: int, width, seeds: Sequence[int] | str,
           protocol: str = "singleshot", densities: Sequence[Any] = (0.1,), fmt: str = "safetensors",
           options: Mapping[str, Any] | None = None, log=None) -> dict:
    """Write a challenge export into the new or empty directory `out`; returns the manifest.

    ``options`` are `plantseek.seek` options other than task, depth, width, protocol, seed, density and the
    pruner (``epochs``, ``n_samples``, ``noise``, ``pruning_samples``, ``lr``, ...); the scorer runs every
    submitted mask with them."""
    _manifest.check_protocol(protocol)
    _files.check_format(fmt)
    seeds = parse_seeds(seeds) if isinstance(seeds, str) else [_args.seed(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ChallengeError(f"seeds must be distinct and at least one, got {seeds}")
    densities = _densities(densities)
    run = _spec_of(task, depth, width, protocol, dict(options or {}))
    directory = _args.output_dir(out, "--out", create=False)
    existed = directory.exists()
    if existed and any(directory.iterdir()):
        raise ChallengeError(f"--out {str(directory)!r} is not empty; give a new or empty directory")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        return _write(directory, run, seeds, densities, fmt, log)
    except BaseException:  # an export is whole or absent: the directory was new or empty, leave it so
        for path in directory.iterdir():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        if not existed:
            directory.rmdir()
        raise


def _write(directory: Path, run, seeds: list[int], densities: list, fmt: str, log) -> dict:
    """Every seed's files, then the README and the manifest (which lists the README's hash too)."""
    from .. import __version__
    from .readme import readme_text

    runs: list[ChallengeRun] = []
    files: dict[str, dict] = {}
    for seed in seeds:
        net, seed_runs, seed_files = _write_seed(directory, run, seed, densities, _files.EXTENSIONS[fmt])
        runs += seed_runs
        files.update(seed_files)
        if log:
            log(f"seed {seed}: wrote {', '.join(seed_files)}")
    head = dict(task=run.task, kind=_task_kind(run.task), depth=run.depth,
                width=list(run.width) if isinstance(run.width, tuple) else run.width, layer_sizes=net.widths,
                protocol=run.protocol, options=_options(run), fmt=fmt, runs=runs, prunable=int(net.n_params),
                version=__version__)
    readme = directory / _manifest.README
    readme.write_text(readme_text(_manifest.build(**head, files=files)))
    files[_manifest.README] = {"sha256": _files.sha256_file(readme), "bytes": readme.stat().st_size}
    manifest = _manifest.build(**head, files=files)
    _manifest.write(directory, manifest)
    return manifest


def _write_seed(directory: Path, run, seed: int, densities: list, ext: str):
    """Seed `seed`'s network and data files; returns its planted network, its runs and its files' entries.
    The budgets are checked before anything of the seed is written."""
    from ..pruners.selection import kept_count

    net, data = rebuild(run, seed)
    names = {"network": f"seed{seed}/network{ext}", "data": f"seed{seed}/data{ext}"}
    budgets = [_budget(net, d) for d in densities]
    runs = [ChallengeRun(_manifest.run_id(seed, d), seed, d, b, kept_count(b, int(net.n_params)), names["network"],
                         names["data"]) for d, b in zip(densities, budgets)]
    (directory / f"seed{seed}").mkdir()
    files = {}
    for what, arrays in (("network", network_arrays(net)), ("data", data_arrays(data, run.data.pruning_samples))):
        path = directory / names[what]
        _files.write_arrays(path, arrays)
        files[names[what]] = {"sha256": _files.sha256_file(path), "arrays_sha256": _files.arrays_sha256(arrays),
                              "bytes": path.stat().st_size}
    return net, runs, files


def _task_kind(task: str) -> str:
    from .. import tasks

    return tasks.get(task).kind
