"""More bad input, each refused with one line ``vitbench: error: ...``, exit 2, no traceback, nothing written.

Command lines argparse cannot read (in every subcommand), task configs edited by hand in a
sweep.json, near-misses of a built-in dataset's name, backbone overrides the backbone rejects,
precisions the CPU cannot train in, a resumed run whose config changed, and IDX files that
break a slow preparation. Every case runs the real CLI (``vitbench.cli.main``) in this process.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from vitbench.cli import main


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its bytes (or 'dir')."""
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def refused(tmp_path, monkeypatch, capfd):
    """``refused(*argv, expect=[...])``: ``vitbench ARGV`` run in ``tmp_path/work`` exits 2 with one stderr
    line holding every ``expect`` string, no traceback, no stdout, and nothing written under ``tmp_path``."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)

    def run(*argv, expect=()):
        before = tree(tmp_path)
        capfd.readouterr()
        rc = main([str(a) for a in argv])
        out, err = capfd.readouterr()
        lines = err.strip().splitlines()
        assert rc == 2, err
        assert len(lines) == 1 and lines[0].startswith("vitbench: error: "), err
        assert "Traceback" not in err + out and out == "", out
        for text in expect:
            assert text in lines[0], lines[0]
        assert tree(tmp_path) == before
        return lines[0]

    return run


# ------------------------------------------------------- command lines argparse cannot read, every subcommand

USAGE_CASES = [
    (["train", "--lr", "abc"], ["vitbench train --lr 'abc': not a number", "pass a number after --lr"]),
    (["train", "--max-epochs", "x"], ["--max-epochs 'x': not a whole number"]),
    (["train", "--max-steps", "1.5"], ["--max-steps '1.5': not a whole number"]),
    (["train", "--epochs", "3"], ["unrecognized arguments --epochs 3", "did you mean --max-epochs?"]),
    (["train", "--max-epochs", "2", "--max-steps", "3"], ["--max-steps and --max-epochs exclude each other",
                                                          "give only one of them"]),
    (["train", "--precision"], ["--precision needs a value", "pass --precision {32-true,bf16-mixed,16-mixed}"]),
    (["train", "--compile=yes"], ["--compile takes no value: drop =yes"]),
    (["train", "--wandb-p", "x", "--w", "y"], ["--w: could be --wandb, --wandb-project", "spell the flag out"]),
    (["data", "fashion_mnist", "--fraction", "0.1", "--samples-per-class", "3"], ["exclude each other"]),
    (["data", "fashion_mnist", "--seed", "one"], ["vitbench data --seed 'one': not a whole number"]),
    (["data"], ["vitbench data: missing DATASET"]),
    (["backbones", "--image-size", "big"], ["vitbench backbones --image-size 'big'"]),
    (["sweep"], ["vitbench sweep: missing SUBCOMMAND: pass one of plan, run, submit, status, resume"]),
    (["sweep", "stauts", "x"], ["'stauts'", "did you mean status?"]),
    (["sweep", "status"], ["vitbench sweep status: missing SWEEP_DIR"]),
    (["sweep", "status", "a", "b"], ["vitbench sweep status: unrecognized arguments b"]),
    (["sweep", "run", "x.yaml", "--parallel", "two"], ["vitbench sweep run --parallel 'two'"]),
    (["sweep", "run-task", "d", "first"], ["vitbench sweep run-task task_id 'first': not a whole number"]),
    (["report", "d", "--wandb", "cloud"], ["vitbench report --wandb 'cloud'", "auto, offline, online"]),
    (["analyze", "cost", "--steps", "x"], ["vitbench analyze cost --steps 'x'"]),
    (["analyze", "attention", "r", "--token", "cl"], ["did you mean cls?"]),
    (["analyze"], ["vitbench analyze: missing ANALYSIS: pass one of attention, posembed, cost"]),
    (["nosuch"], ["'nosuch': not one of data, backbones, train, sweep, report, analyze"]),
    (["train", "--bakbone", "vit"], ["unrecognized arguments --bakbone vit", "did you mean --backbone?"]),
]


@pytest.mark.parametrize("args,expect", USAGE_CASES, ids=lambda v: " ".join(v)[:50] if isinstance(v, list) else None)
def test_a_command_line_argparse_cannot_read_is_one_line(refused, args, expect):
    refused(*args, expect=expect)


@pytest.mark.parametrize("argv", [["--help"], ["train", "--help"], ["sweep", "status", "--help"]])
def test_help_is_still_the_full_help(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    out = capsys.readouterr().out
    assert exit_.value.code == 0 and out.startswith("usage: vitbench") and "options:" in out
