"""Bytes per run of the stored masks (`plantseek.mask_io.pack`: bit-packed, zlib, shapes in a header).

circle, depth 4, widths 100 and 1000, seed 0: the ticket mask, and the masks of `random` (the hardest to
compress: kept positions are independent) and `magnitude` at densities 0.1 and 0.01, against the bit-packed
size before compression and the entropy bound (prunable parameters x H(kept fraction) / 8 bytes, which no
position-independent coding beats); the zlib level the store uses against level 9, and pack/unpack times.
Writes the section "Stored masks" of bench/RESULTS.md (tests/test_mask_io.py recomputes the sizes).

    python bench/bench_masks.py
"""
from __future__ import annotations

import math
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from results import machine, write_section  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import plantseek  # noqa: E402
from plantseek import mask_io, pruners  # noqa: E402

WIDTHS = (100, 1000)
MASKS = (("ticket", "ticket"), ("random", 0.1), ("random", 0.01), ("magnitude", 0.1), ("magnitude", 0.01))
HEADING = "Stored masks"


def masks_of(net, pruner: str, density):
    if pruner == "ticket":
        return net.ticket_mask
    return pruners.get(pruner).prune(net, None, density, generator=torch.Generator().manual_seed(0))


def _entropy_bytes(kept: int, total: int) -> float:
    p = kept / total
    return 0.0 if p in (0.0, 1.0) else total * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8


def rows(timing: bool = False) -> list[dict]:
    """One row per (width, mask): sizes in bytes (deterministic for a zlib build), and times if asked."""
    out = []
    for width in WIDTHS:
        net = plantseek.plant("circle", width=width, depth=4, seed=0)
        for pruner, density in MASKS:
            m = masks_of(net, pruner, density)
            blob = mask_io.pack(m)
            tensors = [t.numpy() for pair in m for t in pair]
            total, kept = sum(t.size for t in tensors), int(sum(t.sum() for t in tensors))
            body = b"".join(np.packbits(t.reshape(-1), bitorder="little").tobytes() for t in tensors)
            row = {"width": width, "mask": pruner if pruner == "ticket" else f"{pruner} {density}",
                   "params": total, "kept": kept, "stored": len(blob), "packed": len(body),
                   "level9": len(blob) - len(zlib.compress(body, mask_io.ZLIB_LEVEL)) + len(zlib.compress(body, 9)),
                   "entropy": _entropy_bytes(kept, total)}
            if timing:
                row["pack_ms"] = 1e3 * _best(lambda: mask_io.pack(m))
                row["unpack_ms"] = 1e3 * _best(lambda: mask_io.unpack(blob))
            out.append(row)
    return out


def _best(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def table(rs: list[dict]) -> str:
    """The sizes table (what the test recomputes)."""
    lines = ["| width | mask | parameters | kept | stored (bytes) | bits per parameter | bit-packed | zlib level 9 "
             "| entropy bound |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rs:
        lines.append(f"| {r['width']} | {r['mask']} | {r['params']} | {r['kept']} | {r['stored']} | "
                     f"{8 * r['stored'] / r['params']:.3f} | {r['packed']} | {r['level9']} | {r['entropy']:.0f} |")
    return "\n".join(lines)


def timing_table(rs: list[dict]) -> str:
    lines = ["| width | mask | pack (ms) | unpack (ms) |", "|---:|---|---:|---:|"]
    lines += [f"| {r['width']} | {r['mask']} | {r['pack_ms']:.1f} | {r['unpack_ms']:.1f} |" for r in rs]
    return "\n".join(lines)


def main() -> None:
    rs = rows(timing=True)
    body = "\n".join([
        f"Machine: {machine()}; zlib {zlib.ZLIB_RUNTIME_VERSION}. Written by `python bench/bench_masks.py`.",
        "",
        "Bytes each run's found mask takes in the results database (`masks` column, `plantseek.mask_io.pack`: "
        f"every weight and bias mask bit-packed, zlib level {mask_io.ZLIB_LEVEL}, shapes in a "
        "header), circle, depth 4, seed 0. Stored includes the header; bit-packed is before compression; "
        "the entropy bound is what any coding of independent kept positions needs at that density.",
        "",
        table(rs),
        "",
        "Time to pack (on the sweep worker, once per run) and unpack one mask:",
        "",
        timing_table(rs),
    ])
    print(body)
    write_section(HEADING, body)


if __name__ == "__main__":
    main()
