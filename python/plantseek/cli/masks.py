"""Subcommand `masks`: list the runs of a results database that have a stored mask, or write one run's mask to
``.safetensors`` / ``.npz`` (`plantseek.mask_io`; read it back with `plantseek.load_masks`)."""
from __future__ import annotations

import argparse
import json

from . import command

KEY_CHARS = 12  # the listing shows this many characters of each key, more where that is not unique


def _short(keys: list[str]) -> int:
    """The shortest prefix length (at least KEY_CHARS) that tells all `keys` apart."""
    n = KEY_CHARS
    while n < max((len(k) for k in keys), default=0) and len({k[:n] for k in keys}) < len(keys):
        n += 1
    return n


def _listing(db: str, records: list[dict]) -> str:
    with_masks = [r for r in records if r.get("mask_bytes")]
    head = f"{db}: {len(with_masks)} of {len(records)} runs have a stored mask"
    if len(records) > len(with_masks):
        head += " (the others failed, or were stored before masks were kept)"
    if not with_masks:
        return head
    n = _short([r["key"] for r in records])
    cols = ("task", "depth", "width", "protocol", "pruner", "density", "seed")
    rows = []
    for r in with_masks:
        c, kept = r["config"], r["metrics"].get("kept_density")
        rows.append([r["key"][:n]] + [json.dumps(c[k]) if isinstance(c.get(k), list) else str(c.get(k, ""))
                                      for k in cols]
                    + [f"{kept:.4g}" if isinstance(kept, (int, float)) else "", str(r["mask_bytes"])])
    names = ["key", *cols, "kept_density", "bytes"]
    widths = [max(len(x), *(len(row[j]) for row in rows)) for j, x in enumerate(names)]
    lines = [head] + ["  ".join(v.ljust(w) if j == 0 else v.rjust(w) for j, (v, w) in enumerate(zip(row, widths)))
                      for row in [names] + rows]
    return "\n".join(lines)


@command("masks", help="list the runs with a stored mask, or write one run's mask to .safetensors / .npz")
class MasksCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("db", metavar="DB", help="results database")
        parser.add_argument("--run", metavar="KEY", help="the run: its key or a unique start of it (as listed)")
        parser.add_argument("--out", metavar="FILE",
                            help="write the run's masks here, keyed layers.0.weight, layers.0.bias, ...; the "
                                 "format follows the suffix (.safetensors or .npz); read back with "
                                 "plantseek.load_masks")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from .. import mask_io
        from ..store import ResultStore

        if args.out and args.run is None:
            raise ValueError("--out needs --run KEY (plantseek masks DB lists the runs)")
        if args.out:
            mask_io.file_format(args.out)  # a bad suffix before reading anything
        with ResultStore(args.db, readonly=True) as store:
            if args.run is None:
                print(_listing(args.db, store.records()))
                return 0
            key = store.resolve_key(args.run)
            blob = store.masks(key)
            record = next(r for r in store.records() if r["key"] == key)
        if blob is None:
            why = "it failed" if record["status"] == "failed" else "it was stored before masks were kept"
            raise ValueError(f"run {key} has no stored mask ({why})")
        if not args.out:
            shapes = mask_io.shapes(blob)
            masks = mask_io.unpack(blob)
            print(f"run {key}: {len(shapes)} layers, {len(blob)} bytes stored")
            for i, ((ws, bs), (wm, bm)) in enumerate(zip(shapes, masks)):
                print(f"  layers.{i}.weight {list(ws)} kept {int(wm.sum())}; "
                      f"layers.{i}.bias {list(bs)} kept {int(bm.sum())}")
            return 0
        path = mask_io.write_masks(args.out, blob, metadata={"run": key, "config": record["config"]})
        print(f"wrote the masks of run {key} ({len(mask_io.shapes(blob))} layers) to {path}")
        return 0
