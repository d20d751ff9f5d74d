"""The `plantseek` command line, in one package: a registry of subcommands (`command`), `main`, and one module
per group of subcommands (foundation: tasks/plant/show/info/metrics; seek: seek/pruners; sweep:
sweep/results/export/reproduce; report: report/findings; image: image-ticket). Nothing else imports the CLI.
The global option ``--import MODULE`` imports a user's module (its pruners, tasks, protocols) before any command."""
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
    "plantseek.cli.challenge",
    "plantseek.cli.masks",
    "plantseek.image.commands",
]


@dataclass
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a command that takes none."""


def command(name: str, help: str):
    """Class decorator registering a subcommand; the class defines `run(args)` and, when it takes arguments,
    `add_arguments(parser)`."""
    def wrap(cls):
        if name in _COMMANDS:
            raise ValueError(f"command {name!r} registered twice")
        _COMMANDS[name] = Command(name, help, getattr(cls, "add_arguments", _no_arguments), cls.run)
        return cls
    return wrap


def _load_commands() -> None:
    for mod in COMMAND_MODULES:
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (mod == exc.name or mod.startswith(exc.name + ".")):
                raise  # a real missing dependency inside an existing module


IMPORT_HELP = ("import MODULE before the command runs (a dotted name; the current directory comes first on the "
               "path, as with python -m), so that the pruners, tasks and protocols it registers can be named; "
               "repeatable, before or after COMMAND")


def _add_import_option(parser: argparse.ArgumentParser, dest: str, default) -> None:
    parser.add_argument("--import", dest=dest, action="append", metavar="MODULE", default=default, help=IMPORT_HELP)


def _imports_in(argv: list[str]) -> list[str]:
    """The modules of every ``--import MODULE`` in argv, read before the full parser is built (its choices, such
    as plant's --task, list the registries, which the imports extend)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    _add_import_option(pre, "imports", [])
    known, _ = pre.parse_known_args(argv[:argv.index("--")] if "--" in argv else argv)
    return known.imports


def build_parser() -> argparse.ArgumentParser:
    _load_commands()
    parser = argparse.ArgumentParser(
        prog="plantseek",
        description="Plant known sparse winning tickets in random networks and measure how well pruners find them.",
    )
    _add_import_option(parser, "imports", [])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in sorted(_COMMANDS):
        cmd = _COMMANDS[name]
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        _add_import_option(p, "_imports_after_command", argparse.SUPPRESS)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    from ..plugins import PluginError, command_imports, import_modules

    argv = sys.argv[1:] if argv is None else list(argv)
    try:  # a module of --import, or an installed plugin, that cannot be imported: one line, exit 2
        imported = _imports_in(argv)
        import_modules(imported, where="--import")
        parser = build_parser()
        args = parser.parse_args(argv)
        args.imports = list(args.imports) + list(vars(args).pop("_imports_after_command", []))
        import_modules([m for m in args.imports if m not in imported], where="--import")  # abbreviated: --imp
    except PluginError as exc:
        print(f"plantseek: error: {exc}", file=sys.stderr)
        return 2
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    try:
        with command_imports(args.imports):  # Dask workers import them too
            code = args._run(args)
    except (ValueError, OSError) as exc:  # bad arguments and files the user named: one line, not a traceback
        print(f"plantseek {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"plantseek {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


