"""``vitbench report SWEEP_DIR [--wandb] [--out DIR] [--targets 0.85,0.9]``.

The accuracy-vs-data comparison of a sweep.
"""

from __future__ import annotations

import argparse

from vitbench.wandb_mode import CHOICES

# --wandb asks for a report run: "disabled" would be no run at all, which is leaving the flag out.
REPORT_MODES = [m for m in CHOICES if m != "disabled"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="compare backbones: accuracy vs training-set size of a sweep",
        description="Write results.csv, summary.md, accuracy_vs_data.png and efficiency.md for a sweep dir "
                    "(default to SWEEP_DIR/report/); works on partial sweeps and lists the missing runs.",
    )
    p.add_argument("sweep_dir", metavar="SWEEP_DIR",
                   help="the dir `vitbench sweep run` created, or a folder of run dirs")
    p.add_argument("--out", metavar="DIR", help="write the report here instead of SWEEP_DIR/report")
    p.add_argument("--targets", metavar="ACC[,ACC...]", default=None,
                   help="absolute test accuracies to give the training images needed for, from the fitted "
                        "curves (default: 0.85,0.9)")
    p.add_argument("--wandb", nargs="?", const="auto", default=None, choices=REPORT_MODES,
                   help="also log a W&B report run to the sweep's group (auto: online if logged in, else offline)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vitbench.errors import VitbenchError
    from vitbench.report import write_report
    from vitbench.report.curves import parse_targets

    targets = None
    if args.targets is not None:
        try:
            targets = parse_targets(args.targets)
        except ValueError as e:  # checked before the sweep is read: a typo costs nothing
            raise VitbenchError(f"--targets {args.targets}: {e}; pass accuracies like --targets 0.85,0.9") from None
    write_report(args.sweep_dir, wandb=args.wandb is not None, out=args.out, wandb_mode=args.wandb or "auto",
                 targets=targets)
    return 0
