"""Subcommands `report` and `findings`."""
from __future__ import annotations

import argparse

from . import command


@command("report", help="figures (PNG, SVG) and one self-contained HTML page from a results database")
class ReportCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("db", metavar="DB", help="results database")
        parser.add_argument("--out", required=True, help="output directory (index.html and the figures)")
        _tolerance_arguments(parser)
        parser.add_argument("--no-svg", action="store_true", help="PNG files only")
        parser.add_argument("--no-progress", action="store_true", help="no progress bar")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..arguments import output_dir
        from ..report import build_report

        output_dir(args.out, "--out", create=False)  # build_report creates it once the database opened
        result = build_report(args.db, args.out, acc_tol=args.acc_tol, loss_factor=args.loss_factor,
                              formats=("png",) if args.no_svg else ("png", "svg"), progress=not args.no_progress)
        print(f"report: {result.html} ({len(result.figures)} files)")
        return 0


def _tolerance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--acc-tol", type=float, default=0.02,
                        help="a pruner matches the ticket oracle of its protocol when the one-sided 95%% upper "
                             "bound of (oracle accuracy - its accuracy) is at most this (default 0.02)")
    parser.add_argument("--loss-factor", type=float, default=2.0,
                        help="regression: a pruner matches the ticket oracle when the one-sided 95%% upper "
                             "bound of (its test loss / the oracle's) is at most this factor (default 2)")


@command("findings", help="evaluate the paper's findings on a results database (or an exported CSV): "
                          "reproduced / not reproduced / undecided, with the numbers and the scale")
class FindingsCommand:
    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("source", metavar="RESULTS", help="results database, or a CSV written by --csv-out")
        _tolerance_arguments(parser)
        parser.add_argument("--csv-out", metavar="CSV",
                            help="also write the rows the findings read (a small CSV, e.g. "
                                 "docs/results/paper_small.csv)")
        parser.add_argument("--readme", metavar="README",
                            help="rewrite the findings block of this README (between its findings markers)")
        parser.add_argument("--only", nargs="+", metavar="FINDING", help="evaluate only these findings")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..report import findings as F

        unknown = sorted(set(args.only or ()) - set(F.available()))
        if unknown:
            raise ValueError(f"unknown finding(s) {', '.join(unknown)}; allowed: {', '.join(F.available())}")
        table = F.verdict_table(args.source, acc_tol=args.acc_tol, loss_factor=args.loss_factor)
        print(F.format_text(F.evaluate_table(table, keys=args.only)))
        if args.csv_out:
            n = F.export_csv(args.source, args.csv_out)
            print(f"findings: wrote {n} rows to {args.csv_out}")
        if args.readme:
            block = F.readme_block(args.source, display=args.source, acc_tol=args.acc_tol,
                                   loss_factor=args.loss_factor, table=table)
            changed = F.update_readme(args.readme, block)
            print(f"findings: {args.readme} {'updated' if changed else 'already up to date'}")
        return 0
