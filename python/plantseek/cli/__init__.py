"""The `plantseek` command line, in one package: a registry of subcommands (`command`), `main`, and one module
per group of subcommands (foundation: tasks/plant/show/info/metrics; seek: seek/pruners; sweep:
sweep/results/export/reproduce; report: report/findings; image: image-ticket). Nothing else imports the CLI."""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable

_COMMANDS: dict[str, "Command"] = {}

# Modules that define subcommands with @command; imported lazily so `plantseek --help` stays fast.
COMMAND_MODULES = [
    "plantseek.cli.foundation",
    "plantseek.cli.seek",
    "plantseek.cli.sweep",
    "plantseek.cli.report",
    "plantseek.image.commands",
]


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def command(name: str, help: str):
    """Class decorator registering a subcommand; the class defines `add_arguments(parser)` and `run(args)`."""
    def wrap(cls):
        if name in _COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        _COMMANDS[name] = Command(name, help, cls.add_arguments, cls.run)
        return cls
    return wrap


def _load_commands() -> None:
    for mod in COMMAND_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (mod == exc.name or mod.startswith(exc.name + ".")):
                raise  # a real missing dependency inside an existing module


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(
        prog="plantseek",
        description="Plant known sparse winning tickets in random networks and measure how well pruners find them.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(_COMMANDS):
        cmd = _COMMANDS[name]
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        code = args._run(args)
    except (ValueError, OSError) as exc:  # bad arguments and files the user named: one line, not a traceback
        print(f"plantseek {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"plantseek {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


