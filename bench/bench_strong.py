"""The strong protocol's cost on one shape of the paper-scale file: edge-popup's batched search, native
(`plantseek.kernels.scores.score_search`) against its PyTorch reference (`score_search_reference`: one
elementwise op per step and layer), and the shape's runs as one batch (`make_chunks`'s default for strong,
`MAX_BATCH_BY_PROTOCOL`) against batches of `DEFAULT_MAX_BATCH`.

    python bench/bench_strong.py                  # circle, depth 9, width 100: about 8 minutes here
    python bench/bench_strong.py --task relu --depth 4

Rewrites the section "Strong protocol" of bench/RESULTS.md, unless --no-write.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from results import machine, write_section  # noqa: E402

import plantseek  # noqa: E402
from plantseek.kernels import scores as K  # noqa: E402
from plantseek.sweep import load_sweep  # noqa: E402
from plantseek.sweep.executors import DEFAULT_MAX_BATCH, make_chunks  # noqa: E402


def timed(chunks) -> tuple[float, list]:
    """Seconds for the chunks through `plantseek.seek_batch` (as the local executor runs them), and the results."""
    t0 = time.perf_counter()
    out = [r for c in chunks for r in plantseek.seek_batch([dict(x.seek_kwargs(), progress=False) for x in c])]
    return time.perf_counter() - t0, out


def same_masks(a, b) -> bool:
    return all(not isinstance(x, BaseException) and not isinstance(y, BaseException)
               and all(torch.equal(p, q) and torch.equal(r, s) for (p, r), (q, s) in zip(x.masks, y.masks))
               for x, y in zip(a, b))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=str(HERE.parent / "examples" / "paper_scale.toml"))
    ap.add_argument("--task", default="circle")
    ap.add_argument("--depth", type=int, default=9)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()
    import importlib

    edge_popup = importlib.import_module("plantseek.pruners.edge_popup")
    seek_module = importlib.import_module("plantseek.seek")
    runs = [r for r in load_sweep(args.file).runs
            if r.protocol == "strong" and r.task == args.task and r.depth == args.depth and r.width == 100]
    if not runs:
        raise SystemExit(f"no strong runs of {args.task} depth {args.depth} width 100 in {args.file}")
    small = make_chunks(runs, DEFAULT_MAX_BATCH)
    default = make_chunks(runs)
    rows = []

    seek_module.clear_caches()
    real = edge_popup.score_search
    edge_popup.score_search = K.score_search_reference
    try:
        t_ref, ref = timed(small[:1])
    finally:
        edge_popup.score_search = real
    seek_module.clear_caches()
    t_nat, nat = timed(small[:1])
    rows.append(f"| one batch of {len(small[0])} runs | PyTorch reference search | {t_ref:.1f} | native search | "
                f"{t_nat:.1f} | **{t_ref / t_nat:.2f}x** | {'yes' if same_masks(ref, nat) else 'NO'} |")
    seek_module.clear_caches()
    t_small, out_small = timed(small)
    seek_module.clear_caches()
    t_default, out_default = timed(default)
    rows.append(f"| all {len(runs)} runs | {len(small)} batches of at most {DEFAULT_MAX_BATCH} | {t_small:.1f} | "
                f"{len(default)} batch(es) (the default for strong) | {t_default:.1f} | **{t_small / t_default:.2f}x** | "
                f"{'yes' if same_masks(out_small, out_default) else 'NO'} |")
    body = "\n".join([
        f"`python bench/bench_strong.py --task {args.task} --depth {args.depth}`: the file's strong runs of "
        f"{args.task}, depth {args.depth}, width 100 (every pruner, density and seed, edge-popup and "
        f"edge-popup-annealed among them), through `plantseek.seek_batch` as the local executor runs them, "
        f"caches cleared before each side. The reference search is the same arithmetic in PyTorch ops "
        f"(thresholds by `torch.topk`); both sides batch edge-popup and edge-popup-annealed together.",
        "",
        f"Machine: {machine()}; load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "",
        "| runs | before | seconds | after | seconds | speed-up | same masks |",
        "|---|---|---:|---|---:|---:|---|",
        *rows,
    ])
    print(body)
    if not args.no_write:
        write_section("Strong protocol", body)


if __name__ == "__main__":
    main()
