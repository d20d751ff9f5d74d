"""Subcommand `report`."""
from __future__ import annotations

import argparse

from ..cli import command


@command("report", help="figures (PNG, SVG) and one self-contained HTML page from a results database")
class ReportCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("db", metavar="DB", help="results database")
        parser.add_argument("--out", required=True, help="output directory (index.html and the figures)")
        parser.add_argument("--acc-tol", type=float, default=0.02,
                            help="a pruner matches the ticket when its mean accuracy is at least the ticket's "
                                 "minus this (default 0.02)")
        parser.add_argument("--loss-factor", type=float, default=2.0,
                            help="regression: a pruner matches the ticket when its mean test loss is at most "
                                 "this times the ticket's (default 2)")
        parser.add_argument("--no-svg", action="store_true", help="PNG files only")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from . import build_report

        result = build_report(args.db, args.out, acc_tol=args.acc_tol, loss_factor=args.loss_factor,
                              formats=("png",) if args.no_svg else ("png", "svg"), progress=not args.no_progress)
        print(f"report: {result.html} ({len(result.figures)} files)")
        return 0
