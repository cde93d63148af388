"""``vitbench train`` as a user runs it: every registered backbone, distillation, plugins, W&B, bad input."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vitbench.backbones import get_backbone, list_backbones
from vitbench.training.distillation import DistillationLoss

PLUGIN = Path(__file__).parent / "plugins" / "tiny_mlp.py"
RESULT_KEYS = {
    "backbone", "family", "preset", "dataset", "fraction", "n_train", "seed", "epochs", "steps", "test_acc",
    "test_acc5", "best_val_acc", "params", "gflops", "images_per_s", "wall_time_s", "train_time_s", "world_size",
    "teacher", "cycles", "vitbench_version", "software", "device",
}


def vitbench(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "vitbench", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def train(out, *args, fresh: bool = False):
    """``vitbench train --out OUT ARGS``: in this process, as a notebook calls it (no interpreter start-up,
    which costs more than a micro run's training), or with ``fresh`` in a new one (a plugin registers for
    good in the process that loads it)."""
    argv = ["train", "--out", out, "--wandb", "disabled", *args]
    if fresh:
        r = vitbench(*argv)
        assert r.returncode == 0, r.stderr[-3000:]
    else:
        from vitbench.cli import main

        assert main([str(a) for a in argv]) == 0
    return json.loads((Path(out) / "results.json").read_text())


def assert_one_line_error(r, *words):
    assert r.returncode == 2, r.stderr[-2000:]
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def expected_evaluations(results: dict) -> int:
    """How often a run validates, by the rule every run follows (vitbench.training.schedule)."""
    from vitbench.training.schedule import cycle_schedule

    return cycle_schedule(max_steps=results["steps"], max_epochs=None, min_steps=None, cycles=1,
                          n_train=results["n_train"], n_val=results["n_val"], batch_size=64).evaluations


@pytest.fixture(scope="session")
def resnet_teacher(tmp_path_factory):
    """ResNet-micro on 5% of the real Fashion-MNIST (2,940 images): the baseline and the DeiT teacher.

    2% of the training split held out for validation (1,200 images, not the default 6,000): the run
    validates at least 5 times, which on 6,000 images costs about as much as its training. The test
    set is the full one (10,000 images)."""
    out = tmp_path_factory.mktemp("teacher") / "resnet"
    r = vitbench("train", "--backbone", "resnet", "--preset", "micro", "--fraction", "0.05", "--max-epochs", "4",
                 "--batch-size", "64", "--lr", "3e-3", "--set", "data.val_fraction=0.02", "--out", out,
                 "--wandb", "offline")
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_resnet_on_5_percent_of_fashion_mnist_beats_70_percent(resnet_teacher):
    results = json.loads((resnet_teacher / "results.json").read_text())
    assert RESULT_KEYS <= set(results)
    assert results["test_acc"] > 0.70
    assert results["n_train"] == 2940 and results["fraction"] == 0.05 and results["world_size"] == 1
    assert results["n_val"] == 1200 and results["n_test"] == 10000
    assert results["teacher"] is None and results["family"] == "cnn"
    # where the numbers came from: the installed versions, and the device it trained on
    import lightning
    import timm

    assert results["software"] == (f"python {platform.python_version()}, torch {torch.__version__}, "
                                   f"lightning {lightning.__version__}, timm {timm.__version__}")
    if torch.cuda.is_available():
        assert results["device"] == f"cuda: {torch.cuda.get_device_name(0)}"
    else:
        assert results["device"].startswith("cpu: ") and len(results["device"]) > len("cpu: ")
    for key in ("test_acc", "test_acc5", "best_val_acc"):
        assert 0.0 <= results[key] <= 1.0
    assert results["test_acc5"] >= results["test_acc"]
    epochs = [json.loads(line) for line in (resnet_teacher / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1, 2, 3]
    assert all(e["images_per_s"] > 0 and e["train_loss"] > 0 for e in epochs)
    # Every validation is in val_history; metrics.jsonl has a line per epoch, with the epoch's last validation
    # (5 validations in 4 epochs: two in the last one).
    history = results["val_history"]
    assert len(history) == results["validations"] == expected_evaluations(results)
    steps_per_epoch = results["steps"] // 4
    validated = [e["val_acc"] for e in epochs if e["val_acc"] is not None]
    assert len(validated) == len({(step - 1) // steps_per_epoch for step, _ in history})
    assert epochs[-1]["val_acc"] is not None
    assert max(acc for _, acc in history) == pytest.approx(results["best_val_acc"])
    assert (resnet_teacher / "checkpoints" / "best.ckpt").is_file()
    assert (resnet_teacher / "checkpoints" / "last.ckpt").is_file()
    config = yaml.safe_load((resnet_teacher / "config.yaml").read_text())
    assert (config["model"]["backbone"] == "resnet" and config["data"]["fraction"] == 0.05
            and config["model"]["image_size"] == 28)


# A model that learned nothing scores 0.10 +- 0.02 on the 200 test images (10 classes). The tests of a
# training path (bf16, compile, distillation) train too briefly for a higher bar: over seeds 0-3 their
# runs scored 0.25-0.39 (ViT 15 epochs, bf16 and fp32) and 0.29-0.37 (distilled DeiT 10 epochs, hard and
# soft), so a bar of 0.3 passed or failed with the seed. 0.2 is 5 standard deviations above chance.
LEARNED = 0.2

# Epochs each needs to beat chance clearly on 360 images: the CNN and the pooling transformers are at
# 0.45-0.6 test accuracy after 8 (0.2-0.3 for the plain transformers, which need about 25).
BUILTIN_EPOCHS = {"resnet": 8, "pit": 8, "pit_distilled": 8, "vit": 25, "deit": 25, "swin": 25}


@pytest.mark.slow
@pytest.mark.parametrize("backbone", [b for b in list_backbones() if b in BUILTIN_EPOCHS])
def test_every_builtin_trains_and_beats_chance(backbone, tiny_fashion_mnist, tmp_path):
    results = train(tmp_path / "run", "--backbone", backbone, "--preset", "micro", "--dataset", tiny_fashion_mnist,
                    "--max-epochs", BUILTIN_EPOCHS[backbone], "--batch-size", "32", "--lr", "3e-3")
    assert results["backbone"] == backbone and results["family"] == get_backbone(backbone).family
    assert results["n_train"] == 360 and results["n_test"] == 200
    assert results["test_acc"] > 0.3, results  # chance is 0.1


@pytest.mark.parametrize("kind", ["hard", "soft"])
def test_deit_distils_from_a_resnet_teacher_run(kind, resnet_teacher, tiny_fashion_mnist, tmp_path):
    # The student learns on the tiny copy (its teacher saw the full dataset: the same classes are what counts).
    results = train(tmp_path / "deit", "--backbone", "deit", "--preset", "micro", "--dataset", tiny_fashion_mnist,
                    "--max-epochs", "10", "--batch-size", "32", "--lr", "3e-3", "--teacher", resnet_teacher,
                    "--distillation", kind)
    assert results["teacher"] == str(resnet_teacher.resolve()) and results["distillation"] == kind
    assert results["label"] == "deit_distilled"
    assert results["test_acc"] > LEARNED


def test_distillation_loss_follows_deit():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))
    x, y = torch.randn(8, 1, 2, 2), torch.randint(0, 3, (8,))
    cls_logits, dist_logits = torch.randn(8, 3), torch.randn(8, 3)
    ce = torch.nn.CrossEntropyLoss()
    hard = DistillationLoss(ce, teacher, "hard", alpha=0.5).train()
    assert not teacher.training  # frozen and in eval mode even when the module trains
    t = teacher(x)
    expected_hard = 0.5 * ce(cls_logits, y) + 0.5 * torch.nn.functional.cross_entropy(dist_logits, t.argmax(1))
    torch.testing.assert_close(hard(x, (cls_logits, dist_logits), y), expected_hard)
    soft = DistillationLoss(ce, teacher, "soft", alpha=0.3, tau=2.0)
    p_t = torch.softmax(t / 2, 1)
    kl = (p_t * (p_t.log() - torch.log_softmax(dist_logits / 2, 1))).sum() * 4 / dist_logits.numel()
    torch.testing.assert_close(soft(x, (cls_logits, dist_logits), y), 0.7 * ce(cls_logits, y) + 0.3 * kl)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_plugin_backbone_trains_through_the_cli(tiny_fashion_mnist, tmp_path):
    results = train(tmp_path / "mlp", "--plugin", PLUGIN, "--backbone", "tiny_mlp", "--dataset", tiny_fashion_mnist,
                    "--max-epochs", "3", fresh=True)
    assert results["backbone"] == "tiny_mlp" and results["family"] == "mlp"
    assert results["params"] == 784 * 64 + 64 + 64 * 10 + 10
    assert results["test_acc"] > 0.3


def test_offline_wandb_run_holds_config_val_curve_and_test_accuracy(resnet_teacher):
    results = json.loads((resnet_teacher / "results.json").read_text())
    (run_dir,) = (resnet_teacher / "wandb").glob("offline-run-*")
    r = subprocess.run([Path(sys.executable).parent / "wandb", "leet", "inspect", "--json", str(run_dir)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    text = json.dumps(records)
    assert results["wandb_run_id"] in text
    config = {}  # the config given at init (the "run" record), then any later updates
    for rec in records:
        update = (rec.get("run") or {}).get("config") if rec.get("type") == "run" else rec.get("config")
        if rec.get("type") in ("run", "config") and update:
            config.update(update.get("update", {}))
    assert config["backbone"] == "resnet" and config["family"] == "cnn" and config["n_train"] == 2940
    assert config["model"]["preset"] == "micro" and config["budget"]["max_epochs"] == 4
    history = [rec for rec in records if rec.get("type") == "history"]
    val_rows = [h for h in history if '"val_acc"' in json.dumps(h)]
    assert len(val_rows) == expected_evaluations(results)
    final = [h for h in history if '"n_train"' in json.dumps(h) and '"test_acc"' in json.dumps(h)]
    assert final and str(round(results["test_acc"], 4))[:5] in json.dumps(final)


def _bad_inputs(teacher: Path, other_classes_run: Path):
    yield "unknown backbone", ["--backbone", "vitt"], ["unknown backbone 'vitt'", "resnet"]
    yield "unknown preset", ["--backbone", "vit", "--preset", "huge"], ["no preset 'huge'"]
    yield "image size", ["--backbone", "vit", "--image-size", "30"], ["30 px", "28, 32, 64"]
    yield "no distillation head", ["--backbone", "vit", "--teacher", teacher], ["no distillation head"]
    yield ("missing teacher", ["--backbone", "deit", "--teacher", teacher.parent / "nope"],
           ["not a finished vitbench run"])
    yield "teacher on other classes", ["--backbone", "deit", "--teacher", other_classes_run], ["other classes"]
    yield "plugin does not import", ["--plugin", "no_such_plugin_module"], ["no_such_plugin_module", "does not import"]
    yield "fraction", ["--fraction", "1.5"], ["fraction"]
    yield "trainer settings", ["--set", "trainer.accelerator=gpu"], ["trainer settings rejected"]
    yield "learning rate", ["--lr", "-1"], ["optim.lr must be > 0"]
    yield ("config key", ["--set", "optim.weight_decy=0.1"],
           ["unknown config key 'optim.weight_decy'", "did you mean 'weight_decay'"])


@pytest.fixture(scope="session")
def other_classes_run(tmp_path_factory):
    """A finished run on a 3-class dataset: not a valid teacher for Fashion-MNIST students."""
    import numpy as np
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Image

    root = tmp_path_factory.mktemp("other")
    rng = np.random.default_rng(0)
    feats = Features({"image": Image(), "label": ClassLabel(names=["a", "b", "c"])})
    def split(n):
        return Dataset.from_dict({"image": [rng.integers(0, 255, (28, 28), dtype=np.uint8) for _ in range(n)],
                                  "label": [i % 3 for i in range(n)]}, features=feats)
    DatasetDict(train=split(60), test=split(30)).save_to_disk(str(root / "abc"))
    train(root / "run", "--backbone", "resnet", "--dataset", root / "abc", "--max-epochs", "1")
    return root / "run"


def test_bad_input_is_one_line_exit_2_and_writes_nothing(resnet_teacher, other_classes_run, refused):
    for name, args, words in _bad_inputs(resnet_teacher, other_classes_run):
        refused("train", "--out", refused.dir / name.replace(" ", "_"), "--wandb", "disabled", "--max-epochs", "1",
                *args, expect=words)


def test_print_config_checks_the_backbone():
    r = vitbench("train", "--backbone", "vit", "--preset", "huge", "--print-config")
    assert_one_line_error(r, "no preset 'huge'")
    r = vitbench("train", "--backbone", "vit", "--print-config")
    assert r.returncode == 0 and yaml.safe_load(r.stdout)["model"]["backbone"] == "vit"


def test_finished_run_dir_is_not_overwritten(resnet_teacher, refused):
    before = (resnet_teacher / "results.json").read_text()
    refused("train", "--out", resnet_teacher, "--backbone", "resnet", "--fraction", "0.05",
            expect=["already holds a finished run"])
    assert (resnet_teacher / "results.json").read_text() == before


@pytest.mark.slow
@pytest.mark.parametrize("option", [["--precision", "bf16-mixed"], ["--compile"]], ids=["bf16-mixed", "compile"])
def test_bf16_and_compile_train_on_cpu(option, tiny_fashion_mnist, tmp_path):
    out = tmp_path / "run"
    results = train(out, "--backbone", "vit", "--preset", "micro", "--dataset", tiny_fashion_mnist,
                    "--max-epochs", "15", "--batch-size", "32", "--lr", "3e-3", *option)
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["trainer"]["precision"] == ("bf16-mixed" if "bf16-mixed" in option else "32-true")
    assert config["trainer"]["compile"] == ("--compile" in option)
    assert results["test_acc"] > LEARNED
    # a compiled model saves the same state_dict keys: its checkpoint loads into a plain model (weights only)
    state = torch.load(out / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert not any("_orig_mod" in k for k in state)


def test_validation_costs_at_most_a_tenth_of_training_beyond_what_the_convergence_check_needs():
    from vitbench.training.schedule import (
        EVAL_SPEEDUP,
        MAX_EVALS,
        MIN_EVALS,
        cycle_schedule,
        total_steps,
        validation_interval,
    )

    def evaluations(steps: int, n_val: int, batch_size: int) -> int:
        return cycle_schedule(max_steps=steps, max_epochs=None, min_steps=None, cycles=1, n_train=1, n_val=n_val,
                              batch_size=batch_size).evaluations

    for steps, n_val, batch in [(100, 6000, 128), (20000, 6000, 128), (150, 1200, 64), (300, 40, 32), (5, 6000, 128),
                                (10, 10, 64), (3, 6000, 128), (125, 6000, 64), (600, 3000, 64), (1000, 3000, 64)]:
        evals = evaluations(steps, n_val=n_val, batch_size=batch)
        assert min(MIN_EVALS, steps) <= evals <= MAX_EVALS
        every = validation_interval(steps, n_val=n_val, batch_size=batch)
        # Beyond the 5 the check needs (as many as an interval of whole steps gives), at most ~10 %.
        at_minimum = every in (max(1, steps // MIN_EVALS), -(-steps // MIN_EVALS))
        assert at_minimum or evals * n_val / EVAL_SPEEDUP <= 0.1 * steps * batch
        assert steps // every == evals and steps - evals * every < every  # the last one within an interval of the end
        if steps >= 20:  # the convergence check's last quarter holds two validations, not just the last
            assert sum(k * every > 0.75 * steps for k in range(1, evals + 1)) >= 2, (steps, every)
    assert evaluations(20000, n_val=6000, batch_size=128) == MAX_EVALS  # long runs: a full validation curve
    assert evaluations(100, n_val=0, batch_size=128) == 0
    assert total_steps(max_steps=None, max_epochs=2, n_train=5400, batch_size=128) == 86
    assert total_steps(max_steps=None, max_epochs=2, n_train=160, batch_size=20, world_size=2) == 8
