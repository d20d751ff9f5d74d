"""Plugins: registries filled from installed packages (entry points) and from modules imported by name.

An installed package adds pruners, tasks or protocols with an entry point in the group ``plantseek.pruners``,
``plantseek.tasks`` or ``plantseek.protocols`` (the packaging convention pytest's plugins use)::

    [project.entry-points."plantseek.pruners"]
    my-pruners = "my_package.pruners"            # a module whose import registers (@pruners.register)
    my-l1 = "my_package.pruners:MyL1"            # or an object; an unregistered class is registered as "my-l1"

Each registry loads its group once, lazily, when it is first listed or looked up, so that ``import plantseek``
never imports a plugin. A plugin that fails to load is a `PluginError` naming the entry point and its
distribution, raised again by every later lookup of that registry (it is not re-imported);
``PLANTSEEK_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points altogether.

A module that is not installed is imported by name (`import_modules`): ``plantseek --import MODULE`` and a
sweep file's ``imports = [...]``, with the current directory first on the path as ``python -m`` has it (and
a sweep file's own directory); `import_paths` lists the directories put there, so that Dask workers can do
the same before they run anything.
"""
from __future__ import annotations

import importlib
import os
import sys
import threading
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

__all__ = ["PluginError", "EntryPoints", "import_modules", "import_paths", "command_imports", "worker_imports",
           "DISABLE_ENV"]

DISABLE_ENV = "PLANTSEEK_DISABLE_PLUGIN_AUTOLOAD"


class PluginError(ImportError, ValueError):
    """A plugin that cannot be loaded: an entry point, or a module named by ``--import`` / ``imports``.

    A ValueError too, so that the CLI reports it in one line like every other bad argument."""


def _where(exc: BaseException) -> str:
    """`` (file:line)`` of the innermost frame of an exception's traceback, or ''."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""


# ------------------------------------------------------------------------------------------------ entry points

class EntryPoints:
    """The entry points of one group, loaded once into one registry.

    ``adopt(name, obj)`` (optional) is called with each loaded object; a registry uses it to register a class
    that the entry point names but that is not registered yet."""

    def __init__(self, group: str, kind: str, adopt: Callable[[str, Any], None] | None = None) -> None:
        self.group = group
        self.kind = kind
        self.adopt = adopt
        self.loaded: dict[str, Any] = {}  # entry point name -> the object it named
        self.errors: list[str] = []
        self._state = "new"  # "loading" (re-entrant calls from a plugin's own import return at once), "done"
        self._lock = threading.RLock()

    def load(self) -> None:
        """Load every entry point of the group (the first call only); PluginError when one failed."""
        if self._state != "done":
            with self._lock:
                if self._state == "new":
                    self._state = "loading"
                    try:
                        self._load_all()
                    finally:
                        self._state = "done"
        if self.errors and self._state == "done":
            raise PluginError("; ".join(self.errors))

    def _entry_points(self) -> list:
        if os.environ.get(DISABLE_ENV, "").strip() not in ("", "0"):
            return []
        from importlib.metadata import entry_points

        eps = entry_points(group=self.group)
        return sorted(eps, key=lambda ep: (getattr(ep.dist, "name", "") or "", ep.name))

    def _load_all(self) -> None:
        for ep in self._entry_points():
            try:
                obj = ep.load()
                if self.adopt is not None:
                    self.adopt(ep.name, obj)
            except Exception as exc:  # noqa: BLE001 - any failure of a plugin is reported as that plugin's
                self.errors.append(self._describe(ep, exc))
            else:
                self.loaded[ep.name] = obj

    def _describe(self, ep, exc: BaseException) -> str:
        dist = getattr(ep, "dist", None)
        origin = f"distribution {dist.name} {dist.version}" if dist is not None else "an unknown distribution"
        return (f"{self.kind} plugin: entry point {ep.name!r} = {ep.value!r} (group {self.group!r}, {origin}) failed "
                f"to load: {type(exc).__name__}: {exc}{_where(exc)}; fix or uninstall that package, or set "
                f"{DISABLE_ENV}=1 to skip installed plugins")


# ------------------------------------------------------------------------------------------------ modules by name

_IMPORT_PATHS: list[str] = []  # the directories import_modules put first on sys.path, in order
_COMMAND_IMPORTS: list[str] = []  # the --import modules of the plantseek command that is running


def import_paths() -> list[str]:
    """The directories that `import_modules` has put on ``sys.path`` (absolute paths, first first)."""
    return list(_IMPORT_PATHS)


@contextmanager
def command_imports(names: Sequence[str]) -> Iterator[None]:
    """While a ``plantseek`` command runs: the modules of its ``--import`` options, which `worker_imports` adds
    to what Dask workers import."""
    saved = list(_COMMAND_IMPORTS)
    _COMMAND_IMPORTS[:] = list(names)
    try:
        yield
    finally:
        _COMMAND_IMPORTS[:] = saved


def worker_imports(imports: Sequence[str] = ()) -> list[str]:
    """The modules a worker must import to run what this process runs: the running command's ``--import``
    modules, then ``imports`` (a sweep file's), each once."""
    return list(dict.fromkeys([*_COMMAND_IMPORTS, *imports]))


def _put_first(paths: Sequence[str | os.PathLike]) -> list[str]:
    dirs = []
    for p in paths:
        d = str(Path(p).resolve())
        if d not in dirs:
            dirs.append(d)
    for d in reversed(dirs):
        if d in sys.path:
            sys.path.remove(d)
        sys.path.insert(0, d)
    for d in dirs:
        if d not in _IMPORT_PATHS:
            _IMPORT_PATHS.append(d)
    return dirs


def import_modules(names: Iterable[str], *, paths: Sequence[str | os.PathLike] | None = None,
                   where: str = "--import") -> list:
    """Import each module of ``names`` (dotted names), with ``paths`` first on ``sys.path`` (default: the
    current directory, as ``python -m`` has it). A module that cannot be imported is a PluginError that starts
    with ``where`` and names the module, the directories searched first and the error."""
    names = list(names)
    if not names:
        return []
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise PluginError(f"{where}: a module name must be a non-empty string, got {name!r}")
    dirs = _put_first([os.getcwd()] if paths is None else paths)
    importlib.invalidate_caches()  # a module file written after the directory was first listed
    return [_import_one(name.strip(), dirs, where) for name in names]


def _import_one(name: str, dirs: list[str], where: str):
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            hint = ""
            if name.endswith(".py") or "/" in name or os.sep in name:
                stem = Path(name).stem
                hint = f"; give the module's name ({stem!r}), not its file, and run from its directory"
            raise PluginError(f"{where}: no module named {exc.name!r} in {', '.join(dirs)} (searched first) or the "
                              f"installed packages{hint}", name=name) from None
        raise PluginError(f"{where}: importing {name!r} failed: {type(exc).__name__}: {exc}{_where(exc)}",
                          name=name) from exc
    except Exception as exc:  # noqa: BLE001 - the user's module raised: name it, and where
        raise PluginError(f"{where}: importing {name!r} failed: {type(exc).__name__}: {exc}{_where(exc)}",
                          name=name) from exc
