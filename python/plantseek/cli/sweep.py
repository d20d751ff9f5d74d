"""Subcommands `sweep`, `results`, `export` and `reproduce`."""
from __future__ import annotations

import argparse

from ..arguments import cli_type, integer, parse_int
from . import command


def _count_type(name: str):
    """An argparse type for a count >= 1 (the rule of `plantseek.arguments.integer`)."""
    return cli_type(lambda v: integer(name, v), parse_int)


def add_execution_arguments(parser: argparse.ArgumentParser) -> None:
    from ..sweep.executors import DEFAULT_MAX_BATCH, MAX_BATCH_BY_PROTOCOL, available

    parser.add_argument("--executor", default="local", choices=available(),
                        help="local (default): batched runs in this process; dask: a running Dask cluster "
                             "(--scheduler); dask-local: a LocalCluster started here (--workers; with "
                             "--device cuda one worker per visible GPU); dask-cuda: dask_cuda's "
                             "LocalCUDACluster (pip install dask-cuda)")
    parser.add_argument("--scheduler", help="Dask scheduler address for --executor dask, e.g. tcp://host:8786")
    parser.add_argument("--workers", type=_count_type("workers"),
                        help="worker processes for --executor dask-local (with --device cuda: at most one per "
                             "GPU) or dask-cuda")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the sweep file's device)")
    parser.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    limits = "".join(f", {n} under {p}" for p, n in MAX_BATCH_BY_PROTOCOL.items())
    parser.add_argument("--max-batch", type=_count_type("max_batch"),
                        help="runs trained together in one batched computation (default: as many as fit "
                             f"in the device's free memory, at most {DEFAULT_MAX_BATCH}{limits})")
    parser.add_argument("--lease", type=cli_type(_lease, float), metavar="SECONDS",
                        help="how long a claimed run stays claimed without renewal when several sweep processes "
                             "share the database (default 300; renewed every third of it while the sweep runs); "
                             "a process killed on another machine frees its runs after this long, one on this "
                             "machine at once")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _lease(value) -> float:
    from ..sweep import check_lease

    return check_lease(value)


def execute(args: argparse.Namespace, sweep, db: str):
    from ..sweep import run_sweep

    options = {}
    if args.executor == "dask":
        if not args.scheduler:
            raise ValueError("--executor dask needs --scheduler tcp://host:port (or use --executor dask-local)")
        options["scheduler"] = args.scheduler
    elif args.scheduler:
        raise ValueError("--scheduler only applies to --executor dask")
    if args.executor in ("dask-local", "dask-cuda"):
        options["workers"] = args.workers
    elif args.workers:
        raise ValueError("--workers only applies to --executor dask-local or dask-cuda")
    return run_sweep(sweep, db, executor=args.executor, device=args.device, retry_failed=args.retry_failed,
                     max_batch=args.max_batch, progress=not args.no_progress, lease_s=args.lease, **options)


@command("sweep", help="run a sweep file (TOML grid) into a results database; rerunning resumes")
class SweepCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("file", metavar="FILE.toml", help="sweep file")
        parser.add_argument("--db", required=True, help="SQLite results database (created if missing)")
        parser.add_argument("--dry-run", action="store_true",
                            help="validate the file, say how many runs it has and how many are left, and print each "
                                 "group of runs with its batch size and memory estimate; runs nothing")
        add_execution_arguments(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..sweep import load_sweep, plan_sweep
        from ..store import ResultStore

        sweep = load_sweep(args.file)
        if args.dry_run:
            import os

            if os.path.exists(args.db):
                with ResultStore(args.db, readonly=True) as store:
                    runs, _, skipped = plan_sweep(sweep, store, retry_failed=args.retry_failed)
            else:
                runs, skipped = sweep.runs, 0
            print(f"{args.file}: {len(sweep.runs)} runs, {skipped} already in {args.db}, {len(runs)} to run")
            for note in sweep.notes:
                print(f"note: {note}")
            _print_groups(runs, args.device or sweep.device, args.max_batch)
            return 0
        report = execute(args, sweep, args.db)
        print(report)
        return 1 if report.failed else 0


def _print_groups(runs, device, max_batch) -> None:
    """One line per group of the runs to do (as the local executor would train them) and the total."""
    from ..sweep.executors import plan_groups

    plans = plan_groups(runs, device, max_batch)
    for plan in plans:
        print(f"  {plan}")
    print(f"total: {sum(p.runs for p in plans)} runs in {len(plans)} groups, {sum(p.batches for p in plans)} "
          f"batches")


@command("results", help="summary table of a results database")
class ResultsCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("db", metavar="DB", help="results database")
        parser.add_argument("--errors", type=int, default=10, help="how many failed runs to list (default 10)")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..store import format_summary

        print(format_summary(args.db, max_errors=args.errors))
        return 0


@command("export", help="write one row per run (configuration, metrics, status) to CSV or Parquet")
class ExportCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("db", metavar="DB", help="results database")
        parser.add_argument("--format", choices=("csv", "parquet"), help="default: from --out's suffix, else csv")
        parser.add_argument("--out", required=True, help="output file")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..store import export

        n = export(args.db, args.out, args.format)
        print(f"wrote {n} runs to {args.out}")
        return 0


@command("reproduce", help="write and run the sweep of the paper's experiments, then its report")
class ReproduceCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("what", choices=("paper",), help="what to reproduce")
        parser.add_argument("--scale", choices=("small", "full"), default="small",
                            help="small: a few minutes on a laptop CPU (make demo); full: the paper's size")
        parser.add_argument("--db", help="results database (default: OUT/paper_SCALE.db)")
        parser.add_argument("--out", default="report", help="directory for the sweep file and the report")
        parser.add_argument("--no-report", action="store_true", help="run the sweep only")
        add_execution_arguments(parser)

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..presets import reproduce_paper

        options = {}
        if args.executor == "dask":
            options["scheduler"] = args.scheduler
        if args.executor in ("dask-local", "dask-cuda"):
            options["workers"] = args.workers
        result = reproduce_paper(
            scale=args.scale, out=args.out, db=args.db, executor=args.executor, device=args.device,
            retry_failed=args.retry_failed, max_batch=args.max_batch, progress=not args.no_progress,
            report=not args.no_report, **options,
        )
        print(result["sweep_report"])
        if result.get("html"):
            print(f"report: {result['html']}")
        return 0
