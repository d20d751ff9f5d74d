"""Sweep files: TOML parsing, validation and grid expansion into run configurations.

A sweep file has a ``[sweep]`` table whose keys each take one value or a list; the grid is the product of
the lists. Optional ``[[experiment]]`` tables each override keys of ``[sweep]`` and expand into their own
grid; the sweep is the union of the experiments' grids (duplicate runs are dropped). Example::

    [sweep]
    tasks = ["circle", "relu"]
    pruners = ["random", "synflow", "ticket"]
    protocols = ["singleshot"]
    densities = [0.1, 0.01, "ticket"]
    seeds = [0, 1]
    depth = 3
    width = 30
    epochs = 1

Grid keys are accepted in the singular or the plural (``task``/``tasks``, ``density``/``densities``, ...).
A pruner is a name or a table ``{name = "synflow", iterations = 100}`` (options of the configured pruner).
Every other key is a training option passed to ``plantseek.seek`` (``lr``, ``batch_size``, ``rounds``,
...). Widths of uneven networks are lists: ``width = [[100, 50]]`` is one network; ``width = [50, 100]``
is a grid of two widths. A table whose tasks are all image tasks (the conv family) leaves ``depth`` out: their
layout fixes it, and ``width`` is the host's first-layer channels (docs/image.md).

The ticket oracle (pruner ``ticket``) keeps the planted mask whatever density is asked, so it runs once per
configuration, at density ``"ticket"``, whatever densities the file lists (`Sweep.notes` says how many runs
that spares).

Every run is a `plantseek.spec.RunSpec`, and its key is the spec's (`plantseek.spec.run_key`): the SHA-256 of
the canonical JSON of the options that differ from their defaults, so adding an option keeps every key. The
execution device is not part of the key (it is an execution setting, not a run setting).
"""
from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from .. import arguments
from .. import spec as _spec
from ..spec import canonical_json, legacy_run_key, run_key

__all__ = [
    "SweepConfigError",
    "RunConfig",
    "Sweep",
    "load_sweep",
    "parse_sweep",
    "package_version",
    "run_key",
    "legacy_run_key",
    "canonical_json",
    "GRID_KEYS",
]

# canonical name -> accepted spellings
GRID_KEYS: dict[str, tuple[str, ...]] = {
    "task": ("task", "tasks"),
    "pruner": ("pruner", "pruners"),
    "protocol": ("protocol", "protocols"),
    "density": ("density", "densities"),
    "seed": ("seed", "seeds"),
    "depth": ("depth", "depths"),
    "width": ("width", "widths"),
    "epochs": ("epochs",),
    "dtype": ("dtype", "dtypes"),
}
REQUIRED_KEYS = ("task", "pruner", "protocol", "density", "seed", "depth", "width")
# keys of [sweep] / [[experiment]] that are not part of the grid
META_KEYS = ("name", "description", "imports", "device")
# the pruner that returns the planted mask whatever the density: it runs at density "ticket" only
ORACLE = "ticket"
DTYPES = _spec.DTYPES
# the options a sweep sets from its grid keys (or that are not run settings)
_NOT_OPTIONS = set(GRID_KEYS) | {"pruner_options"} | set(_spec.EXEC_KEYS)


class SweepConfigError(ValueError):
    """A sweep file that cannot be run; the message names the bad key and what it accepts."""


def package_version() -> str:
    """plantseek's version (part of every run key)."""
    try:
        import plantseek

        v = getattr(plantseek, "__version__", None)
        if v:
            return str(v)
    except Exception:  # pragma: no cover - package half-built
        pass
    try:
        from importlib.metadata import version

        return version("plantseek")
    except Exception:  # pragma: no cover
        return "0+unknown"


def _normalise(value: Any) -> Any:
    """JSON-able, canonical form of a config value (the spec's rule), as a SweepConfigError."""
    try:
        return _spec._jsonable("value", value)
    except ValueError as exc:
        raise SweepConfigError(f"{exc} in a sweep configuration") from None


@dataclass
class RunConfig:
    """One run of a sweep: everything ``plantseek.seek`` needs except the execution device."""

    task: str
    pruner: str
    protocol: str
    density: float | str
    seed: int
    depth: int
    width: int | list[int]
    epochs: int | None = None
    dtype: str | None = None
    pruner_options: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Flat configuration under the sweep's names (what the database stores and exports show)."""
        d: dict[str, Any] = {
            "task": self.task,
            "pruner": self.pruner,
            "protocol": self.protocol,
            "density": self.density,
            "seed": self.seed,
            "depth": self.depth,
            "width": self.width,
        }
        if self.epochs is not None:
            d["epochs"] = self.epochs
        if self.dtype is not None:
            d["dtype"] = self.dtype
        if self.pruner_options:
            d["pruner_options"] = dict(self.pruner_options)
        for k, v in self.options.items():
            d[k] = v
        return _normalise(d)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "RunConfig":
        d = dict(d)
        fields = {k: d.pop(k) for k in ("task", "pruner", "protocol", "density", "seed", "depth", "width")}
        return cls(
            **fields,
            epochs=d.pop("epochs", None),
            dtype=d.pop("dtype", None),
            pruner_options=dict(d.pop("pruner_options", {}) or {}),
            options=d,
        )

    @property
    def spec(self) -> _spec.RunSpec:
        """The run as a `plantseek.spec.RunSpec` (the one owner of defaults and checks)."""
        return _spec.RunSpec.from_flat(self.to_dict())

    @property
    def key(self) -> str:
        """The spec's key: a hash over the options that differ from their defaults (`plantseek.spec.run_key`)."""
        return run_key(self.to_dict())

    @property
    def pruner_label(self) -> str:
        """Pruner name with its options, e.g. ``synflow[iterations=100]`` (used to group results)."""
        return pruner_label(self.pruner, self.pruner_options)

    @property
    def group_key(self) -> str:
        """Runs with equal group keys share task, shape, protocol, epochs, dtype and training options and
        can be trained together as one batched computation."""
        d = {**_spec.defaults(), **self.to_dict()}
        return canonical_json({k: d[k] for k in _spec.GROUP_KEYS})

    def seek_kwargs(self, device: str | None = None) -> dict[str, Any]:
        """Keyword arguments for ``plantseek.seek``: the configured pruner object when it has options."""
        kw: dict[str, Any] = {
            "task": self.task,
            "depth": self.depth,
            "width": self.width,
            "pruner": self.pruner,
            "density": self.density,
            "protocol": self.protocol,
            "seed": self.seed,
        }
        if self.pruner_options:
            kw["pruner_options"] = dict(self.pruner_options)
        if self.epochs is not None:
            kw["epochs"] = self.epochs
        if self.dtype is not None:
            kw["dtype"] = self.dtype
        if device is not None:
            kw["device"] = device
        kw.update(self.options)
        return kw


def pruner_label(name: str, options: Mapping[str, Any] | None) -> str:
    """``name[option=value,...]`` (the spec's `PrunerSpec.label`)."""
    return _spec.PrunerSpec(name, dict(options or {})).label


@dataclass
class Sweep:
    """A parsed sweep file: its runs (in file order, duplicates removed) and its settings."""

    runs: list[RunConfig]
    name: str = "sweep"
    description: str = ""
    imports: list[str] = field(default_factory=list)
    device: str | None = None
    source: str = ""  # the TOML text, stored with the results
    path: str | None = None
    notes: list[str] = field(default_factory=list)  # what the expansion did that the file does not say

    def __len__(self) -> int:
        return len(self.runs)


# ---------------------------------------------------------------------------------------------------------
# registries (read lazily so that a missing piece of the package does not stop the sweep module)


def _available_tasks() -> tuple[str, ...]:
    return _spec.choices("task")


def _available_pruners() -> tuple[str, ...]:
    return _spec.choices("pruner")


def _available_protocols() -> tuple[str, ...]:
    """The registered protocols, the built-ins first in the paper's order."""
    names = _spec.choices("protocol")
    builtin = ("singleshot", "multishot", "strong")
    return tuple(n for n in builtin if n in names) + tuple(n for n in names if n not in builtin)


def seek_options() -> tuple[str, ...]:
    """Training options a sweep file may set: the spec's options that no grid key sets."""
    return tuple(k for k in _spec.defaults() if k not in _NOT_OPTIONS)


# ---------------------------------------------------------------------------------------------------------
# parsing and validation


def load_sweep(path: str | Path) -> Sweep:
    """Read and validate a sweep file; errors name the file, the key and what it accepts."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise FileNotFoundError(f"sweep file {str(path)!r} does not exist") from None
    sweep = parse_sweep(text, origin=str(path))
    sweep.path = str(path)
    if sweep.name == "sweep":
        sweep.name = path.stem
    return sweep


def parse_sweep(text: str | Mapping[str, Any], origin: str = "<sweep>") -> Sweep:
    """Parse TOML text (or an already-parsed mapping) into a validated :class:`Sweep`."""
    if isinstance(text, str):
        try:
            doc = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise SweepConfigError(f"{origin}: not valid TOML: {exc}") from None
        source = text
    else:
        doc = dict(text)
        source = ""
    unknown_top = set(doc) - {"sweep", "experiment"}
    if unknown_top:
        raise SweepConfigError(
            f"{origin}: unknown top-level table(s) {sorted(unknown_top)}; allowed: [sweep] and [[experiment]]"
        )
    base = doc.get("sweep")
    if base is None:
        raise SweepConfigError(f"{origin}: missing [sweep] table")
    if not isinstance(base, Mapping):
        raise SweepConfigError(f"{origin}: 'sweep' must be a table")
    experiments = doc.get("experiment", [])
    if isinstance(experiments, Mapping):
        experiments = [experiments]
    if not isinstance(experiments, list) or not all(isinstance(e, Mapping) for e in experiments):
        raise SweepConfigError(f"{origin}: 'experiment' must be an array of tables ([[experiment]])")

    name = base.get("name", "sweep")
    description = base.get("description", "")
    imports = base.get("imports", [])
    if isinstance(imports, str):
        imports = [imports]
    if not isinstance(name, str):
        raise SweepConfigError(f"{origin}: key 'name' in [sweep] must be a string")
    if not isinstance(imports, list) or not all(isinstance(m, str) for m in imports):
        raise SweepConfigError(f"{origin}: key 'imports' in [sweep] must be a module name or a list of them")
    device = base.get("device")
    if device is not None and not isinstance(device, str):
        raise SweepConfigError(f"{origin}: key 'device' in [sweep] must be a string such as 'auto', 'cpu', 'cuda:0'")
    _import_plugins(imports, origin)

    tables = [("[sweep]", dict(base))]
    if experiments:
        tables = []
        for i, exp in enumerate(experiments):
            label = f"[[experiment]] #{i + 1}" + (f" ({exp['name']!r})" if "name" in exp else "")
            bad_meta = set(exp) & {"imports", "device"}
            if bad_meta:
                raise SweepConfigError(f"{origin}: {label}: key {sorted(bad_meta)[0]!r} belongs in [sweep]")
            merged = {k: v for k, v in base.items()}
            # an experiment's key replaces [sweep]'s, whatever spelling either uses
            for k in exp:
                canon = _canonical_name(k)
                for alias in GRID_KEYS.get(canon, (k,)):
                    merged.pop(alias, None)
            merged.update(exp)
            tables.append((label, merged))

    runs: list[RunConfig] = []
    seen: set[str] = set()
    folded: set[str] = set()
    tickets: dict = {}  # (task, depth) -> its ticket, built once per sweep for the width checks
    for label, table in tables:
        for run in _expand_table(table, f"{origin}: {label}", folded, tickets):
            k = canonical_json(run.to_dict())
            if k not in seen:
                seen.add(k)
                runs.append(run)
    return Sweep(runs=runs, name=name, description=description, imports=list(imports), device=device,
                 source=source, notes=_oracle_note(runs, folded))


def _oracle_note(runs: Sequence[RunConfig], folded: set[str]) -> list[str]:
    if not folded:
        return []
    n = sum(r.pruner == ORACLE for r in runs)
    return [f"pruner {ORACLE!r} (the oracle) keeps the planted mask whatever density is asked: it runs once per "
            f"configuration, at density \"ticket\" ({n} runs), not at the file's other densities "
            f"({len(folded)} runs fewer)"]


def _import_plugins(modules: Sequence[str], origin: str) -> None:
    """Import the sweep's ``imports`` with the sweep file's directory (``origin`` when it names a file) and the
    current directory first on the path (`plantseek.plugins.import_modules`; Dask workers get the same)."""
    from ..plugins import PluginError, import_modules

    if not modules:
        return
    paths = [Path(origin).resolve().parent] if Path(origin).is_file() else []
    try:
        import_modules(modules, paths=[*paths, Path.cwd()], where=f"{origin}: key 'imports'")
    except PluginError as exc:
        raise SweepConfigError(str(exc)) from None


def _canonical_name(key: str) -> str:
    for canon, aliases in GRID_KEYS.items():
        if key in aliases:
            return canon
    return key


def _as_list(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def _expand_table(table: Mapping[str, Any], where: str, folded: set[str] | None = None,
                  tickets: dict | None = None) -> Iterable[RunConfig]:
    """The runs of one table; the oracle's runs at a numeric density become its run at density "ticket" (their
    canonical configurations go to ``folded``); ``tickets`` caches the tickets the runs are checked against."""
    grid: dict[str, list] = {}
    options: dict[str, list] = {}
    for key, value in table.items():
        if key in META_KEYS:
            continue
        canon = _canonical_name(key)
        if canon in grid:
            raise SweepConfigError(f"{where}: key {key!r} given twice (as {canon!r} and an alias)")
        if canon in GRID_KEYS:
            grid[canon] = _validate_grid(canon, key, value, where)
        else:
            options[key] = _as_list(value)
    missing = [k for k in REQUIRED_KEYS if k not in grid]
    if "depth" in missing and grid.get("task") and all(_takes_no_depth(t) for t in grid["task"]):
        grid["depth"] = [_spec.defaults()["depth"]]  # conv tasks: the layout fixes the depth (plantseek.families)
        missing.remove("depth")
    if missing:
        raise SweepConfigError(
            f"{where}: missing key(s) {', '.join(repr(m) for m in missing)} "
            f"(a sweep needs {', '.join(REQUIRED_KEYS)})"
        )
    if options:
        allowed = seek_options()
        for key, values in options.items():
            if key not in allowed:
                raise SweepConfigError(
                    f"{where}: unknown key {key!r}; allowed keys: "
                    + ", ".join(sorted({a for al in GRID_KEYS.values() for a in al} | set(META_KEYS) | set(allowed)))
                )
            if not values:
                raise SweepConfigError(f"{where}: key {key!r} is an empty list")
            for v in values:
                try:
                    _normalise(v)
                except SweepConfigError as exc:
                    raise SweepConfigError(f"{where}: key {key!r}: {exc}") from None
    defaults = _spec.defaults()
    _check_booleans(options, defaults, where)
    _check_choices(options, where)
    tickets = {} if tickets is None else tickets
    keys = list(grid) + list(options)
    lists = [grid[k] for k in grid] + [options[k] for k in options]
    for combo in itertools.product(*lists):
        d = dict(zip(keys, combo))
        pruner = d.pop("pruner")
        opts = {k: d.pop(k) for k in list(options)}
        run = _with_defaults(RunConfig(
            task=d["task"],
            pruner=pruner[0],
            pruner_options=dict(pruner[1]),
            protocol=d["protocol"],
            density=d["density"],
            seed=d["seed"],
            depth=d["depth"],
            width=d["width"],
            epochs=d.get("epochs"),
            dtype=d.get("dtype"),
            options=_normalise(opts),
        ), defaults)
        if run.pruner == ORACLE and run.density != "ticket":
            if folded is not None:
                folded.add(canonical_json(run.to_dict()))
            run.density = "ticket"
        yield _checked_run(run, where, tickets)


def _takes_no_depth(task: str) -> bool:
    """Whether `task`'s network family has no depth option (`plantseek.spec`'s ``family`` metadata)."""
    from plantseek import families

    owner = dict(_spec.fields())["depth"].metadata.get("family")
    return owner is not None and families.of(task).name != owner


def _check_booleans(options: Mapping[str, list], defaults: Mapping[str, Any] | None, where: str) -> None:
    """Options whose seek default is a boolean take only true or false (a string such as "no" is truthy)."""
    for key, values in options.items():
        if defaults is not None and isinstance(defaults.get(key), bool):
            for v in values:
                if not isinstance(v, bool):
                    raise SweepConfigError(f"{where}: key {key!r}: bad value {v!r}; allowed: true, false")


def _check_choices(options: Mapping[str, list], where: str) -> None:
    """Options with a fixed set of values (optimizer, impl, rescale, scope, init) take only those; the sets
    are the spec's (`plantseek.spec.choices`)."""
    for key, values in options.items():
        choices = _spec.choices(key)
        if choices is None:
            continue
        for v in values:
            if v not in choices:
                raise SweepConfigError(f"{where}: key {key!r}: bad value {v!r}; allowed: "
                                       + ", ".join(map(str, choices)))


def _checked_run(run: RunConfig, where: str, tickets: dict) -> RunConfig:
    """Refuse before the sweep starts what the run would fail on: a depth below its task's minimum, a width
    narrower than its ticket (`plantseek.planting.host_widths`), a noise outside its task's range, a density
    that keeps no parameter of its network (see `plantseek.pruners.base.check_keeps_one`), and every other
    value the run's `plantseek.spec.RunSpec` refuses."""
    from plantseek import tasks
    from plantseek.planting import host_widths
    from plantseek.pruners.base import check_keeps_one, default_scope

    task = tasks.get(run.task)
    if run.depth < task.min_depth:
        raise SweepConfigError(f"{where}: key 'depth': bad value {run.depth!r} for task {run.task!r}; allowed: "
                               f"integers >= {task.min_depth} (the task's minimum depth)")
    if task.builds_ticket:
        ticket = tickets.get((run.task, run.depth))
        if ticket is None:
            ticket = tickets[(run.task, run.depth)] = task.ticket(run.depth)
        try:
            host_widths(ticket, run.width, run.depth)
        except ValueError as exc:
            raise SweepConfigError(f"{where}: key 'width': bad value {run.width!r} for task {run.task!r} at "
                                   f"depth {run.depth}: {exc}") from None
    try:
        if "noise" in run.options:
            task.check_noise(run.options["noise"])
    except ValueError as exc:
        raise SweepConfigError(f"{where}: key 'noise': {exc}") from None
    if "rescale" in run.options:
        from plantseek.rescale import check_mode

        try:
            check_mode(run.options["rescale"])
        except ValueError as exc:
            raise SweepConfigError(f"{where}: key 'rescale': {exc}") from None
    try:
        run.spec.checked()
    except (TypeError, ValueError) as exc:
        raise SweepConfigError(f"{where}: {exc}") from None
    widths = run.width if isinstance(run.width, list) else [run.width] * (run.depth - 1)
    if run.density == "ticket" or not task.builds_ticket or len(widths) != run.depth - 1:
        return run
    prune_bias = run.options.get("prune_bias", True) is not False
    full = [task.input_dim] + list(widths) + [task.output_dim]
    counts = [a * b + (b if prune_bias else 0) for a, b in zip(full[:-1], full[1:])]
    scope = run.options.get("scope") or default_scope(run.pruner)
    try:
        check_keeps_one(float(run.density), counts, scope)
    except ValueError as exc:
        raise SweepConfigError(f"{where}: key 'density' (task {run.task!r}, depth {run.depth}, width "
                               f"{run.width}): {exc}") from None
    return run


def _with_defaults(run: RunConfig, defaults: Mapping[str, Any] | None) -> RunConfig:
    """Complete a run with seek's defaults, so that its key covers the full configuration: a file that
    spells out a default and one that leaves it out give the same key, and changing a default changes it."""
    if not defaults:
        return run
    if run.epochs is None and "epochs" in defaults:
        run.epochs = int(defaults["epochs"])
    if run.dtype is None and "dtype" in defaults:
        run.dtype = str(defaults["dtype"])
    for k, v in defaults.items():
        if k in _NOT_OPTIONS or k in run.options:
            continue
        try:
            run.options[k] = _normalise(v)
        except SweepConfigError:
            continue
    run.options = dict(sorted(run.options.items()))
    return run


def _validate_grid(canon: str, key: str, value: Any, where: str) -> list:
    values = _as_list(value)
    if canon == "seed" and isinstance(value, Mapping):
        start, count = value.get("start", 0), value.get("count")
        if set(value) - {"start", "count"} or not _accepts(arguments.seed, start) or not _is_int(count) \
                or count < 1 or not _accepts(arguments.seed, start + count - 1):
            raise SweepConfigError(
                f"{where}: key {key!r}: a seed table is {{start = 0, count = N}} with non-negative integers"
            )
        return list(range(start, start + count))
    if not values:
        raise SweepConfigError(f"{where}: key {key!r} is an empty list")

    def bad(v, allowed: str) -> SweepConfigError:
        return SweepConfigError(f"{where}: key {key!r}: bad value {v!r}; allowed: {allowed}")

    out = []
    for v in values:
        if canon == "task":
            allowed = _available_tasks()
            if not isinstance(v, str) or v not in allowed:
                raise bad(v, ", ".join(allowed))
            out.append(v)
        elif canon == "pruner":
            allowed = _available_pruners()
            if isinstance(v, Mapping):
                name = v.get("name")
                opts = {k: x for k, x in v.items() if k != "name"}
            else:
                name, opts = v, {}
            if not isinstance(name, str) or name not in allowed:
                raise bad(v, ", ".join(allowed) + " (or a table {name = ..., option = ...})")
            out.append((name, _normalise(opts)))
        elif canon == "protocol":
            allowed = _available_protocols()
            if not isinstance(v, str) or v not in allowed:
                raise bad(v, ", ".join(allowed))
            out.append(v)
        elif canon == "density":
            from plantseek.pruners.base import parse_density  # the one rule of seek, the CLI and sweeps

            try:
                out.append(parse_density(v))
            except ValueError:
                raise bad(v, 'numbers in (0, 1] or "ticket" (any case)') from None
        elif canon == "seed":  # the one rule of seek, plant and the CLI (plantseek.arguments)
            if not _accepts(arguments.seed, v):
                raise bad(v, "non-negative integers below 2**63, a list of them, or {start = 0, count = N}")
            out.append(arguments.seed(v))
        elif canon == "depth":
            if not _accepts(arguments.depth, v):
                raise bad(v, "integers >= 1 (number of linear layers)")
            out.append(arguments.depth(v))
        elif canon == "width":
            if isinstance(v, tuple) or not _accepts(arguments.width, v):
                raise bad(v, "integers >= 1, or lists of them for uneven hidden layers (width = [[100, 50]])")
            out.append(arguments.width(v))
        elif canon == "epochs":
            if not _is_int(v) or v < 0:
                raise bad(v, "integers >= 0")
            out.append(int(v))
        elif canon == "dtype":
            if v not in DTYPES:
                raise bad(v, ", ".join(DTYPES))
            out.append(v)
    return out


def _accepts(check, v: Any) -> bool:
    """Whether one of the `plantseek.arguments` checks accepts `v` (the sweep file words its own error)."""
    try:
        check(v)
    except ValueError:
        return False
    return True


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
