"""The ticket oracle under the weak protocols: does the reference row reach the ticket? (issue 14, part 1)

For relu, circle and helix at depths 2, 4 and 9 (width 100) and depth 4 at width 1000, under singleshot and
multishot, in float32 and float64, over `--seeds` seeds: the `ticket` pruner's trained performance with the
default rescale ("fit") and, in float64, with the unbalanced rule ("fit-even") and the paper's protocol ("none"), against the planted ticket's
own. At depth 9 the bound is the unplanted ticket trained the same way (its own weights, its nonzero pattern,
the same data, optimiser, rescale rule and shuffle seed): cross-entropy training moves the deep circle ticket's
class boundaries, so no rescale can reach the untrained ticket there.

Criteria (the issue's must-show): accuracy within 0.02 of the ticket's mean (depth 9: within 0.01 of the
trained unplanted ticket's); regression MSE at most 1.2x the ticket's (depth 9: 1.2x the trained unplanted
ticket's). Writes bench/oracle_results.csv and the section "Ticket oracle" of bench/RESULTS.md.

    python bench/bench_oracle.py [--seeds 5] [--quick]
"""
from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).parent))
from results import machine, write_section  # noqa: E402

import pandas as pd  # noqa: E402
import torch  # noqa: E402

import plantseek  # noqa: E402
from plantseek import protocols  # noqa: E402

SEEK = importlib.import_module("plantseek.seek")  # the module (plantseek.seek is the function)
CSV = Path(__file__).with_name("oracle_results.csv")
SHAPES = [(2, 100), (4, 100), (9, 100), (4, 1000)]


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the 95% Student t-interval."""
    from scipy import stats

    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, math.nan
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def oracle(task: str, depth: int, width: int, protocol: str, dtype: str, seeds: int, rescale: str) -> list[dict]:
    runs = [dict(task=task, depth=depth, width=width, pruner="ticket", density="ticket", protocol=protocol, seed=s,
                 dtype=dtype, dense_baseline=False, progress=False, rescale=rescale) for s in range(seeds)]
    out = []
    for s, res in enumerate(plantseek.seek_batch(runs)):
        if isinstance(res, BaseException):
            raise res
        out.append(res.metrics)
    return out


def unplanted(task: str, depth: int, dtype: str, seeds: int) -> list[float]:
    """The ticket trained in its own weights (mask: its nonzeros) under singleshot with the default rescale."""
    tk = plantseek.tasks.get(task)
    ticket = tk.ticket(depth)
    dt = getattr(torch, dtype)
    settings = protocols.Settings(task=tk)
    runs, masks = [], []
    for s in range(seeds):
        cfg = SEEK.normalize(dict(task=task, depth=depth, seed=s, dtype=dtype, progress=False))
        data = SEEK._data(cfg).to(torch.device("cpu"), dt)
        net = SimpleNamespace(weights=[w.to(dt) for w in ticket.weights], biases=[b.to(dt) for b in ticket.biases])
        gen = torch.Generator().manual_seed(SEEK.derive_seed(s, "train"))
        runs.append(protocols.Run(label=f"unplanted {task} seed {s}", net=net, data=data, train_generator=gen))
        masks.append([(w != 0, b != 0) for w, b in zip(ticket.weights, ticket.biases)])
    protocols.train_runs(runs, masks, settings, settings.epochs)
    perf = []
    for r in runs:
        if not r.ok:
            raise r.error
        o = plantseek.train.evaluate_outputs([w.unsqueeze(0) for w in r.weights], [b.unsqueeze(0) for b in r.biases],
                                             r.data.x_test.unsqueeze(0))[0]
        ev = tk.evaluate(o, r.data.y_test)
        perf.append(float(ev.get("accuracy", ev["loss"])))
    return perf


def perf_of(m: dict, prefix: str = "") -> float:
    key = f"{prefix}test_accuracy" if f"{prefix}test_accuracy" in m else f"{prefix}test_loss"
    return float(m[key])


def passes(metric: str, value: float, bound: float, deep: bool) -> bool:
    if metric == "accuracy":
        return value >= bound - (0.01 if deep else 0.02)
    return value <= 1.2 * bound


def rows(seeds: int, quick: bool) -> list[dict]:
    out = []
    shapes = [(4, 100)] if quick else SHAPES
    for task in ("relu", "circle", "helix"):
        metric = "accuracy" if plantseek.tasks.get(task).kind == "classification" else "mse"
        for depth, width in shapes:
            bound_cache: dict[str, list[float]] = {}
            for protocol in ("singleshot", "multishot"):
                for dtype in ("float32", "float64"):
                    t0 = time.perf_counter()
                    fit = oracle(task, depth, width, protocol, dtype, seeds, "fit")
                    # the comparisons in float64, skipped for the slowest cells (multishot at width 1000)
                    compare = dtype == "float64" and not (protocol == "multishot" and width >= 1000)
                    none = oracle(task, depth, width, protocol, dtype, seeds, "none") if compare else None
                    even = oracle(task, depth, width, protocol, dtype, seeds, "fit-even") if compare else None
                    m_fit, h_fit = t_interval([perf_of(m) for m in fit])
                    m_tk, _ = t_interval([perf_of(m, "ticket_") for m in fit])
                    deep = depth >= 9
                    row = dict(task=task, depth=depth, width=width, protocol=protocol, dtype=dtype, seeds=seeds,
                               metric=metric, oracle=m_fit, oracle_ci95=h_fit, ticket=m_tk,
                               fit_even=(t_interval([perf_of(m) for m in even])[0] if even else math.nan),
                               paper_protocol=(t_interval([perf_of(m) for m in none])[0] if none else math.nan))
                    if deep:
                        if dtype not in bound_cache:
                            bound_cache[dtype] = unplanted(task, depth, dtype, seeds)
                        row["unplanted_trained"] = t_interval(bound_cache[dtype])[0]
                        bound = row["unplanted_trained"]
                    else:
                        row["unplanted_trained"] = math.nan
                        bound = m_tk
                    row["criterion"] = ("accuracy >= bound - " + ("0.01" if deep else "0.02")) if metric == "accuracy" \
                        else "mse <= 1.2 x bound"
                    row["bound"] = "unplanted ticket trained" if deep else "ticket"
                    row["passes"] = passes(metric, m_fit, bound, deep)
                    row["time_s"] = time.perf_counter() - t0
                    print({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
                    out.append(row)
    return out


def fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.4g}"
    return str(v)


def table(df: pd.DataFrame) -> str:
    cols = ["task", "depth", "width", "protocol", "dtype", "metric", "oracle", "oracle_ci95", "ticket",
            "unplanted_trained", "fit_even", "paper_protocol", "passes"]
    head = ["task", "depth", "width", "protocol", "dtype", "metric", "oracle (rescale fit)", "95% CI +-",
            "ticket", "unplanted ticket trained", "rescale fit-even", "rescale none (paper)", "meets the criterion"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in df.iterrows():
        lines.append("| " + " | ".join(fmt(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="depth 4, width 100 only")
    args = ap.parse_args()
    t0 = time.perf_counter()
    df = pd.DataFrame(rows(args.seeds, args.quick))
    if not args.quick:
        df.to_csv(CSV, index=False)
    load = os.getloadavg()[0]
    body = "\n".join([
        f"Machine: {machine()}; load average {load:.1f} at the end; {time.perf_counter() - t0:.0f} s in all.",
        "",
        "The `ticket` pruner (the reference row of every table) trained under the weak protocols with the default "
        "function-preserving rescale (`rescale=\"fit\"`), mean over seeds 0.."
        f"{args.seeds - 1} with the half-width of its 95% Student t-interval, against the planted ticket's own "
        "performance and, in float64, the rule without neuron balancing (`rescale=\"fit-even\"`) and the paper's "
        "protocol (`rescale=\"none\"`; both skipped for multishot at width 1000, the slowest cells). Criteria: accuracy within 0.02 of "
        "the ticket's, MSE at most 1.2x the ticket's; at depth 9 the bound is the unplanted ticket trained the "
        "same way (accuracy within 0.01, MSE at most 1.2x). n = 10 000 (90/10), noise 0.01, Adam lr 1e-3, batch 32, "
        "10 epochs; multishot 10 rounds of 5 epochs. Written by `python bench/bench_oracle.py` "
        "(also bench/oracle_results.csv).",
        "",
        table(df),
    ])
    print(body)
    if not args.quick:
        write_section("Ticket oracle", body)


if __name__ == "__main__":
    main()
