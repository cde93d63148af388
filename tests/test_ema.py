"""Model EMA (``optim.ema_decay``) as a user turns it on: validation, best.ckpt and the test measure the
EMA weights, checkpoints hold them, a stopped run resumes to the very results of an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

EMA = ["--set", "optim.ema_decay=0.999"]
EMA_PREFIX, MODEL_PREFIX = "ema.module.", "model."


def train_args(dataset: str, out: Path, *extra: str, backbone: str = "resnet", epochs: int = 6) -> list[str]:
    # 360 training images in batches of 32: 12 steps per epoch.
    return [sys.executable, "-m", "vitbench", "train", "--backbone", backbone, "--preset", "micro",
            "--dataset", dataset, "--max-epochs", str(epochs), "--batch-size", "32", "--out", str(out),
            "--wandb", "disabled", *extra]


def env_one_thread() -> dict:
    # Two runs at once on a small machine: one thread each keeps them fast and their arithmetic alike.
    return dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def train(args: list[str], fresh: bool = False) -> dict:
    """``vitbench train ARGS`` (``args`` from :func:`train_args`): in this process, the CLI's own code path
    without a new interpreter's seconds of imports, or with ``fresh`` in a new one, as a resumed job is."""
    if fresh:
        r = subprocess.run(args, capture_output=True, text=True, timeout=600, env=env_one_thread())
        assert r.returncode == 0, r.stderr[-3000:]
    else:
        from vitbench.cli import main

        assert main(args[3:]) == 0  # without [python, -m, vitbench]
    return json.loads((Path(args[args.index("--out") + 1]) / "results.json").read_text())


def checkpoint_state(out: Path, name: str = "best.ckpt") -> dict:
    return torch.load(out / "checkpoints" / name, map_location="cpu", weights_only=True)["state_dict"]


def weights(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def val_losses(out: Path) -> list[float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in rows if r["val_acc"] is not None]


@pytest.mark.slow
def test_ema_weights_are_validated_checkpointed_and_tested(tiny_fashion_mnist, tmp_path):
    from vitbench.analysis.runs import load_run, test_images

    train(train_args(tiny_fashion_mnist, tmp_path / "plain"))
    train(train_args(tiny_fashion_mnist, tmp_path / "ema", *EMA))
    assert yaml.safe_load((tmp_path / "ema" / "config.yaml").read_text())["optim"]["ema_decay"] == 0.999
    assert yaml.safe_load((tmp_path / "plain" / "config.yaml").read_text())["optim"]["ema_decay"] is None

    # Same seed, same training: only what validation measures differs.
    assert val_losses(tmp_path / "plain") != val_losses(tmp_path / "ema")

    plain_state, state = checkpoint_state(tmp_path / "plain"), checkpoint_state(tmp_path / "ema")
    assert not weights(plain_state, EMA_PREFIX)
    ema_weights, model_weights = weights(state, EMA_PREFIX), weights(state, MODEL_PREFIX)
    assert ema_weights.keys() == model_weights.keys()
    assert any(not torch.equal(ema_weights[k], model_weights[k])
               for k in ema_weights if ema_weights[k].is_floating_point())

    # results.json's test accuracy is the EMA's, and so is the model `vitbench analyze` rebuilds.
    results = json.loads((tmp_path / "ema" / "results.json").read_text())
    run = load_run(tmp_path / "ema")
    assert all(torch.equal(v, ema_weights[k]) for k, v in run.model.state_dict().items())
    images, labels, _ = test_images(run, results["n_test"])
    with torch.no_grad():
        acc = (run.model(images).argmax(1) == labels).float().mean().item()
    assert abs(acc - results["test_acc"]) < 1e-6


@pytest.mark.slow
def test_stopped_ema_run_resumes_to_the_uninterrupted_results(tiny_fashion_mnist, tmp_path):
    reference, out = tmp_path / "reference", tmp_path / "stopped"
    ref = subprocess.Popen(train_args(tiny_fashion_mnist, reference, *EMA), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, env=env_one_thread())
    log = tmp_path / "first.out"
    with log.open("w") as stdout:
        first = subprocess.Popen(train_args(tiny_fashion_mnist, out, *EMA), stdout=stdout, stderr=subprocess.PIPE,
                                 text=True, env=env_one_thread())
        deadline = time.monotonic() + 300
        while sum(line.startswith("epoch ") for line in log.read_text().splitlines()) < 2:
            assert first.poll() is None and time.monotonic() < deadline, "the run never finished its second epoch"
            time.sleep(0.05)
        first.send_signal(signal.SIGTERM)  # a checkpoint at the next batch boundary, mid-epoch
        _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert weights(torch.load(out / "hpc_ckpt_1.ckpt", weights_only=True)["state_dict"], EMA_PREFIX)

    resumed = train(train_args(tiny_fashion_mnist, out, *EMA), fresh=True)
    _, err = ref.communicate(timeout=600)
    assert ref.returncode == 0, err[-3000:]
    uninterrupted = json.loads((reference / "results.json").read_text())
    for key in ("test_acc", "test_acc5", "best_val_acc", "val_history", "steps"):
        assert resumed[key] == uninterrupted[key], key
    assert val_losses(out) == val_losses(reference)
    ours = weights(checkpoint_state(out, "last.ckpt"), EMA_PREFIX)
    theirs = weights(checkpoint_state(reference, "last.ckpt"), EMA_PREFIX)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


@pytest.mark.slow
def test_a_distilled_student_averages_itself_never_its_teacher(tiny_fashion_mnist, tmp_path):
    train(train_args(tiny_fashion_mnist, tmp_path / "teacher", epochs=1))
    train(train_args(tiny_fashion_mnist, tmp_path / "student", *EMA, "--teacher", str(tmp_path / "teacher"),
                     backbone="deit", epochs=2))
    state = checkpoint_state(tmp_path / "student")
    student = weights(state, MODEL_PREFIX)
    assert weights(state, EMA_PREFIX).keys() == student.keys() and "head_dist.weight" in student
    assert not [k for k in state if "teacher" in k]


@pytest.mark.parametrize("decay", ["1.5", "0", "x"])
def test_a_bad_decay_is_a_one_line_error_and_writes_nothing(decay, tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "vitbench", "train", "--backbone", "resnet", "--out", str(out),
                        "--wandb", "disabled", "--set", f"optim.ema_decay={decay}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in err and "optim.ema_decay" in err, err
    assert not out.exists()
