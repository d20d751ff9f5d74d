"""CLI subcommands of the seeking part: `plantseek seek` and `plantseek pruners`."""
from __future__ import annotations

import argparse
import json
import math
from typing import Any

from .arguments import depth_type, output_file, seed_type, width_type
from .cli import command

HEADLINE = [
    "test_loss", "test_accuracy", "test_loss_rescaled", "test_loss_planted_scale", "output_scale_fitted",
    "ticket_test_loss", "ticket_test_accuracy", "dense_test_loss", "dense_test_accuracy",
    "requested_density", "density", "weight_density", "ticket_density", "effective_density",
    "recall", "functional_recall", "precision", "f1", "jaccard", "ticket_survived", "dead_neurons", "layer_collapse",
    "hiding_median_percentile", "train_time_s",
]
LAYER_COLUMNS = ["layer_density", "ticket_layer_density", "recall_layer", "functional_recall_layer", "precision_layer"]


def parse_option(text: str) -> tuple[str, Any]:
    """'key=value' with the value read as JSON when it parses (numbers, true/false, null, lists), else a string."""
    if "=" not in text:
        raise ValueError(f"--pruner-option needs key=value, got {text!r}")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ValueError(f"--pruner-option needs a key before '=', got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def parse_density(text: str) -> float | str:
    """--density: the text as a number when it is one, then the one rule `plantseek.pruners.parse_density`."""
    from .pruners.base import parse_density as rule

    try:
        value: float | str = float(text)
    except ValueError:
        value = text
    try:
        return rule(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fmt(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        if v == 0 or 1e-3 <= abs(v) < 1e5:
            return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) >= 1 else f"{v:.4g}"
        return f"{v:.3e}"
    return str(v)


def format_table(metrics: dict) -> str:
    """The headline metrics as two columns, then a per-layer table."""
    rows = [(k, _fmt(metrics[k])) for k in HEADLINE if k in metrics]
    width = max(len(k) for k, _ in rows) if rows else 0
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    layers = sorted({int(k.rsplit("_", 1)[1]) for k in metrics if k.startswith("layer_density_")})
    if layers:
        head = ["layer"] + LAYER_COLUMNS
        table = [head] + [[str(l)] + [_fmt(metrics.get(f"{c}_{l}", "")) for c in LAYER_COLUMNS] for l in layers]
        widths = [max(len(r[i]) for r in table) for i in range(len(head))]
        lines.append("")
        for r in table:
            lines.append("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    return "\n".join(lines)


def _json_safe(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return repr(v)


@command("seek", help="plant a ticket, run a pruner under a protocol, train and measure the found network")
class SeekCommand:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--task", default="circle", help="task name (plantseek tasks)")
        p.add_argument("--depth", type=depth_type, default=4, help="number of linear layers (the paper's depth - 1)")
        p.add_argument("--width", type=width_type, default=100, help="hidden width, or a comma-separated list")
        p.add_argument("--pruner", default="synflow", help="pruner name (plantseek pruners)")
        p.add_argument("--pruner-option", action="append", default=[], metavar="KEY=VALUE",
                       help="pruner option, repeatable (e.g. iterations=1)")
        p.add_argument("--density", type=parse_density, default=0.1, help="kept fraction in (0, 1], or 'ticket'")
        p.add_argument("--protocol", default="singleshot", help="singleshot, multishot or strong")
        p.add_argument("--epochs", type=int, default=10)
        p.add_argument("--seed", type=seed_type, default=0)
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
        p.add_argument("--dtype", default="float32", help="float32 or float64")
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--batch-size", type=int, default=32)
        p.add_argument("--rounds", type=int, default=10, help="multishot rounds")
        p.add_argument("--round-epochs", type=int, default=5, help="multishot epochs per round")
        p.add_argument("--scope", choices=["global", "layer"], default=None, help="pruning scope (default: the pruner's)")
        p.add_argument("--no-prune-bias", action="store_true", help="keep every bias (biases are not prunable)")
        p.add_argument("--n-samples", type=int, default=10_000)
        p.add_argument("--noise", type=float, default=0.01)
        p.add_argument("--pruning-samples", type=int, default=40)
        p.add_argument("--impl", choices=["auto", "dense", "sparse"], default="auto", help="masked layer implementation")
        p.add_argument("--rescale", choices=["fit", "fit-even", "none"], default="fit",
                       help="weak protocols: 'fit' rescales each masked network to its fitted output scale and "
                            "balances its neurons before training (function-preserving); 'fit-even' only spreads "
                            "the scale over the layers; 'none' is the paper's protocol")
        p.add_argument("--no-dense", action="store_true", help="skip the dense-host baseline")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        p.add_argument("--json", metavar="PATH", help="also write config and metrics as JSON")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from .seek import seek

        options = dict(parse_option(o) for o in args.pruner_option)
        json_out = output_file(args.json, "--json") if args.json else None  # before the run, not after it
        res = seek(
            task=args.task, depth=args.depth, width=args.width, pruner=args.pruner,
            pruner_options=options or None, density=args.density, protocol=args.protocol, epochs=args.epochs,
            seed=args.seed, device=args.device, dtype=args.dtype, lr=args.lr, batch_size=args.batch_size,
            rounds=args.rounds, round_epochs=args.round_epochs, scope=args.scope, prune_bias=not args.no_prune_bias,
            n_samples=args.n_samples, noise=args.noise, pruning_samples=args.pruning_samples, impl=args.impl, rescale=args.rescale,
            dense_baseline=not args.no_dense, progress=not args.no_progress,
        )
        c = res.config
        print(f"{c['task']}  depth {c['depth']}  width {c['width']}  {c['pruner']}"
              f"{'' if not c['pruner_options'] else ' ' + json.dumps(c['pruner_options'], default=repr)}"
              f"  density {c['density']}  {c['protocol']}  epochs {c['epochs']}  seed {c['seed']}"
              f"  ({c['device']}, {c['dtype']})")
        print(format_table(res.metrics))
        if json_out:
            with open(json_out, "w") as fh:
                json.dump(_json_safe({"config": c, "metrics": res.metrics}), fh, indent=2, sort_keys=True)
            print(f"wrote {args.json}")
        return 0


@command("pruners", help="list the registered pruners, one line each")
class PrunersCommand:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        pass

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from . import pruners

        desc = pruners.descriptions()
        width = max((len(n) for n in desc), default=0)
        for name, line in desc.items():
            print(f"{name:<{width}}  {line}")
        return 0
