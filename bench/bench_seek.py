"""Seeking benchmarks and the must-show numbers of the seeking issue.

`python bench/bench_seek.py` measures the paper's README setting (circle, depth 4 in our counting = the paper's
5, width 50, synflow, density 0.1, singleshot, 10 epochs; goal < 5 s and accuracy >= 0.9), the ticket oracle
through the protocols and batched against one-by-one training, and rewrites the "Seeking" section of
bench/RESULTS.md. `--full` adds the slow checks: edge-popup-annealed (global) at density 0.05 on relu, circle
and helix (depth 4, width 100) and multishot SynFlow on circle (depth 4, width 100) over 5 seeds.
"""
from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from results import machine, write_section  # noqa: E402

import plantseek  # noqa: E402
from plantseek import pruners  # noqa: E402

SEEK = importlib.import_module("plantseek.seek")  # the module (plantseek.seek is the function)


def fmt(v, digits=4):
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def readme_setting(seeds=(0, 1, 2)) -> str:
    rows = []
    for iterations in (100, 1):
        for dense in (True, False):
            for seed in seeds:
                SEEK.clear_caches()  # cold: planting, data and the dense baseline are part of the time
                t0 = time.perf_counter()
                r = plantseek.seek(task="circle", depth=4, width=50, pruner=pruners.get("synflow", iterations=iterations),
                                   density=0.1, protocol="singleshot", epochs=10, seed=seed, device="cpu",
                                   progress=False, dense_baseline=dense)
                dt = time.perf_counter() - t0
                m = r.metrics
                rows.append((iterations, dense, seed, dt, m["test_accuracy"], m["ticket_test_accuracy"],
                             m.get("dense_test_accuracy", float("nan"))))
    lines = ["| synflow iterations | dense baseline | seed | time (s) | test accuracy | ticket accuracy | dense accuracy |",
             "|---:|---|---:|---:|---:|---:|---:|"]
    for it, dense, seed, dt, acc, tacc, dacc in rows:
        lines.append(f"| {it} | {fmt(dense)} | {seed} | {dt:.2f} | {acc:.3f} | {tacc:.3f} | {'' if dacc != dacc else f'{dacc:.3f}'} |")
    worst = max(r[3] for r in rows)
    paper = [r for r in rows if r[0] == 1]
    lines.append("")
    lines.append(f"Slowest call {worst:.2f} s (goal < 5 s). Lowest accuracy with SynFlow as in the paper's runs (1 "
                 f"iteration): {min(r[4] for r in paper):.3f} (goal >= 0.9); with SynFlow's own default of 100 "
                 f"iterations: {min(r[4] for r in rows if r[0] == 100):.3f}. "
                 "Times are one `seek` call in a warm interpreter with cold caches (planting, data, pruning, "
                 "training, the dense baseline trained in the same batch, metrics); importing torch and plantseek "
                 "takes another ~2 s.")
    return "\n".join(lines)


def ticket_table() -> str:
    lines = ["| task | protocol | recall | test loss | ticket test loss | planted-scale loss | accuracy | ticket accuracy | fitted / planted scale |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for task in ("relu", "circle", "helix"):
        for protocol in ("strong", "singleshot", "multishot"):
            m = plantseek.seek(task=task, depth=4, width=100, pruner="ticket", density="ticket", protocol=protocol,
                               dtype="float64" if protocol == "strong" else "float32", seed=0, device="cpu",
                               progress=False, dense_baseline=False).metrics
            ratio = m["output_scale_fitted"] / m["output_scale"] if "output_scale_fitted" in m else float("nan")
            lines.append(
                f"| {task} | {protocol} | {m['recall']:.0f} | {m['test_loss']:.4g} | {m['ticket_test_loss']:.4g} | "
                f"{fmt(m.get('test_loss_planted_scale', ''))} | {fmt(m.get('test_accuracy', ''))} | "
                f"{fmt(m.get('ticket_test_accuracy', ''))} | {'' if ratio != ratio else f'{ratio:.4f}'} |")
    lines.append("")
    lines.append("Depth 4, width 100, seed 0, 10 epochs (multishot: 10 rounds of 5 epochs, then 10); strong in float64, "
                 "the others in float32. Under strong the planted-scale loss equals the ticket's to 1e-9 relative "
                 "(tested); the fitted scale gives the ticket's loss on relu, and *less* than the ticket's own on "
                 "helix, whose interpolated outputs u cos u and u sin u come out about 3.5% too small (the fitted "
                 "per-output factors are 1.035, 1.035, 1.000 times 1/output_scale). Singleshot and multishot "
                 "retrain the ticket's weights with Adam after the function-preserving rescale (rescale=\"fit\": "
                 "the planted output_scale is ~1e-4 to 1e-3); over 5 seeds and more shapes see \"Ticket oracle\".")
    return "\n".join(lines)


def batched_speed(n_runs=8, epochs=2) -> str:
    kws = [dict(task="circle", depth=4, width=100, pruner="synflow", density=0.1, protocol="singleshot",
                epochs=epochs, seed=s, device="cpu", progress=False, dense_baseline=False, dtype="float64")
           for s in range(n_runs)]
    SEEK.clear_caches()
    for kw in kws:  # plant and draw once, outside the timing
        SEEK._planted(SEEK.normalize(dict(kw)))
    t0 = time.perf_counter()
    batched = plantseek.seek_batch(kws)
    tb = time.perf_counter() - t0
    t0 = time.perf_counter()
    single = [plantseek.seek(**kw) for kw in kws]
    ts = time.perf_counter() - t0
    diff = max(abs(a.metrics["test_loss"] - b.metrics["test_loss"]) / abs(b.metrics["test_loss"]) for a, b in zip(batched, single))
    wdiff = max(float((x - y).abs().max()) for a, b in zip(batched, single) for x, y in zip(a.weights, b.weights))
    return (f"{n_runs} singleshot runs (circle, depth 4, width 100, synflow 0.1, {epochs} epochs, float64): batched "
            f"{tb:.2f} s, one by one {ts:.2f} s ({ts / tb:.1f}x); largest relative test-loss difference {diff:.1e}, "
            f"largest weight difference {wdiff:.1e}.")


def edge_popup_rows(seeds=(0, 1, 2)) -> str:
    lines = ["| task | seed | test loss (fitted scale) | accuracy | ticket test loss | ticket accuracy | recall | effective density | time (s) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for task in ("relu", "helix", "circle"):
        for seed in seeds:
            t0 = time.perf_counter()
            m = plantseek.seek(task=task, depth=4, width=100, pruner="edge-popup-annealed", density=0.05,
                               protocol="strong", scope="global", seed=seed, device="cpu", progress=False,
                               dense_baseline=False).metrics
            lines.append(f"| {task} | {seed} | {m['test_loss']:.3g} | {fmt(m.get('test_accuracy', ''), 3)} | "
                         f"{m['ticket_test_loss']:.3g} | {fmt(m.get('ticket_test_accuracy', ''), 3)} | {m['recall']:.3f} | "
                         f"{m['effective_density']:.4f} | {time.perf_counter() - t0:.1f} |")
    lines.append("")
    lines.append("edge-popup-annealed, global scope, density 0.05, depth 4, width 100, 10 epochs, SGD lr 0.1 momentum 0.9 "
                 "wd 5e-4 cosine, batch 32; goal on relu: test MSE <= 0.01.")
    return "\n".join(lines)


def edge_popup_batched(seeds=range(4)) -> str:
    kws = [dict(task="relu", depth=4, width=100, pruner="edge-popup-annealed", density=0.05, protocol="strong",
                scope="global", seed=s, device="cpu", progress=False, dense_baseline=False) for s in seeds]
    t0 = time.perf_counter()
    plantseek.seek_batch(kws)
    tb = time.perf_counter() - t0
    t0 = time.perf_counter()
    for kw in kws:
        plantseek.seek(**kw)
    to = time.perf_counter() - t0
    return (f"{len(kws)} edge-popup-annealed searches (relu, depth 4, width 100, float32) in one batched search: "
            f"{tb:.1f} s, one by one {to:.1f} s ({to / tb:.1f}x). Batched and one-by-one masks are identical in "
            f"float64 (tested); in float32 rounding differences flip top-k choices, so the found masks differ.")


def multishot_rows(seeds=range(5), densities=(0.02, 0.01)) -> str:
    kws = [dict(task="circle", depth=4, width=100, pruner="synflow", density=d, protocol="multishot", seed=s,
                device="cpu", progress=False) for d in densities for s in seeds]
    t0 = time.perf_counter()
    res = plantseek.seek_batch(kws)
    dt = time.perf_counter() - t0
    lines = ["| density | seed | test accuracy | ticket accuracy | dense accuracy | gap to ticket | recall | layer collapse |",
             "|---:|---:|---:|---:|---:|---:|---:|---|"]
    ok = {d: 0 for d in densities}
    for kw, r in zip(kws, res):
        m = r.metrics
        gap = m["ticket_test_accuracy"] - m["test_accuracy"]
        ok[kw["density"]] += gap <= 0.03
        lines.append(f"| {kw['density']} | {kw['seed']} | {m['test_accuracy']:.3f} | {m['ticket_test_accuracy']:.3f} | "
                     f"{m['dense_test_accuracy']:.3f} | {gap:+.3f} | {m['recall']:.3f} | {fmt(m['layer_collapse'])} |")
    lines.append("")
    n = len(list(seeds))
    lines.append(f"multishot SynFlow (100 iterations per pruning), 10 rounds of 5 epochs with rewinding, then 10 epochs; "
                 f"circle depth 4 width 100. Within 0.03 of the ticket's accuracy: "
                 + ", ".join(f"{ok[d]}/{n} seeds at density {d}" for d in densities)
                 + f". All {len(kws)} runs trained as one batch in {dt:.0f} s (2 shared cores).")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="also the slow checks (edge-popup, multishot; ~10 min)")
    args = ap.parse_args()
    parts = [f"Machine: {machine()}", "", "### The paper's README setting (singleshot)", "", readme_setting(),
             "", "### The ticket oracle through the protocols", "", ticket_table(),
             "", "### Batched training", "", batched_speed()]
    if args.full:
        parts += ["", "### edge-popup-annealed (strong)", "", edge_popup_rows(), "", edge_popup_batched(),
                  "", "### multishot SynFlow on circle", "", multishot_rows()]
    body = "\n".join(parts)
    print(body)
    write_section("Seeking", body)


if __name__ == "__main__":
    main()
