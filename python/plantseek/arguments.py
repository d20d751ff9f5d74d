"""The one validation of user-given arguments: seeds, depths, widths, counts, booleans and output paths.

`seek`, `plant`, the tasks, the CLI and sweep files all call these, so that a value is accepted or refused
the same way everywhere, with an error that names the argument, the bad value and what is allowed. This
module imports nothing heavy (sweep files and the CLI use it before torch is needed).
"""
from __future__ import annotations

import argparse
import math
import numbers
from pathlib import Path
from typing import Any, Callable

MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; derived seeds are 63-bit


def _is_integer(value: Any, minimum: int) -> bool:
    """An integer (not a bool) >= ``minimum``: floats (even 2.0) and strings are not."""
    return not isinstance(value, bool) and isinstance(value, numbers.Integral) and int(value) >= minimum


def integer(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum``; booleans, floats (even 2.0) and strings are refused."""
    if not _is_integer(value, minimum):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def seed(value: Any, name: str = "seed") -> int:
    """A seed: an integer in [0, 2**63 - 1]."""
    v = integer(name, value, 0)
    if v > MAX_SEED:
        raise ValueError(f"{name} must be an integer in [0, 2**63 - 1], got {value!r}")
    return v


def depth(value: Any, name: str = "depth", minimum: int = 1) -> int:
    """A depth: the number of linear layers, an integer >= ``minimum``."""
    if not _is_integer(value, minimum):
        raise ValueError(f"{name} must be an integer >= {minimum} (the number of linear layers), got {value!r}")
    return int(value)


def width(value: Any, name: str = "width") -> int | list[int]:
    """A host width: an integer >= 1, or a non-empty list (or tuple) of them, one per hidden layer."""
    allowed = "an integer >= 1, or a list of them (one per hidden layer)"
    if isinstance(value, (list, tuple)):
        if value and all(_is_integer(v, 1) for v in value):
            return [int(v) for v in value]
    elif _is_integer(value, 1):
        return int(value)
    raise ValueError(f"{name} must be {allowed}, got {value!r}")


def check_bool(name: str, value: Any) -> bool:
    """A boolean option: only True or False (a string such as "no" is truthy and would silently mean True)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def parse_density(density: Any) -> float | str:
    """The one rule for a density given by a user (`seek`, the CLI, sweep files): a number in (0, 1], or
    ``"ticket"`` in any case (returned as ``"ticket"``). Booleans and other strings are refused."""
    if isinstance(density, str):
        if density.strip().lower() == "ticket":
            return "ticket"
        raise ValueError(f"density must be a number in (0, 1] or 'ticket', got {density!r}")
    if isinstance(density, bool) or not isinstance(density, numbers.Real):
        raise ValueError(f"density must be a number in (0, 1] or 'ticket', got {density!r}")
    d = float(density)
    if not math.isfinite(d) or not 0.0 < d <= 1.0:
        raise ValueError(f"density must lie in (0, 1] (the fraction of prunable parameters kept), got {density!r}")
    return d


# ------------------------------------------------------------------------------------------------ the CLI

def cli_type(check: Callable[[Any], Any], parse: Callable[[str], Any] = int) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses the text (int by default) and applies ``check`` (one of the above)."""
    def convert(text: str):
        try:
            return check(parse(text))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc) if str(exc) else f"bad value {text!r}") from None
    convert.__name__ = getattr(check, "__name__", "value")  # argparse names the type in its messages
    return convert


def parse_int(text: str) -> Any:
    """An integer from the command line, or the text itself (so that the check names the bad value)."""
    try:
        return int(text)
    except ValueError:
        return text


def parse_width(text: str) -> Any:
    """``--width 100`` or ``--width 100,50`` (one per hidden layer) as an int or a list of ints."""
    values = [parse_int(p) for p in text.replace(" ", "").split(",")]
    if len(values) == 1:
        return values[0]
    return values if all(isinstance(v, int) for v in values) else text


seed_type = cli_type(seed, parse_int)
depth_type = cli_type(depth, parse_int)
width_type = cli_type(width, parse_width)


# ------------------------------------------------------------------------------------------------ paths

def _check_parents(p: Path, name: str) -> None:
    """The nearest existing ancestor of `p` must be a directory."""
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name} {str(p)!r}: {str(parent)!r} is a file, not a directory")
            return


def output_file(path: str | Path, name: str = "--out") -> Path:
    """A file to write: missing parent directories are created; an existing directory, or a parent that is
    a file, is a ValueError naming the path."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{name} {str(p)!r} is an existing directory; give a file path such as "
                         f"{str(p / 'planted.pt')!r}")
    _check_parents(p, name)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{name} {str(p)!r}: cannot create the directory {str(p.parent)!r} "
                         f"({exc.strerror or exc})") from None
    return p


def output_dir(path: str | Path, name: str = "--out", create: bool = True) -> Path:
    """A directory to write into (created with its parents when missing, unless ``create`` is False); an
    existing file, or a parent that is a file, is a ValueError naming the path."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{name} {str(p)!r} is an existing file, not a directory; give a directory path "
                         f"(it will be created)")
    _check_parents(p, name)
    if not create:
        return p
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{name} {str(p)!r}: cannot create the directory ({exc.strerror or exc})") from None
    return p
