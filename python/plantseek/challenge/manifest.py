"""The challenge manifest (``manifest.json`` of an export): what was planted, the protocol and its options,
and per run the seed, the density budget as a number, the exact count of parameters to keep, the files and
their SHA-256 hashes. It holds nothing from which the ticket can be read off: no ticket mask, no
``output_scale``, no hiding statistics, no neuron map.

A run is one (seed, density) pair; its id (``seed3_d0.1``, ``seed3_ticket``) names the mask file a
submission holds for it. This module reads and writes JSON only."""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from .files import FORMATS, parameter_names

MANIFEST = "manifest.json"
README = "README.md"
FORMAT = "plantseek.challenge"
FORMAT_VERSION = 1
# protocols whose pruner chooses the mask once, at initialisation: a submitted mask is exactly that. multishot
# asks its pruner again after every round of training, which a mask computed elsewhere cannot answer.
PROTOCOLS = ("singleshot", "strong")
# options the export fixes itself (or that a submitted mask cannot have): not settable with --option
RESERVED = ("task", "depth", "width", "protocol", "seed", "density", "pruner", "pruner_options", "scope",
            "prune_bias")
# multishot's own options: no challenge protocol reads them, so the export neither takes nor writes them
MULTISHOT_ONLY = ("rounds", "round_epochs")
# the rules every submitted mask follows (the scorer's pruner counts globally, biases included)
SCOPE, PRUNE_BIAS = "global", True
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,99}$")


class ChallengeError(ValueError):
    """An export that cannot be read, or a submission that cannot be scored; the message names the run and
    the problem (one line per problem)."""


def run_id(seed: int, density: float | str) -> str:
    """``seed{seed}_ticket`` or ``seed{seed}_d{density:g}``: the name of a run and of its mask file."""
    return f"seed{int(seed)}_ticket" if density == "ticket" else f"seed{int(seed)}_d{float(density):g}"


def check_protocol(protocol: Any) -> str:
    if protocol not in PROTOCOLS:
        why = (" (multishot prunes again after every round of training, which a mask chosen outside plantseek "
               "cannot do: run your rounds on the exported data and submit the final mask under singleshot, "
               "which trains it from the planted weights as multishot's last phase does)"
               if protocol == "multishot" else
               f" ({protocol} changes the mask while it trains, which a mask chosen outside plantseek cannot do)"
               if protocol in ("gradual", "dynamic") else "")
        raise ChallengeError(f"protocol {protocol!r} cannot be a challenge; allowed: {', '.join(PROTOCOLS)}{why}")
    return protocol


def check_name(name: Any) -> str:
    """A submission's name: the `pruner` of its rows. Letters, digits and ``_.+-``; not a registered pruner's
    name (its rows would read as that pruner's)."""
    from .. import pruners

    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ChallengeError(f"--name must be 1 to 100 letters, digits or '_.+-' (starting with a letter or digit), "
                             f"got {name!r}")
    if name in pruners.available():
        raise ChallengeError(f"--name {name!r} is a registered plantseek pruner; a submission needs a name of its own "
                             f"(e.g. {name + '-mine'!r}) so that its rows never read as the native pruner's")
    return name


@dataclass(frozen=True)
class ChallengeRun:
    """One run of an export."""

    id: str
    seed: int
    density: float | str  # as configured: a number, or "ticket"
    budget: float  # the density as a number (the ticket's own for "ticket")
    keep: int  # exactly this many parameters (weights and biases) are kept
    network: str  # file names, relative to the export directory
    data: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seed": self.seed, "density": self.density, "budget": self.budget, "keep": self.keep,
                "network": self.network, "data": self.data}


@dataclass(frozen=True)
class Manifest:
    """A parsed ``manifest.json``."""

    raw: dict
    path: Path

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def runs(self) -> list[ChallengeRun]:
        return [ChallengeRun(**{k: r[k] for k in ("id", "seed", "density", "budget", "keep", "network", "data")})
                for r in self.raw["runs"]]

    @property
    def parameters(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(p["name"], tuple(p["shape"])) for p in self.raw["parameters"]]

    def __getitem__(self, key: str) -> Any:
        return self.raw[key]

    def seek_options(self) -> dict[str, Any]:
        """What `plantseek.seek` takes for every run of the export, except pruner, density and seed."""
        return {"task": self.raw["task"], "depth": self.raw["depth"], "width": self.raw["width"],
                "protocol": self.raw["protocol"], **self.raw["options"]}


def build(*, task: str, kind: str, depth: int, width, layer_sizes: Sequence[int], protocol: str,
          options: Mapping[str, Any], fmt: str, runs: Sequence[ChallengeRun], files: Mapping[str, dict],
          prunable: int, version: str) -> dict[str, Any]:
    """The manifest of an export (JSON-able)."""
    shapes = []
    for i, (fan_in, fan_out) in enumerate(zip(layer_sizes[:-1], layer_sizes[1:])):
        shapes += [[fan_out, fan_in], [fan_out]]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "plantseek_version": version,
        "task": task, "kind": kind, "depth": int(depth), "width": width, "layer_sizes": list(layer_sizes),
        "protocol": protocol, "options": dict(options), "file_format": fmt,
        "mask_rules": {"scope": SCOPE, "prune_bias": PRUNE_BIAS, "prunable": int(prunable),
                       "dtypes": ["bool", "uint8"], "extensions": [".safetensors", ".npz"]},
        "parameters": [{"name": n, "shape": s} for n, s in zip(parameter_names(depth), shapes)],
        "runs": [r.to_dict() for r in runs],
        "files": {k: dict(v) for k, v in sorted(files.items())},
    }


def write(directory: Path, manifest: Mapping[str, Any]) -> Path:
    path = Path(directory) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=False, allow_nan=False) + "\n")
    return path


_REQUIRED = {"task": str, "depth": int, "protocol": str, "options": dict, "file_format": str, "mask_rules": dict,
             "parameters": list, "runs": list, "files": dict, "layer_sizes": list}


def load(directory: str | os.PathLike) -> Manifest:
    """The manifest of an export directory (or of the manifest file itself), checked for what scoring needs."""
    p = Path(directory)
    path = p / MANIFEST if p.is_dir() else p
    if not path.exists():
        what = "directory" if p.is_dir() else "path"
        raise ChallengeError(f"{str(p)!r} is not a plantseek challenge export: the {what} has no {MANIFEST}"
                             if p.exists() else f"challenge export {str(p)!r} does not exist")
    try:
        raw = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ChallengeError(f"{str(path)!r} is not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT:
        raise ChallengeError(f"{str(path)!r} is not a plantseek challenge manifest (its 'format' is not {FORMAT!r})")
    if not isinstance(raw.get("format_version"), int) or raw["format_version"] > FORMAT_VERSION:
        raise ChallengeError(f"{str(path)!r} has manifest format {raw.get('format_version')!r}; this plantseek reads "
                             f"up to {FORMAT_VERSION}: upgrade plantseek")
    for key, kind in _REQUIRED.items():
        if not isinstance(raw.get(key), kind) or isinstance(raw.get(key), bool):
            raise ChallengeError(f"{str(path)!r}: field {key!r} must be a {kind.__name__}, got {raw.get(key)!r}")
    check_protocol(raw["protocol"])
    if raw["file_format"] not in FORMATS:
        raise ChallengeError(f"{str(path)!r}: unknown file_format {raw['file_format']!r}")
    for i, r in enumerate(raw["runs"]):
        ok = (isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("seed"), int)
              and isinstance(r.get("keep"), int) and isinstance(r.get("budget"), float)
              and math.isfinite(r["budget"]) and (r.get("density") == "ticket" or isinstance(r.get("density"), float)))
        if not ok:
            raise ChallengeError(f"{str(path)!r}: run {i} is malformed: {r!r}")
    ids = [r["id"] for r in raw["runs"]]
    if len(set(ids)) != len(ids) or not ids:
        raise ChallengeError(f"{str(path)!r}: the run ids must be unique and at least one, got {ids}")
    return Manifest(raw, path)
