"""CLI subcommands of the seeking part: `plantseek seek` and `plantseek pruners`."""
from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ..arguments import depth_type, output_file, parse_int, seed_type, width_type
from . import command



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
    """--density: the text as a number when it is one, then the one rule `plantseek.arguments.parse_density`."""
    from ..arguments import parse_density as rule

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
    if isinstance(v, (list, tuple)):  # a curve: its first and last points and its length
        shown = [_fmt(float(x)) for x in v] if len(v) <= 8 else (
            [_fmt(float(x)) for x in v[:4]] + ["..."] + [_fmt(float(x)) for x in v[-3:]])
        return f"[{', '.join(shown)}] ({len(v)} points)"
    return str(v)


def format_table(metrics: dict) -> str:
    """The run's metrics that are not per layer as two columns, then a per-layer table with a column per
    per-layer metric the run has; both in `plantseek.metric_schema` order."""
    from .. import metric_schema as schema

    def per_layer(key: str) -> bool:
        m = schema.lookup(key)
        return m is not None and m.per_layer

    rows = [(k, _fmt(metrics[k])) for k in schema.order(metrics) if not per_layer(k)]
    width = max(len(k) for k, _ in rows) if rows else 0
    lines = [f"{k:<{width}}  {v}" for k, v in rows]
    layers = sorted({int(k.rsplit("_", 1)[1]) for k in metrics if per_layer(k)})
    if layers:
        n = layers[-1] + 1
        templates = [m for m in schema.METRICS if m.per_layer and any(k in metrics for k in schema.expand(m, n))]
        head = ["layer"] + [m.name.replace("_{i}", "") for m in templates]
        table = [head] + [[str(l)] + [_fmt(metrics.get(schema.expand(m, n)[l], "")) for m in templates]
                          for l in layers]
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
OPTION_TYPES = {"depth": depth_type, "width": width_type, "seed": seed_type, "density": parse_density,
                "n_train": parse_int, "n_test": parse_int}  # unset (None) by default: the spec checks the integer
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
    """One option per field of `plantseek.spec` (its flat name), its help from the field's doc and its
    choices from the field's; booleans are --no-* (or --*) flags and options (pruner_options,
    ticket_pruner_options) are a repeatable --pruner-option (--ticket-pruner-option) KEY=VALUE."""
    from .. import spec

    for key, default in spec.defaults().items():
        doc, flag = spec.doc_of(key), "--" + key.replace("_", "-")
        if isinstance(default, dict):
            p.add_argument(flag[:-1], dest=key, action="append", default=[], metavar="KEY=VALUE",
                           help=f"{doc}; repeatable, the value read as JSON when it parses")
        elif isinstance(default, bool):
            name = FLAG_NAMES.get(key, "--no-" + key.replace("_", "-") if default else flag)
            p.add_argument(name, dest=key, action="store_false" if default else "store_true", default=default,
                           help=f"turn {'off' if default else 'on'}: {doc} (default: {_shown(default)})")
        else:
            kind = OPTION_TYPES.get(key) or (type(default) if isinstance(default, (int, float)) else str)
            p.add_argument(flag, dest=key, type=kind, default=default, choices=None if spec.is_plugin(key) else spec.choices(key),
                           help=f"{doc} (default: {_shown(default)})")


@command("seek", help="plant a ticket, run a pruner under a protocol, train and measure the found network")
class SeekCommand:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        add_seek_options(p)
        p.add_argument("--json", metavar="PATH", help="also write config and metrics as JSON")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from .. import spec
        from ..seek import seek

        kwargs = {key: getattr(args, key) for key in spec.defaults()}
        for key, default in spec.defaults().items():
            if isinstance(default, dict):
                kwargs[key] = dict(parse_option(o) for o in getattr(args, key))
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
    def run(args: argparse.Namespace) -> int:
        from .. import pruners

        desc = pruners.descriptions()
        width = max((len(n) for n in desc), default=0)
        for name, line in desc.items():
            print(f"{name:<{width}}  {line}")
        return 0
