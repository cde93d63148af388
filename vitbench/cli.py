"""The ``vitbench`` command line: one subcommand per stage of the workflow.

Each stage owns its subcommand (``vitbench/<stage>/cli.py`` defines
``register(subparsers)``), so this file only wires them together and turns
:class:`~vitbench.errors.VitbenchError` into a one-line error with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys

from vitbench.errors import VitbenchError


def build_parser() -> argparse.ArgumentParser:
    from vitbench import __version__
    from vitbench.analysis import cli as analysis_cli
    from vitbench.backbones import cli as backbones_cli
    from vitbench.data import cli as data_cli
    from vitbench.report import cli as report_cli
    from vitbench.sweep import cli as sweep_cli
    from vitbench.training import cli as training_cli

    parser = argparse.ArgumentParser(
        prog="vitbench",
        description="How much data does a Vision Transformer need? Train and compare ViT, DeiT, Swin, PiT and ResNet.",
    )
    parser.add_argument("--version", action="version", version=f"vitbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (data_cli, backbones_cli, training_cli, sweep_cli, report_cli, analysis_cli):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    # A W&B service inherited from a parent process (a notebook, pytest, the shell that ran
    # sbatch) may still hold the run id of an attempt that was killed: every command starts its own.
    os.environ.pop("WANDB_SERVICE", None)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except VitbenchError as e:
        print(f"vitbench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("vitbench: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
