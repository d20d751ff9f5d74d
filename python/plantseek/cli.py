"""The `plantseek` command line: a registry of subcommands, each defined next to the code it drives."""
from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass
from typing import Callable

_COMMANDS: dict[str, "Command"] = {}

# Modules that define subcommands with @command; imported lazily so `plantseek --help` stays fast.
COMMAND_MODULES = [
    "plantseek.commands",
    "plantseek.seek_commands",
    "plantseek.sweep.commands",
    "plantseek.report.commands",
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


