"""More bad input, each refused with one line ``vitbench: error: ...``, exit 2, no traceback, nothing written.

Command lines argparse cannot read (in every subcommand), task configs edited by hand in a
sweep.json, near-misses of a built-in dataset's name, backbone overrides the backbone rejects,
precisions the CPU cannot train in, a resumed run whose config changed, and IDX files that
break a slow preparation. Every case runs the real CLI (``vitbench.cli.main``) in this process.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from vitbench.cli import main


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with a digest of its bytes (or 'dir', or a link's target: it may be /dev/zero)."""
    return {p.relative_to(root).as_posix(): f"-> {os.readlink(p)}" if p.is_symlink() else "dir" if p.is_dir()
            else hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))}


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
    # a prefix of flags is not a flag (no abbreviations): it is a typo, and the nearest flag is suggested
    (["train", "--wandb-p", "x", "--w", "y"], ["unrecognized arguments --wandb-p x --w y", "did you mean --wandb"]),
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


# ------------------------------------------------ sweep.json: a task's config edited by hand

@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """A planned sweep of two tasks (no training: nothing has run), as `vitbench sweep plan` writes it."""
    import yaml

    root = tmp_path_factory.mktemp("planned")
    exp = root / "tiny.yaml"
    exp.write_text(yaml.safe_dump({"name": "tiny", "dataset": "fashion_mnist", "samples_per_class": [5],
                                   "seeds": [0, 1], "budget": {"max_steps": 2}, "backbones": [{"name": "resnet"}],
                                   "resources": {"accelerator": "cpu"}, "wandb": {"mode": "disabled"}}))
    assert main(["sweep", "plan", str(exp), "--sweep-dir", str(root / "sweep")]) == 0
    return root / "sweep"


def _set(section: str | None, key: str, value, task: int = 0):
    def edit(sweep: dict) -> None:
        config = sweep["tasks"][task]["config"]
        (config.setdefault(section, {}) if section else config)[key] = value
    return edit


TASK_CONFIG_DAMAGE = {
    "misspelt key": (_set("optim", "lrr", 0.1), ["task 0's config", "unknown config key 'optim.lrr'",
                                                  "did you mean 'lr'?"]),
    "unknown section": (_set(None, "optimizer", {"lr": 0.1}, task=1), ["task 1's config",
                                                                       "unknown config key 'optimizer'"]),
    "text learning rate": (_set("optim", "lr", "fast"), ["task 0's config", "optim.lr: expected a number, got 'fast'"]),
    "negative batch size": (_set("data", "batch_size", -4, task=1), ["task 1's config", "data.batch_size must be"]),
    "two budgets": (_set("budget", "max_epochs", 3),
                    ["task 0's config", "both budget.max_epochs and budget.max_steps"]),
    "seed not the task's": (_set(None, "seed", 7, task=1), ["task 1's config", "seed is 7, but the task's is 1"]),
    "backbone not the task's": (_set("model", "backbone", "vit"), ["model.backbone is \"vit\", but the task's"]),
}


@pytest.mark.parametrize("command", [["status"], ["resume"], ["run-task", "--", "0"], ["report"]])
@pytest.mark.parametrize("case", list(TASK_CONFIG_DAMAGE))
def test_a_task_config_edited_by_hand_is_refused_before_any_task_runs(case, command, planned, refused):
    import json
    import shutil

    sweep = refused.dir / "sweep"
    shutil.copytree(planned, sweep)
    text = (sweep / "sweep.json").read_text().replace(str(planned.resolve()), str(sweep.resolve()))
    data = json.loads(text)
    damage, words = TASK_CONFIG_DAMAGE[case]
    damage(data)
    (sweep / "sweep.json").write_text(json.dumps(data))
    (sweep / "jobs.json").write_text(json.dumps({"mode": "local", "submissions": []}))
    if command[0] == "report":
        refused("report", sweep, expect=words)
    else:
        refused("sweep", command[0], sweep, *command[1:], expect=["sweep.json", *words])
    assert not list((sweep / "logs").glob("*.pid"))


# ------------------------------------------------ a near-miss of a built-in dataset's name

@pytest.mark.parametrize("args", [["data", "fashion_mnistt"], ["data", "Fashion-MNIST", "--json"],
                                  ["data", "fashion mnist"], ["data", "zalando-datasets/fashion_mnistt"]])
def test_a_near_miss_of_a_built_in_dataset_suggests_it(args, refused, monkeypatch):
    # Offline, the Hub answers from its local cache only: the same answer on any machine. A real Hub
    # dataset of that name would still be loaded (the Hub is asked before the suggestion is made).
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VITBENCH_CACHE", str(refused.dir / "cache"))
    refused(*args, expect=[f"unknown dataset '{args[1]}'", "did you mean fashion_mnist?"])


# ------------------------------------------------ train: what the device or the run dir cannot take

TRAIN_CASES = [
    # Lightning would train in bf16 and say so in a warning only; config.yaml would say 16-mixed.
    (["--precision", "16-mixed", "--accelerator", "cpu"], ["trainer.precision 16-mixed", "--precision bf16-mixed"]),
    # overrides the backbone's own code rejects: the override is named, not the backbone's build()
    (["--backbone", "vit", "--set", "model.overrides.depth=-1"],
     ["model.overrides.depth=-1: backbone 'vit'", "build() failed", "pass another value, or drop the override"]),
    (["--backbone", "vit", "--set", "model.overrides.embed_dim=30"],
     ["model.overrides.embed_dim=30", "divisible by num_heads"]),
    (["--backbone", "resnet", "--set", "model.overrides.layers=[1, 1]"],
     ["model.overrides.layers=[1, 1]: backbone 'resnet'", "its model failed on a [2, 1, 28, 28] batch"]),
]


@pytest.mark.parametrize("args,expect", TRAIN_CASES, ids=lambda v: " ".join(v)[:50] if isinstance(v, list) else None)
def test_train_refuses(args, expect, refused, tiny_fashion_mnist):
    refused("train", "--dataset", tiny_fashion_mnist, "--max-steps", "2", "--wandb", "disabled", *args, expect=expect)


def test_resuming_with_another_config_names_the_keys_that_differ(refused, tiny_fashion_mnist, capfd):
    import yaml

    out = refused.dir / "run"
    args = ["train", "--dataset", tiny_fashion_mnist, "--max-steps", "2", "--batch-size", "64", "--wandb", "disabled",
            "--accelerator", "cpu", "--out", out]
    assert main([str(a) for a in [*args, "--print-config"]]) == 0
    saved = yaml.safe_load(capfd.readouterr().out)
    saved["model"]["image_size"] = 28  # what the run resolves from the data
    saved["optim"]["lr"], saved["seed"] = 0.002, 3
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump(saved))
    refused(*args, "--lr", "0.001", expect=[f"{out} holds an unfinished run with another config",
                                            "seed: 3 in the run dir, 0 now",
                                            "optim.lr: 0.002 in the run dir, 0.001 now"])


# ------------------------------------------------ a slow preparation that fails: progress lines, then one error

def _fashion_mnist_idx():
    from vitbench.data.fashion_mnist import SYSTEM_DIR

    return SYSTEM_DIR if (SYSTEM_DIR / "train-images-idx3-ubyte.gz").exists() else None


def _truncated_idx(t: Path, name: str) -> dict:
    import shutil

    idx = t / "idx"
    shutil.copytree(_fashion_mnist_idx(), idx)
    data = (idx / name).read_bytes()
    (idx / name).write_bytes(data[: len(data) * 3 // 4])
    return {"VITBENCH_DATA_DIR": str(idx), "VITBENCH_CACHE": str(t / "cache")}


def _cache_folder_is_a_file(t: Path) -> dict:
    (t / "cache").mkdir()
    (t / "cache" / "datasets").write_text("not a folder")  # found only when the cache is written, after encoding
    return {"VITBENCH_DATA_DIR": str(_fashion_mnist_idx()), "VITBENCH_CACHE": str(t / "cache")}


@pytest.mark.skipif(_fashion_mnist_idx() is None, reason="needs apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("setup,words,progressed", [
    # every IDX file is read and checked before the progress starts: the error is the only line
    (lambda t: _truncated_idx(t, "train-images-idx3-ubyte.gz"), ["train-images-idx3-ubyte.gz is truncated"], False),
    (lambda t: _truncated_idx(t, "t10k-images-idx3-ubyte.gz"), ["t10k-images-idx3-ubyte.gz is truncated"], False),
    (_cache_folder_is_a_file, ["cannot write the Fashion-MNIST cache", "set VITBENCH_CACHE"], True),
], ids=["train-images-truncated", "test-images-truncated", "cache-unwritable-after-encoding"])
def test_a_preparation_that_fails_ends_with_one_error_line_and_caches_nothing(setup, words, progressed, tmp_path,
                                                                                capfd, monkeypatch):
    from vitbench import utils

    # Progress from the first moment: what a user on a slow machine sees before the error.
    monkeypatch.setattr(utils, "DELAY", 0.0)
    monkeypatch.setattr(utils, "EVERY", 0.05)
    for key, value in setup(tmp_path).items():
        monkeypatch.setenv(key, value)
    cache_before = tree(tmp_path / "cache") if (tmp_path / "cache").exists() else None
    capfd.readouterr()
    assert main(["data", "fashion_mnist"]) == 2
    out, err = capfd.readouterr()
    *progress, last = err.strip().splitlines()
    assert out == "" and "Traceback" not in err
    assert last.startswith("vitbench: error: ") and all(w in last for w in words), last
    assert all(line.startswith("vitbench: preparing fashion_mnist") for line in progress), err
    assert bool(progress) == progressed, err
    # Nothing half-written: the cache is as it was (absent, or holding only what the case put there).
    after = tree(tmp_path / "cache") if (tmp_path / "cache").exists() else None
    assert after == cache_before


# ------------------------------------------------ report and analyze: where they write, what they read

def _finished_runs(root: Path, results: dict | None = None) -> Path:
    """A folder of two finished runs' results.json (what `vitbench report` reads from a folder of runs)."""
    import json

    for seed in (0, 1):
        run = root / "runs" / f"resnet-s{seed}"
        run.mkdir(parents=True)
        (run / "results.json").write_text(json.dumps(results or {
            "backbone": "resnet", "preset": "micro", "samples_per_class": 5, "seed": seed, "n_train": 50,
            "test_acc": 0.5 + seed / 10}))
    return root / "runs"


def _out_is_a_file(t: Path) -> list:
    (t / "o").write_text("notes")
    return ["report", _finished_runs(t), "--out", t / "o"]


def _results_link_to_dev_zero(t: Path) -> list:
    runs = _finished_runs(t)
    (runs / "resnet-s1" / "results.json").unlink()
    (runs / "resnet-s1" / "results.json").symlink_to("/dev/zero")
    return ["report", runs]


def _huge_results(t: Path) -> list:
    runs = _finished_runs(t)
    with open(runs / "resnet-s0" / "results.json", "r+b") as f:
        f.truncate(17 * 2**20)  # sparse: 17 MiB that cost no disk
    return ["report", runs]


def _huge_config(t: Path) -> list:
    run = _finished_runs(t, {"backbone": "vit", "preset": "micro", "image_size": 28, "in_chans": 1,
                             "num_classes": 10}) / "resnet-s0"
    with open(run / "config.yaml", "wb") as f:
        f.truncate(17 * 2**20)
    return ["analyze", "attention", run]


OUTPUT_AND_RUN_FILE_CASES = {
    "report --out is a file": (_out_is_a_file, ["cannot write the report to", "it is a file, not a folder",
                                                "pass another --out"]),
    "attention --images huge": (lambda t: ["analyze", "attention", t / "run", "--images", "1000000000"],
                                ["--images 1000000000: not between 1 and 64", "pass e.g. --images 8"]),
    "attention --images 0": (lambda t: ["analyze", "attention", t / "run", "--images", "0"],
                             ["--images 0: not between 1 and 64"]),
    "results.json is /dev/zero": (_results_link_to_dev_zero, ["resnet-s1/results.json is larger than 16 MiB",
                                                              "then rerun vitbench report"]),
    "results.json is 17 MiB": (_huge_results, ["resnet-s0/results.json is larger than 16 MiB"]),
    "config.yaml is 17 MiB": (_huge_config, ["resnet-s0/config.yaml is larger than 16 MiB",
                                                            "pass a run directory written by `vitbench train`"]),
}


@pytest.mark.parametrize("case", list(OUTPUT_AND_RUN_FILE_CASES))
def test_report_and_analyze_refuse_a_bad_output_or_run_file(case, refused):
    setup, words = OUTPUT_AND_RUN_FILE_CASES[case]
    refused(*setup(refused.dir), expect=words)


def test_a_misspelt_override_edited_into_sweep_json_is_refused_by_resume(planned, refused):
    """Loading checks only the schema; `resume` asks the backbone before it starts (or writes) anything."""
    import json
    import shutil

    sweep = refused.dir / "sweep"
    shutil.copytree(planned, sweep)
    data = json.loads((sweep / "sweep.json").read_text().replace(str(planned.resolve()), str(sweep.resolve())))
    _set("model", "overrides", {"depthh": 1}, task=1)(data)
    (sweep / "sweep.json").write_text(json.dumps(data))
    (sweep / "jobs.json").write_text(json.dumps({"mode": "local", "submissions": []}))
    refused("sweep", "resume", sweep, expect=["sweep.json", "task 1", "no override 'depthh'"])
    assert not list((sweep / "logs").glob("*"))
