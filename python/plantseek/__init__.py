"""plantseek: plant known sparse winning tickets in random networks and measure how well pruners find them.

The names below and every submodule are imported on first use (PEP 562), so that ``import plantseek.store``
or ``import plantseek.report`` does not load the trainer.
"""
from __future__ import annotations

import importlib
import pkgutil
import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it
_EXPORTS = {
    "Ticket": "tickets",
    "PlantedNetwork": "planting", "plant": "planting", "load": "planting",
    "SeekResult": "seek", "seek": "seek", "seek_batch": "seek",
    "load_masks": "mask_io",  # masks written by `plantseek masks --out` (or any name -> array dict)
    "PlantedModule": "image.planting", "plant_state_dict": "image.planting",  # image task: conv tickets
}

__all__ = ["__version__", "native", "tasks", "tickets", "Ticket", "PlantedNetwork", "plant", "load", "seek", "seek_batch", "SeekResult",
           "load_masks"]


def _submodules() -> set[str]:
    return {info.name for info in pkgutil.iter_modules(__path__)}


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    elif not name.startswith("__") and name in _submodules():
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    public = set(__all__) | set(_EXPORTS) | {name for name in _submodules() if not name.startswith("_")}
    return sorted(public | {name for name in globals() if name.startswith("__")})


class _Package(types.ModuleType):
    """Keeps ``plantseek.seek`` the function: importing the submodule ``plantseek.seek`` makes the import system
    bind the module as this package's attribute ``seek``, which would hide the function."""

    @property
    def seek(self):
        from .seek import seek
        return seek

    @seek.setter
    def seek(self, module) -> None:
        pass


sys.modules[__name__].__class__ = _Package
