"""Foundation subcommands: `tasks`, `plant`, `show`, `info`, `metrics`."""
from __future__ import annotations

import argparse
import json

from ..arguments import depth_type, output_file, seed_type, width_type
from . import command


def ticket_table(depth: int | None = None, width: int = 100) -> list[dict]:
    """One row per task: minimum depth, ticket size at `depth` (default: the minimum) and its test performance."""
    from .. import plant, tasks
    from ..arguments import depth as check_depth

    built = [task for task in map(tasks.get, tasks.available()) if task.builds_ticket]
    if depth is not None:
        depth = check_depth(depth)
        lowest = min((task.min_depth for task in built), default=1)
        if depth < lowest:
            raise ValueError(f"depth {depth} is below every task's minimum depth; allowed: depth >= {lowest}")
    rows = []
    for task in built:
        name = task.name
        d = task.min_depth if depth is None else max(depth, task.min_depth)
        ticket = task.ticket(d)
        data = task.data(seed=0)
        perf = task.evaluate(ticket(data.x_test), data.y_test)
        net = plant(ticket, width=width, seed=0)
        rows.append({
            "task": name, "kind": task.kind, "min_depth": task.min_depth, "depth": d,
            "ticket_widths": "-".join(map(str, ticket.widths)), "ticket_nnz": ticket.nnz,
            "ticket_weight_density": net.ticket_weight_density, "ticket_density": net.ticket_density,
            "ticket_test_loss": perf["loss"], "ticket_test_accuracy": perf.get("accuracy"),
            "hiding_median_percentile": net.hiding["median_percentile"],
        })
    return rows


def print_rows(rows: list[dict]) -> None:
    """Print dict rows as an aligned text table (pandas does the formatting)."""
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.float_format", "{:.4g}".format):
        print(pd.DataFrame(rows).to_string(index=False))


@command("tasks", help="list the tasks with their minimum depth, ticket size and ticket performance")
class TasksCommand:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--depth", type=depth_type, default=None, help="ticket depth (default: each task's minimum)")
        p.add_argument("--width", type=width_type, default=100, help="host width used for the density columns")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        print_rows(ticket_table(args.depth, args.width))
        return 0


def describe(net, task_name: str | None) -> dict:
    """Summary numbers of a planted network (and its ticket's test performance when the task is known)."""
    from .. import tasks

    info = {
        "task": task_name, "depth": net.depth, "widths": net.widths, "ticket_nnz": net.ticket.nnz,
        "ticket_widths": net.ticket.widths, "ticket_density": net.ticket_density,
        "ticket_weight_density": net.ticket_weight_density, "output_scale": net.output_scale,
        "hiding_median_percentile": net.hiding.get("median_percentile"),
        "hiding_layers": net.hiding.get("layers"),
    }
    if task_name in tasks.available():
        task = tasks.get(task_name)
        data = task.data(seed=net.config.get("seed", 0))
        perf = task.evaluate(net.ticket(data.x_test), data.y_test)
        info.update({f"ticket_test_{k}": v for k, v in perf.items()})
        masked = net.forward(data.x_test, net.ticket_mask) / net.output_scale
        info["planted_test_loss"] = task.evaluate(masked, data.y_test)["loss"]
    return info


def print_description(info: dict) -> None:
    for key, value in info.items():
        if key == "hiding_layers":
            for i, layer in enumerate(value or []):
                print(f"  layer {i}: ticket weights {layer['n']:>5d}  median |w| percentile "
                      f"{layer['median_percentile']:.3f}  KS {layer['ks']:.3f}")
            continue
        print(f"{key:>26s}: {value:.6g}" if isinstance(value, float) else f"{key:>26s}: {value}")


@command("plant", help="plant a task's ticket in a random host and save the planted network")
class PlantCommand:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        from .. import host_init, tasks

        p.add_argument("--task", required=True, choices=tasks.available())
        p.add_argument("--depth", type=depth_type, default=None, help="number of linear layers (default: task minimum)")
        p.add_argument("--width", type=width_type, default=100, help="host width, or comma-separated per hidden layer")
        p.add_argument("--seed", type=seed_type, default=0)
        p.add_argument("--init", default="he-scaled", choices=host_init.available())
        p.add_argument("--out", default=None, help="where to save the planted network (.pt)")
        p.add_argument("--json", default=None, help="also write the summary as JSON here")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from .. import plant, tasks

        task = tasks.get(args.task)
        out = output_file(args.out, "--out") if args.out else None  # before the work, not after it
        json_out = output_file(args.json, "--json") if args.json else None
        depth = task.min_depth if args.depth is None else args.depth
        net = plant(task.ticket(depth), width=args.width, seed=args.seed, init=args.init)
        net.config["task"] = task.name
        info = describe(net, task.name)
        print_description(info)
        if out:
            net.save(out)
            print(f"saved to {out}")
        if json_out:
            with open(json_out, "w") as fh:
                json.dump(info, fh, indent=2)
        return 0


@command("show", help="describe a planted network saved by `plantseek plant --out`")
class ShowCommand:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("path", help="a .pt file written by `plantseek plant --out`")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from .. import load

        net = load(args.path)
        print_description(describe(net, net.config.get("task")))
        return 0


@command("info", help="versions, devices and whether the native core loaded")
class InfoCommand:
    @staticmethod
    def run(args: argparse.Namespace) -> int:
        import torch

        from .. import __version__, native
        from ..device import available_devices, cuda_devices

        print(f"plantseek {__version__}, torch {torch.__version__}, {available_devices()}")
        for line in native.describe(cuda_devices()):
            print(f"  {line}")
        return 0


def metrics_table() -> str:
    """`plantseek metrics`: every declared metric (`plantseek.metric_schema`) as aligned text, in table order."""
    from ..metric_schema import table

    head = ("name", "per-layer", "unit", "protocols", "doc")
    rows = [(r["name"], "yes" if r["per_layer"] else "", r["unit"], r["protocols"],
             r["doc"] + ("" if r["when"] == "always" else f" [{r['when']}]") + (" (headline)" if r["headline"] else ""))
            for r in table()]
    widths = [max(len(row[i]) for row in (head, *rows)) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in (head, *rows))


@command("metrics", help="list every metric a run reports: name, per-layer, unit, protocols and what it means")
class MetricsCommand:
    @staticmethod
    def run(args: argparse.Namespace) -> int:
        print(metrics_table())
        return 0
