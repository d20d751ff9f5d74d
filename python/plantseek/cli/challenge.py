"""Subcommand `challenge`: `challenge export` (planted networks and data without the ticket) and `challenge
score` (submitted masks run through the ordinary protocol into a results database). docs/challenge.md."""
from __future__ import annotations

import argparse
import sys

from . import command
from .seek import parse_option


def _densities(text: str) -> list:
    from ..arguments import parse_density

    out = []
    for part in text.replace(" ", "").split(","):
        try:
            value = float(part)
        except ValueError:
            value = part
        try:
            out.append(parse_density(value))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return out


def _seeds(text: str) -> list[int]:
    from ..challenge.export import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _add_export(p: argparse.ArgumentParser) -> None:
    from ..arguments import depth_type, width_type
    from ..challenge.files import FORMATS
    from ..challenge.manifest import PROTOCOLS

    p.add_argument("--task", required=True, help="task name (plantseek tasks; MLP tasks)")
    p.add_argument("--depth", type=depth_type, required=True, help="number of linear layers")
    p.add_argument("--width", type=width_type, required=True, help="hidden width, or a comma-separated list")
    p.add_argument("--seeds", type=_seeds, required=True, help="seeds: 0-9, 0,3,7 or 0-4,9 (one run per seed and density)")
    p.add_argument("--out", required=True, metavar="DIR", help="new or empty directory to write into")
    p.add_argument("--protocol", default="singleshot", choices=PROTOCOLS,
                   help="how submitted masks are scored: singleshot trains them, strong reads them out untrained "
                        "(default: singleshot)")
    p.add_argument("--densities", type=_densities, default=[0.1],
                   help="comma-separated budgets in (0, 1] or 'ticket' (the ticket's own density, written as a "
                        "number) (default: 0.1)")
    p.add_argument("--format", dest="fmt", default="safetensors", choices=FORMATS, help="file format (default: safetensors)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a plantseek seek option the runs are scored with (epochs=2, n_samples=1000, noise=0, lr=...); "
                        "repeatable, the value read as JSON when it parses")


def _run_export(args: argparse.Namespace) -> int:
    from ..challenge import export

    options = dict(parse_option(o) for o in args.option)
    m = export(args.out, task=args.task, depth=args.depth, width=args.width, seeds=args.seeds,
               protocol=args.protocol, densities=args.densities, fmt=args.fmt, options=options, log=_log)
    print(f"wrote {len(m['runs'])} runs ({len({r['seed'] for r in m['runs']})} seeds) of {m['task']} depth "
          f"{m['depth']} width {m['width']} ({m['protocol']}) to {args.out}: manifest.json, README.md")
    for r in m["runs"]:
        print(f"  {r['id']}: keep {r['keep']} of {m['mask_rules']['prunable']} (density {r['budget']:.6g})")
    return 0


def _add_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", metavar="DIR", help="the challenge export (with manifest.json)")
    p.add_argument("submission", metavar="SUBMISSION", help="directory of mask files, one <run id>.safetensors or .npz per run")
    p.add_argument("--db", required=True, help="SQLite results database (created if missing)")
    p.add_argument("--name", required=True, help="the submission's name: the pruner of its rows")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--replace", action="store_true", help="score a name the database already holds for these runs again")
    p.add_argument("--no-reference", dest="reference", action="store_false",
                   help="do not add the ticket oracle's runs (the reference of every verdict) when the database lacks them")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "-"


def _run_score(args: argparse.Namespace) -> int:
    from ..challenge import score

    rep = score(args.directory, args.submission, db=args.db, name=args.name, device=args.device,
                reference=args.reference, replace=args.replace, progress=not args.no_progress,
                log=None if args.no_progress else _log)
    perf = "test_accuracy" if any("test_accuracy" in r["metrics"] for r in rep.runs) else "test_loss"
    cols = ("kept_params", perf, f"ticket_{perf}", "recall", "functional_recall")
    width = max(len(r["id"]) for r in rep.runs)
    print(f"{'run':<{width}}  status  " + "  ".join(f"{c:>17}" for c in cols))
    for r in rep.runs:
        print(f"{r['id']:<{width}}  {r['status']:<6}  " + "  ".join(f"{_fmt(r['metrics'].get(c)):>17}" for c in cols))
        if r["status"] != "ok":
            print(f"  {(r['error'] or '').strip().splitlines()[0] if r['error'] else ''}")
    print(f"wrote {len(rep.runs)} runs of {rep.name!r} ({rep.ok} ok) and {rep.reference_runs} reference runs of the "
          f"ticket oracle to {rep.db}")
    return 0 if rep.ok == len(rep.runs) else 1


@command("challenge", help="export planted networks and data for any framework (no ticket), and score submitted masks")
class ChallengeCommand:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        sub = p.add_subparsers(dest="challenge_command", metavar="ACTION", required=True)
        e = sub.add_parser("export", help="write planted networks, their data, a manifest and a README (no ticket)",
                           description="write planted networks, their data, a manifest and a README (no ticket)")
        _add_export(e)
        e.set_defaults(_challenge=_run_export)
        s = sub.add_parser("score", help="score submitted masks into a results database",
                           description="score submitted masks (one file per run) into a results database")
        _add_score(s)
        s.set_defaults(_challenge=_run_score)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        return args._challenge(args)
