"""Keys declared once, read the same everywhere: experiment files, ``--set``, sweep flags, the DataModule.

Numbers written with an exponent (``1e-2``, ``5e-3``) are numbers in every YAML vitbench reads,
as people (and Python, and YAML 1.2) read them; ``--parallel`` is refused as ``local.parallel``
is; the DataModule keeps the values its checks return. Everything runs the real CLI in this
process (``vitbench.cli.main``) or the real classes; nothing trains.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from vitbench.cli import main

# As people type an experiment file: unquoted exponents, an unquoted base-60-looking time.
EXPONENTS = """\
name: exponents
dataset: fashion_mnist
fractions: [1e-2, 5e-3, 1.0]
seeds: [0]
budget: {max_steps: 2}
backbones:
  - {name: vit, overrides: {drop_rate: 1e-1}}
train:
  optim: {lr: 1e-3, weight_decay: 5E-2}
resources: {accelerator: cpu, time: 30:00}
wandb: {mode: disabled}
"""


def test_exponents_in_an_experiment_file_are_numbers(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPONENTS)
    sweep_dir = tmp_path / "sweep"
    assert main(["sweep", "plan", str(exp), "--sweep-dir", str(sweep_dir), "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    configs = [t["config"] for t in plan["tasks"]]
    assert [c["data"]["fraction"] for c in configs] == [0.01, 0.005, 1.0]
    assert {(c["optim"]["lr"], c["optim"]["weight_decay"]) for c in configs} == {(0.001, 0.05)}
    # A constructor argument has no declared type to coerce a string: it must arrive a number.
    assert {c["model"]["overrides"]["drop_rate"] for c in configs} == {0.1}
    assert plan["experiment"]["resources"]["time"] == "30:00"

    # `sweep resume` reads the copied experiment file the way `sweep plan` read the original.
    from vitbench.sweep.sweepdir import load_sweep_experiment

    again = load_sweep_experiment(sweep_dir)
    assert again.fractions == [0.01, 0.005, 1.0] and again.train["optim"]["lr"] == 0.001
    assert again.resources.time == "30:00"


def test_exponents_in_set_overrides_are_numbers(capsys):
    assert main(["train", "--backbone", "vit", "--set", "optim.lr=5e-4", "--set", "model.overrides.drop_rate=1e-1",
                 "--set", "data.fraction=1e-1", "--print-config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["optim"]["lr"] == 0.0005 and config["data"]["fraction"] == 0.1
    assert config["model"]["overrides"]["drop_rate"] == 0.1  # a float, not the string '1e-1'


def test_words_that_look_like_exponents_stay_strings(capsys):
    """Only a whole number with an exponent is a number: run names and tags stay as written."""
    assert main(["train", "--set", "wandb.tags=[e5, 1e, 1e3x]", "--set", "wandb.name=e10", "--print-config"]) == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["wandb"]["tags"] == ["e5", "1e", "1e3x"] and config["wandb"]["name"] == "e10"


def test_sweep_run_refuses_a_bad_parallel_as_the_experiment_key_would(tmp_path, monkeypatch, capfd):
    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPONENTS)
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    assert main(["sweep", "run", str(exp), "--sweep-dir", str(tmp_path / "sweep"), "--parallel", "0"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("vitbench: error: --parallel must be >= 1, got 0: slots the local runner keeps busy"), err
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == ["exp.yaml"]


def test_experiment_wandb_keys_are_a_runs(tmp_path, capsys):
    """An experiment's `wandb` section takes what a run's does, with a run's defaults."""
    from vitbench.config import TrainConfig

    exp = tmp_path / "exp.yaml"
    exp.write_text(EXPONENTS.replace("wandb: {mode: disabled}\n", ""))
    assert main(["sweep", "plan", str(exp), "--sweep-dir", str(tmp_path / "sweep"), "--json"]) == 0
    wandb = json.loads(capsys.readouterr().out)["tasks"][0]["config"]["wandb"]
    run = TrainConfig().wandb
    assert (wandb["project"], wandb["mode"]) == (run.project, run.mode)


def test_datamodule_keeps_the_checked_values():
    """Values passed from Python as text are the numbers and flags they mean, as from a config file."""
    from vitbench.data.datamodule import ImageClassificationDataModule

    dm = ImageClassificationDataModule(fraction="0.5", seed="3", batch_size="64", hflip="no", image_size="32")
    h = dm.hparams
    assert (h.fraction, h.seed, h.batch_size, h.hflip, h.image_size) == (0.5, 3, 64, False, 32)
    assert dm.hflip is False and dm.hparams_initial["fraction"] == 0.5
