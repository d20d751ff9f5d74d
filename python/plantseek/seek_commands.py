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


# options parsed by a plantseek.arguments check rather than by the default's type
OPTION_TYPES = {"depth": depth_type, "width": width_type, "seed": seed_type, "density": parse_density}
# boolean options whose --no-* flag is not spelled from the option's name
FLAG_NAMES = {"dense_baseline": "--no-dense"}


def _shown(value: Any) -> str:
    """A default as it would be typed on the command line."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def add_seek_options(p: argparse.ArgumentParser) -> None:
    """One option per key of `seek.DEFAULTS`, its help from `seek.OPTION_DOCS` and its choices from
    `seek.option_choices`; booleans are --no-* (or --*) flags and pruner_options is a repeatable
    --pruner-option KEY=VALUE."""
    from .seek import DEFAULTS, OPTION_DOCS, option_choices

    for key, default in DEFAULTS.items():
        doc, flag = OPTION_DOCS[key], "--" + key.replace("_", "-")
        if key == "pruner_options":
            p.add_argument("--pruner-option", dest=key, action="append", default=[], metavar="KEY=VALUE",
                           help=f"{doc}; repeatable, the value read as JSON when it parses")
        elif isinstance(default, bool):
            name = FLAG_NAMES.get(key, "--no-" + key.replace("_", "-") if default else flag)
            p.add_argument(name, dest=key, action="store_false" if default else "store_true", default=default,
                           help=f"turn {'off' if default else 'on'}: {doc} (default: {_shown(default)})")
        else:
            kind = OPTION_TYPES.get(key) or (type(default) if isinstance(default, (int, float)) else str)
            p.add_argument(flag, dest=key, type=kind, default=default, choices=option_choices(key),
                           help=f"{doc} (default: {_shown(default)})")


@command("seek", help="plant a ticket, run a pruner under a protocol, train and measure the found network")
class SeekCommand:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add_seek_options(p)
        p.add_argument("--json", metavar="PATH", help="also write config and metrics as JSON")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from .seek import DEFAULTS, seek

        kwargs = {key: getattr(args, key) for key in DEFAULTS}
        kwargs["pruner_options"] = dict(parse_option(o) for o in args.pruner_options) or None
        json_out = output_file(args.json, "--json") if args.json else None  # before the run, not after it
        res = seek(**kwargs)
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
