"""The paper's grid on this machine: one seed per cell of a sweep file (examples/paper_scale.toml by default), or a
stratified sample of its cells, timed per part through the sweep's own path (`make_chunks` groups, then
`plantseek.seek_batch` per chunk, as the local executor runs them), with the full grid's time extrapolated and a
roofline: the multiply-adds each part asked for per second, against this machine's GEMM rate measured in the
same run.

- A *cell* is a run of the file without its seed; a *part* is a protocol (``(paper protocol)``: no rescale;
  SET/RigL for ``dynamic``), ``wide`` for hosts wider than 100.
- Extrapolation (``--mode strata``, the default): the sweep's own groups of the file (every seed, `make_chunks`),
  by shape (task, width, depth), every k-th of each shape's groups (at least one) run whole; a part's hours =
  the sum over its shapes of the probed groups' seconds x the shape's groups / its probed ones. ``--mode
  groups`` takes every k-th group of a part whatever its shape: its groups come sorted by shape, so k can fall
  in step with them (the 54 strong groups, 6 per shape, sampled at k = 20 gave three depth-2 groups, while a
  depth-9 group takes about 20x as long as a depth-2 one). ``--mode cells`` (one seed per cell, as issue 18
  first proposed) batches only the few probed runs that share a group, so every group pays its fixed costs (a
  training loop's Python per step, planting, data, the dense baseline) for a handful of runs instead of about
  60: measured here it overestimates the singleshot part about 8x (0.94 s a run against 0.12 s in a group of 55).
- Multiply-adds (the issue's arithmetic): kept weights x training samples x epochs x 3 (forward and two
  backward products) per run; multishot sums its rounds (round r keeps density^(r/rounds)); gradual and strong
  count their dense weights (gradual starts dense; edge-popup scores every weight); one dense baseline per chunk
  and seed. Runs that train identically (`plantseek.train.identical_networks`: a seed's density-1 runs and its
  dense baseline, multishot's first round) count as asked for although they train once; the table says how
  many of the trainings without a mask schedule were such copies. The GEMM rate: `torch.bmm` of 26 networks' [32 x 100] x [100 x 100] products (float32, one
  thread: the width-100 shape of a grid group) and one [2048 x 2048] SGEMM on every thread. The roofline: a
  part's multiply-adds at that bmm rate on every thread (its hours if nothing but such products cost time).

    python bench/grid.py                          # every cell (1711 for paper_scale.toml: hours here)
    python bench/grid.py --sample 0.05            # every 20th cell of each part (at least one)
    python bench/grid.py --parts singleshot --sample 0.2
    python bench/grid.py --mode cells --sample 0.05   # one seed per cell instead of the file's own groups
Stores each probed part's row in bench/grid_results.json (a part's latest probe replaces its row; the other
parts keep theirs) and writes the section "Paper grid" of bench/RESULTS.md from it, unless --no-write.
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shlex
import sys
import time
from collections import OrderedDict
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
HEADING = "Paper grid"
STORE = HERE / "grid_results.json"  # each part's latest probe (the section is rendered from it)


def part_of(run) -> str:
    width = run.width if isinstance(run.width, int) else max(run.width)
    name = run.protocol
    if run.protocol == "dynamic":
        name += " (RigL)" if run.options.get("grow", "gradient") == "gradient" else " (SET)"
    if run.options.get("rescale") == "none":
        name += " (paper protocol)"
    return name + (" wide" if width > 100 else "")


def cells_of(runs) -> "OrderedDict[str, list]":
    cells: OrderedDict[str, list] = OrderedDict()
    for r in runs:
        d = r.to_dict()
        d.pop("seed")
        cells.setdefault(json.dumps(d, sort_keys=True, default=str), []).append(r)
    return cells


def layer_sizes(run) -> list[int]:
    """Weights and biases per layer of the run's host (MLP tasks)."""
    S = importlib.import_module("plantseek.seek")  # the module (the package binds `seek` to the function)
    cfg = S.normalize(run.seek_kwargs("cpu"))
    net = S._planted(cfg)
    return [w.numel() + b.numel() for w, b in zip(net.weights, net.biases)]


def n_train(run) -> int:
    S = importlib.import_module("plantseek.seek")
    return int(S._data(S.normalize(run.seek_kwargs("cpu"))).x_train.shape[0])


def multiply_adds(run, metrics: dict, total: int, samples: int) -> float:
    """The run's nominal training multiply-adds (see the module docstring)."""
    o = run.options
    epochs = int(run.epochs or 10)
    kept = float(metrics.get("kept_params", total))
    if run.protocol == "multishot":
        rounds, round_epochs = int(o.get("rounds", 10)), int(o.get("round_epochs", 5))
        density = kept / total
        done = sum(density ** (r / rounds) for r in range(rounds)) * total * round_epochs
        return 3.0 * samples * (done + kept * epochs)
    if run.protocol in ("gradual", "strong"):
        kept = total
    return 3.0 * samples * kept * epochs


def gemm_rates() -> tuple[float, float]:
    """(G multiply-adds/s of 26 x [32x100]x[100x100] bmm on one thread, of one 2048^2 SGEMM on all threads)."""
    import torch

    threads = torch.get_num_threads()
    a, b = torch.randn(26, 32, 100), torch.randn(26, 100, 100)
    torch.set_num_threads(1)
    best = math.inf
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(200):
            torch.bmm(a, b)
        best = min(best, (time.perf_counter() - t0) / 200)
    small = 26 * 32 * 100 * 100 / best / 1e9
    torch.set_num_threads(threads)
    x, y = torch.randn(2048, 2048), torch.randn(2048, 2048)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        torch.mm(x, y)
        best = min(best, time.perf_counter() - t0)
    return small, 2048 ** 3 / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--file", default=str(HERE.parent / "examples" / "paper_scale.toml"))
    ap.add_argument("--sample", type=float, default=1.0, help="fraction of each part's cells to probe (evenly spaced)")
    ap.add_argument("--parts", default="", help="comma-separated substrings: probe only parts whose name has one")
    ap.add_argument("--skip", default="", help="comma-separated substrings: leave out parts whose name has one")
    ap.add_argument("--mode", choices=("strata", "groups", "cells"), default="strata",
                    help="strata: the file's own groups, a sample of each shape's; groups: every k-th of a part's "
                         "groups; cells: one seed per cell")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    load = os.getloadavg()
    import plantseek
    from plantseek.sweep import load_sweep
    from plantseek.sweep.executors import make_chunks

    sweep = load_sweep(args.file)
    cells = cells_of(sweep.runs)
    by_part: OrderedDict[str, list] = OrderedDict()
    for members in cells.values():
        by_part.setdefault(part_of(members[0]), []).append(members)
    wanted = [p.strip() for p in args.parts.split(",") if p.strip()]
    runs_by_part: OrderedDict[str, list] = OrderedDict()
    for r in sweep.runs:
        runs_by_part.setdefault(part_of(r), []).append(r)
    T = importlib.import_module("plantseek.train")
    asked_distinct = [0, 0]  # networks handed to `train` without a mask schedule, and the distinct ones among them
    real_identical = T.identical_networks

    def counted(*a, **k):
        rep = real_identical(*a, **k)
        asked_distinct[0] += len(rep)
        asked_distinct[1] += len(set(rep))
        return rep

    T.identical_networks = counted
    small, big = gemm_rates()
    print(f"GEMM: {small:.1f} G multiply-adds/s (26 x [32x100]x[100x100], 1 thread), {big:.1f} G/s (2048^2, all)",
          flush=True)
    rows, t_start = [], time.perf_counter()
    for part, part_cells in by_part.items():
        if wanted and not any(w in part for w in wanted):
            continue
        if any(k.strip() and k.strip() in part for k in args.skip.split(",")):
            continue
        step = max(1, round(1 / args.sample)) if args.sample < 1 else 1
        if args.mode == "cells":  # one seed per cell, every step-th cell, grouped as the sweep groups them
            chunks = make_chunks([members[0] for members in part_cells[::step]])
            scales = [sum(len(m) for m in part_cells) / max(1, sum(len(c) for c in chunks))] * len(chunks)
        elif args.mode == "groups":  # the file's own groups (every seed), every step-th of them
            every = make_chunks(runs_by_part[part])
            chunks = every[::step]
            scales = [len(every) / len(chunks)] * len(chunks)
        else:  # strata: every step-th group of each shape (at least one), each standing for its shape's groups
            strata: OrderedDict[str, list] = OrderedDict()
            for c in make_chunks(runs_by_part[part]):
                strata.setdefault(json.dumps([c[0].task, c[0].width, c[0].depth], default=str), []).append(c)
            chunks, scales = [], []
            for members in strata.values():
                picked = members[::step]
                chunks += picked
                scales += [len(members) / len(picked)] * len(picked)
        runs = [r for c in chunks for r in c]
        sizes = {id(r): layer_sizes(r) for r in runs}
        samples = {id(r): n_train(r) for r in runs}
        importlib.import_module("plantseek.seek").clear_caches()
        seconds, scaled, work, done, failed = 0.0, 0.0, 0.0, 0, 0
        asked_distinct[:] = [0, 0]
        for chunk, scale in zip(chunks, scales):
            t0 = time.perf_counter()
            out = plantseek.seek_batch([dict(r.seek_kwargs(), progress=False) for r in chunk])
            dt = time.perf_counter() - t0
            seconds, scaled = seconds + dt, scaled + dt * scale
            seeds = {(r.task, json.dumps(r.width), r.depth, r.seed) for r in chunk}
            for r, res in zip(chunk, out):
                if isinstance(res, BaseException):
                    failed += 1
                    continue
                done += 1
                total = sum(sizes[id(r)])
                work += multiply_adds(r, res.metrics, total, samples[id(r)])
            if chunk[0].options.get("dense_baseline", True):
                work += sum(3.0 * samples[id(chunk[0])] * sum(sizes[id(chunk[0])]) * int(chunk[0].epochs or 10)
                            for _ in seeds)
        grid_runs = sum(len(m) for m in part_cells)
        hours = scaled / 3600
        rate = work / seconds / 1e9 if seconds else float("nan")
        asked, distinct = asked_distinct
        copies = 1 - distinct / asked if asked else 0.0
        rows.append(dict(part=part, cells=len(part_cells), probed=len(runs), chunks=len(chunks), failed=failed,
                         seconds=seconds, rate=rate, grid_runs=grid_runs, hours=hours, copies=copies))
        print(f"{part:32s} {len(runs):4d} runs in {len(chunks)} groups {seconds:8.1f} s  {rate:6.2f} G/s "
              f"({rate / small:.1%} of bmm)  copies {copies:.0%}  full grid {hours:6.2f} h ({grid_runs} runs)",
              flush=True)
    elapsed = time.perf_counter() - t_start
    import torch

    cores = torch.get_num_threads()
    for r in rows:  # the part's multiply-adds at the bmm rate on every core: the machine's limit for them
        r["roof"] = r["hours"] * r["rate"] / (small * cores)
        r["bmm"] = small
    print(f"probe {elapsed:.0f} s; extrapolated: {sum(r['hours'] for r in rows):.2f} h for the parts probed now, "
          f"{sum(r['roof'] for r in rows):.2f} h at the roofline ({cores} threads)")
    if args.no_write:
        return
    from results import machine, write_section

    probe = dict(machine=machine(), load=[round(v, 2) for v in load], seconds=round(elapsed),
                 command="python bench/grid.py" + "".join(" " + shlex.quote(a) for a in sys.argv[1:]),
                 bmm=round(small, 1), sgemm=round(big, 1), cores=cores, mode=args.mode)
    stored = json.loads(STORE.read_text()) if STORE.exists() else {}
    if stored.get("file") != Path(args.file).name:  # another sweep file: start afresh
        stored = {"file": Path(args.file).name, "parts": {}}
    for r in rows:
        stored["parts"][r["part"]] = dict(r, probe=probe)
    stored["parts"] = {p: stored["parts"][p] for p in by_part if p in stored["parts"]}  # the file's order
    stored.update(runs=len(sweep.runs), cells=len(cells), all_parts=list(by_part))
    STORE.write_text(json.dumps(stored, indent=1) + "\n")
    body = render(stored)
    print(body)
    write_section(HEADING, body)


def render(stored: dict) -> str:
    """The RESULTS.md section from the stored rows (each part's latest probe, `STORE`)."""
    n_runs, n_cells, all_parts = stored["runs"], stored["cells"], stored["all_parts"]
    rows = list(stored["parts"].values())
    probes: list[dict] = []
    for r in rows:
        if r["probe"] not in probes:
            probes.append(r["probe"])
    tag = {json.dumps(p, sort_keys=True): chr(ord("A") + i) for i, p in enumerate(probes)}
    total_h = sum(r["hours"] for r in rows)
    w100_h = sum(r["hours"] for r in rows if not r["part"].endswith("wide"))
    roof_h = sum(r["roof"] for r in rows)
    missing = [p for p in all_parts if p not in stored["parts"]]
    lines = [
        f"{stored['file']}: {n_runs} runs in {n_cells} cells. Each part's row comes from its latest probe (the "
        "probe column; bench/grid_results.json keeps them, and a probe of some parts leaves the others' rows as "
        "they were):",
        "",
        *[f"- {tag[json.dumps(p, sort_keys=True)]}: `{p['command']}` in {p['seconds']} s, mode {p['mode']}. "
          f"Machine: {p['machine']}; "
          f"load average at start {' / '.join(f'{v:.2f}' for v in p['load'])}. GEMM rate in the same run: "
          f"{p['bmm']} G multiply-adds/s for `torch.bmm` of 26 networks' [32 x 100] x [100 x 100] (float32, one "
          f"thread), {p['sgemm']} G/s for one 2048^2 SGEMM on every thread." for p in probes],
        "",
        "Multiply-adds per run as the module docstring of bench/grid.py counts them; fraction = achieved rate / "
        "that probe's bmm rate. Every mode runs the file's own groups (every seed, as the sweep batches them): "
        "strata, every k-th of each shape's groups (hours = per shape, the probed groups' seconds x the shape's "
        "groups / the probed ones); groups, every k-th of the part's (it can miss whole shapes: the module "
        "docstring of bench/grid.py).",
        "",
        "Copies: the share of the networks trained without a mask schedule (runs, their multishot rounds, dense "
        "baselines) that were identical to another of their batch and trained once (`plantseek.train."
        "identical_networks`); their multiply-adds still count as asked for, so a part's rate can pass the bmm rate.",
        "",
        "| part | probe | cells | probed runs | groups | failed | seconds | G multiply-adds/s | fraction of the bmm "
        "rate | copies | runs in the file | extrapolated hours | hours at the roofline |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *[f"| {r['part']} | {tag[json.dumps(r['probe'], sort_keys=True)]} | {r['cells']} | {r['probed']} | "
          f"{r['chunks']} | {r['failed']} | {r['seconds']:.1f} | {r['rate']:.2f} | {r['rate'] / r['bmm']:.1%} | "
          f"{r['copies']:.0%} | {r['grid_runs']} | {r['hours']:.2f} | {r['roof']:.2f} |" for r in rows],
        "",
        f"Extrapolated for the probed parts: **{total_h:.2f} h**, of it {w100_h:.2f} h at width 100 (goal of issue "
        "18: every width-100 experiment in at most 0.5 h, the whole file in at most 3 h)"
        + (f"; not probed: {', '.join(missing)}." if missing else "; every part of the file probed."),
        "",
        "Hours at the roofline: the part's multiply-adds (extrapolated to the file) at its probe's bmm rate on "
        "every thread, as if every product of every run ran at the speed of that one batched product and nothing "
        f"else cost time: **{roof_h:.2f} h** for the probed parts. Only skipping copies beats it.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
