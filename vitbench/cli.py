"""The ``vitbench`` command line: one subcommand per stage of the workflow.

Each stage owns its subcommand (``vitbench/<stage>/cli.py`` defines
``register(subparsers)``), so this file only wires them together and turns
:class:`~vitbench.errors.VitbenchError` into a one-line error with exit status 2. A command line
argparse cannot read (a flag's value of the wrong type, flags that exclude each other, a misspelt
flag) is such an error too, naming the flag and the fix, instead of argparse's usage block.

Output piped into a reader that stops early (``vitbench sweep plan EXP --json | head -1``) ends
any command quietly with status 141 (128 + SIGPIPE), as ``cat`` and ``git`` do, not with a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import gc
import os
import re
import select
import signal
import sys

from vitbench.errors import VitbenchError


class _Parser(argparse.ArgumentParser):
    """argparse's parser whose errors are one line that names the flag and the fix (a :class:`VitbenchError`).

    ``add_subparsers`` builds every subcommand's parser with the class of its parent, so the
    whole command tree gets it from the top-level parser alone, abbreviated flags refused included.
    """

    _USED = "_vitbench_parser"  # namespace attribute: the innermost (sub)command parser that read the line

    def __init__(self, *args, allow_abbrev: bool = False, **kwargs):
        # What the error messages need, kept here from the public add_* calls rather than read from
        # argparse's private tables: each flag's value name, and the required subcommands' names.
        self.value_names: dict[str, str] = {}
        self.subcommands: argparse.Action | None = None
        # A prefix of a flag (--max-ste) is a typo to point out, not the flag: a prefix that is unique
        # today becomes ambiguous, or another flag, when a flag is added, and scripts would change meaning.
        super().__init__(*args, allow_abbrev=allow_abbrev, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        self.note_flags(action)
        return action

    def note_flags(self, action: argparse.Action) -> None:
        """Remember ``action``'s flags; argument groups add theirs to the parser through this."""
        for flag in action.option_strings:
            self.value_names[flag] = action.metavar or action.dest.upper()

    def add_argument_group(self, *args, **kwargs):
        return _noting(super().add_argument_group(*args, **kwargs), self)

    def add_mutually_exclusive_group(self, **kwargs):
        return _noting(super().add_mutually_exclusive_group(**kwargs), self)

    def add_subparsers(self, **kwargs):
        self.subcommands = super().add_subparsers(**kwargs)
        return self.subcommands

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        # A subcommand's parser returns first, and its namespace is copied into its parent's: the innermost wins.
        if not hasattr(namespace, self._USED):
            setattr(namespace, self._USED, self)
        return namespace, extras

    def parse_args(self, args=None, namespace=None):
        namespace, extras = self.parse_known_args(args, namespace)
        # argparse reports leftover words from the top-level parser; the subcommand that left them knows its flags.
        used = vars(namespace).pop(self._USED, self)
        if extras:
            used.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace

    def error(self, message: str):
        raise VitbenchError(_usage_error(self, " ".join(message.split())))


def _usage_error(parser: argparse.ArgumentParser, message: str) -> str:
    """argparse's ``message`` for ``parser`` as ``<command> <flag>: <problem>: <fix>``."""
    command = parser.prog
    see = f"see `{command} --help`"
    m = re.fullmatch(r"argument (\S+): (.*)", message)
    flag, problem = (m.group(1).split("/")[-1], m.group(2)) if m else ("", message)
    where = f"{command} {flag}".strip()
    if m := re.fullmatch(r"invalid (int|float) value: (.*)", problem):
        kind = "a whole number" if m.group(1) == "int" else "a number"
        return f"{where} {m.group(2)}: not {kind}: pass {kind} after {flag}"
    if m := re.fullmatch(r"invalid choice: (.*?) \(choose from (.*)\)", problem):
        choices = ", ".join(c.strip(" '\"") for c in m.group(2).split(","))
        close = _closest(m.group(1).strip("'\""), choices.split(", "))
        return f"{where} {m.group(1)}: not one of {choices}" + (f": did you mean {close}?" if close else "")
    if m := re.fullmatch(r"not allowed with argument (\S+)", problem):
        return f"{where} and {m.group(1).split('/')[-1]} exclude each other: give only one of them"
    names = getattr(parser, "value_names", {})
    if re.fullmatch(r"expected .*arguments?", problem):
        value = names.get(flag, "VALUE")
        return f"{where} needs a value: pass {flag} {value} ({see})"
    if m := re.fullmatch(r"ignored explicit argument (.*)", problem):
        return f"{where} takes no value: drop ={m.group(1).strip(chr(39))}"
    if m := re.fullmatch(r"the following arguments are required: (.*)", problem):
        sub = getattr(parser, "subcommands", None)
        if sub is not None and sub.required and m.group(1) == (sub.metavar or sub.dest):
            return f"{command}: missing {m.group(1)}: pass one of {', '.join(sub.choices)}"
        return f"{command}: missing {m.group(1)}: pass {m.group(1)} ({see})"
    if m := re.fullmatch(r"unrecognized arguments: (.*)", problem):
        flags = [s for s in names if s.startswith("--")]
        close = next((c for word in m.group(1).split() if word.startswith("--")
                      for c in [_closest(word.split("=")[0], flags)] if c), None)
        fix = f"did you mean {close}?" if close else "drop them"
        return f"{command}: unrecognized arguments {m.group(1)}: {fix} ({see})"
    return f"{where}: {problem}: {see}"


def _noting(group, parser: _Parser):
    """``group`` (an argument group of ``parser``) telling ``parser`` of each flag added to it."""
    add_argument, add_exclusive = group.add_argument, group.add_mutually_exclusive_group

    def adding(*args, **kwargs):
        action = add_argument(*args, **kwargs)
        parser.note_flags(action)
        return action

    group.add_argument = adding
    group.add_mutually_exclusive_group = lambda **kw: _noting(add_exclusive(**kw), parser)
    return group


def _closest(word: str, candidates: list[str]) -> str | None:
    """The candidate ``word`` is most likely a misspelling of (compared without the leading dashes), or None."""
    bare = {c.lstrip("-"): c for c in candidates}
    close = difflib.get_close_matches(word.lstrip("-"), list(bare), n=1, cutoff=0.6)
    return bare[close[0]] if close else None


def build_parser() -> argparse.ArgumentParser:
    from vitbench import __version__
    from vitbench.analysis import cli as analysis_cli
    from vitbench.backbones import cli as backbones_cli
    from vitbench.data import cli as data_cli
    from vitbench.report import cli as report_cli
    from vitbench.sweep import cli as sweep_cli
    from vitbench.training import cli as training_cli

    parser = _Parser(
        prog="vitbench",
        description="How much data does a Vision Transformer need? Train and compare ViT, DeiT, Swin, PiT and ResNet.",
    )
    parser.add_argument("--version", action="version", version=f"vitbench {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (data_cli, backbones_cli, training_cli, sweep_cli, report_cli, analysis_cli):
        module.register(sub)
    return parser


def entry() -> None:
    """The ``vitbench`` executable (and ``python -m vitbench``): :func:`main`, then the process exit.

    Interpreter shutdown would otherwise run a last garbage collection over the half million objects
    that importing Lightning creates (``torch._dynamo``'s, reached through torchmetrics and
    torchvision): 1.3 s of every `vitbench train`, sweep task and DDP rank on 2 cores (1.9 -> 0.6 s
    from its last line to its exit).
    Freezing them first skips that pass; they are freed with the process all the same (objects in
    reference cycles are then not finalized at exit: every file vitbench writes is closed, and atexit
    handlers, W&B's included, still run). Only for a process that is about to end: in-process callers
    of :func:`main` keep their collector.
    """
    try:
        rc = main()
    finally:
        gc.freeze()
    sys.exit(rc)


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
    try:
        args = build_parser().parse_args(argv)
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
    entry()
