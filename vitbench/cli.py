"""The ``vitbench`` command line: one subcommand per stage of the workflow.

Each stage owns its subcommand (``vitbench/<stage>/cli.py`` defines
``register(subparsers)``), so this file only wires them together and turns
:class:`~vitbench.errors.VitbenchError` into a one-line error with exit status 2.

Output piped into a reader that stops early (``vitbench sweep plan EXP --json | head -1``) ends
any command quietly with status 141 (128 + SIGPIPE), as ``cat`` and ``git`` do, not with a traceback.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
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
    try:
        try:
            rc = _run(argv)
        except SystemExit:
            sys.stdout.flush()  # argparse's --help and usage: `vitbench --help | head -1` closes the pipe too
            raise
        # Piped stdout is block-buffered: flushed here, a closed pipe is caught below, not at exit.
        sys.stdout.flush()
        return rc
    except BrokenPipeError:
        if not _output_closed():
            raise  # a socket or a child's pipe: a real failure, not a reader that has seen enough
        _discard_output()
        return 128 + signal.SIGPIPE


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
    except VitbenchError as e:
        print(f"vitbench: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("vitbench: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


def _output_closed() -> bool:
    """Whether stdout or stderr is a pipe whose reader has gone (poll reports an error on its write end)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            poller = select.poll()
            poller.register(stream.fileno(), select.POLLOUT)
            if any(event & select.POLLERR for _, event in poller.poll(0)):
                return True
        except (AttributeError, OSError, ValueError):  # no real file behind it (pytest's capture)
            continue
    return False


def _discard_output() -> None:
    """Point stdout and stderr at /dev/null: the interpreter's flush at exit must not raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for stream in (sys.stdout, sys.stderr):
        try:
            os.dup2(devnull, stream.fileno())
        except (AttributeError, OSError, ValueError):
            pass
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
