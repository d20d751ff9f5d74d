"""`plantseek image-ticket`: the image experiment from the command line (a front end of `run_image_ticket`, whose
rows are ordinary `plantseek.seek` runs of an image task)."""
from __future__ import annotations

import argparse
import json

from ..cli import command


def _options(text: str | None) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"options must be a JSON object such as '{{\"epochs\": 20}}', got {text!r}") from exc
    if not isinstance(value, dict):
        raise ValueError(f"options must be a JSON object, got {text!r}")
    return value


def _densities(text: str | None):
    if text is None:
        return None
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            out.append(float(part))
        except ValueError:
            out.append(part)  # "ticket" in any case; density_grid applies the one rule
    return out


@command("image-ticket", help="train a small conv net, prune it to a ticket, plant it in a wider host and seek it again")
class ImageTicketCommand:
    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        from .experiment import ImageTicketConfig

        d = ImageTicketConfig()
        p.add_argument("--task", default=d.task, choices=["digits", "cifar10"], help="image task (default: digits, offline)")
        p.add_argument("--layout", default=None, help="model layout: digits, small, vgg11, vgg16 (default: the task's)")
        p.add_argument("--ticket-width", type=float, default=d.ticket_width, help="width multiplier of the ticket network")
        p.add_argument("--host-width", type=float, default=d.host_width, help="host channels/units = this x the ticket's")
        p.add_argument("--ticket-pruner", default=d.ticket_pruner, help="pruner that finds the ticket (default: synflow)")
        p.add_argument("--ticket-pruner-options", default=None, help="JSON options of the ticket pruner, e.g. '{\"iterations\": 100}'")
        p.add_argument("--ticket-density", type=float, default=d.ticket_density, help="density of the ticket in the small network")
        p.add_argument("--ticket-scope", default=d.ticket_scope, choices=["global", "layer"])
        p.add_argument("--train-epochs", type=int, default=d.train_epochs, help="epochs of the dense small network (and the dense host baseline)")
        p.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs, help="fine-tuning epochs of the pruned ticket")
        p.add_argument("--lr", type=float, default=d.lr)
        p.add_argument("--batch-size", type=int, default=d.batch_size)
        p.add_argument("--seeker", default=d.seeker, help="pruner that seeks the ticket in the host (default: edge-popup-annealed)")
        p.add_argument("--seeker-options", default=None,
                       help="JSON options of the seeker (default: '{\"epochs\": 20}')")
        p.add_argument("--seeker-scope", default=d.seeker_scope, choices=["global", "layer"])
        p.add_argument("--densities", default=None,
                       help="comma-separated seeker densities, 'ticket' allowed (default: ticket plus 0.01,0.05,0.1,0.5 above it)")
        p.add_argument("--no-oracle", action="store_true", help="do not store the ticket oracle's reference row")
        p.add_argument("--no-dense-baseline", action="store_true", help="skip training the dense host (dense_test_*)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (VGG16 on CIFAR-10 wants a GPU)")
        p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
        p.add_argument("--data-dir", default=None, help="folder holding cifar-10-batches-py (cifar10; never downloaded)")
        p.add_argument("--n-train", type=int, default=None, help="use a seeded subsample of this many training images")
        p.add_argument("--n-test", type=int, default=None, help="cifar10: a seeded subsample of this many test images")
        p.add_argument("--db", default=None, help="results database to append the rows to (plantseek report reads it)")
        p.add_argument("--json", default=None, help="also write the rows to this JSON file")
        p.add_argument("--threads", type=int, default=None,
                       help="CPU threads for torch (1 is fastest for the small digits networks on a busy machine)")
        p.add_argument("--no-progress", action="store_true")

    @staticmethod
    def run(args: argparse.Namespace) -> int:
        from ..cli.foundation import print_rows
        from .experiment import ImageTicketConfig, run_image_ticket

        cfg = ImageTicketConfig(
            task=args.task, layout=args.layout, ticket_width=args.ticket_width, host_width=args.host_width,
            ticket_pruner=args.ticket_pruner, ticket_pruner_options=_options(args.ticket_pruner_options),
            ticket_density=args.ticket_density, ticket_scope=args.ticket_scope, train_epochs=args.train_epochs,
            finetune_epochs=args.finetune_epochs, lr=args.lr, batch_size=args.batch_size, seeker=args.seeker,
            seeker_scope=args.seeker_scope, densities=_densities(args.densities), oracle=not args.no_oracle,
            dense_baseline=not args.no_dense_baseline, seed=args.seed, device=args.device, dtype=args.dtype,
            data_dir=args.data_dir, n_train=args.n_train, n_test=args.n_test, progress=not args.no_progress,
            threads=args.threads,
        )
        if args.seeker_options is not None:
            cfg.seeker_options = _options(args.seeker_options)
        result = run_image_ticket(cfg, db=args.db)
        print_rows(result.table())
        t = result.timings
        print(f"total {t['total_s']:.1f} s (learn and plant the ticket {t['ticket_s']:.1f}, runs {t['runs_s']:.1f})")
        if args.db:
            print(f"{len(result.rows)} rows written to {args.db} (rows already there are not rerun)")
        if args.json:
            with open(args.json, "w") as fh:
                json.dump([{"config": r["config"], "metrics": r["metrics"]} for r in result.rows], fh, indent=1, default=str)
        return 0
