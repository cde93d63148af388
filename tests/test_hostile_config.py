"""Hostile input to ``train``, ``backbones`` and ``sweep plan/submit``: a one-line error, exit 2, nothing written.

Misspelt backbone overrides, NaN and infinite numbers, image sizes that cannot fit in
memory, dataset names that are none of the kinds vitbench reads, SLURM sizes and times
sbatch would not read, and plugins that break the backbone contract (tests/plugins/).
Every case runs the real CLI in this process (``vitbench.cli.main``) from an empty
working directory, and checks that the tree under it is byte for byte what it was.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import yaml

from vitbench.config import BudgetConfig, DataConfig, TrainConfig, build_config
from vitbench.errors import VitbenchError

PLUGINS = Path(__file__).parent / "plugins"
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- train

TRAIN_CASES = [
    # misspelt and vitbench-owned backbone overrides
    (["--backbone", "vit", "--set", "model.overrides.embed_dimm=32"], ["'embed_dimm'", "did you mean 'embed_dim'?"]),
    (["--backbone", "vit", "--set", "model.overrides.embed_dimm=32", "--print-config"], ["did you mean 'embed_dim'?"]),
    (["--backbone", "resnet", "--set", "model.overrides.layer=[1,1,1,1]"], ["did you mean 'layers'?"]),
    (["--backbone", "swin", "--set", "model.overrides.window=4", "--print-config"], ["did you mean 'window_size'?"]),
    (["--backbone", "pit", "--set", "model.overrides.num_classes=3"], ["'num_classes' is set by vitbench"]),
    (["--backbone", "deit", "--set", "model.overrides.depht=2", "--print-config"], ["did you mean 'depth'?"]),
    (["--plugin", PLUGINS / "tiny_mlp.py", "--backbone", "tiny_mlp", "--set", "model.overrides.hiden=8"],
     ["did you mean 'hidden'?"]),
    (["--plugin", PLUGINS / "minimal.py", "--backbone", "minimal_mlp", "--set", "model.overrides.hidden=8"],
     ["has no override 'hidden'", "accepted_overrides()"]),
    # NaN and infinity, wherever they come from
    (["--lr", "nan"], ["optim.lr", "finite"]),
    (["--lr", "inf", "--print-config"], ["optim.lr", "finite"]),
    (["--set", "optim.weight_decay=inf"], ["optim.weight_decay", "finite"]),
    (["--set", "optim.warmup_fraction=.nan", "--print-config"], ["optim.warmup_fraction", "finite"]),
    (["--tau=-inf"], ["distill.tau", "finite"]),
    (["--set", "data.in_memory_limit_gb=1.0e999"], ["data.in_memory_limit_gb", "finite"]),
    (["--backbone", "vit", "--set", "model.overrides.drop_rate=.nan"], ["model.overrides.drop_rate", "finite"]),
    (["--backbone", "swin", "--set", "model.overrides.num_heads=[2, .inf]"],
     ["model.overrides.num_heads[1]", "finite"]),
    # other numbers out of bounds, and values that are not YAML
    (["--seed", "-1"], ["seed must be in"]),
    (["--seed", str(2**40)], ["seed must be in"]),
    (["--set", "data.random_crop_padding=-2"], ["data.random_crop_padding"]),
    (["--set", "optim.lr=[", "--print-config"], ["not valid YAML"]),
    (["--set", "plugins=[3]", "--print-config"], ["plugins must be a list of non-empty strings"]),
    # bounds, choices and keys that exclude each other: from the key's one declaration, wherever the value comes from
    (["--fraction", "1.5"], ["data.fraction must be in (0, 1], got 1.5"]),
    (["--set", "data.val_fraction=1", "--print-config"], ["data.val_fraction must be in [0, 1), got 1.0"]),
    (["--set", "optim.ema_decay=1.0"], ["optim.ema_decay must be in (0, 1)"]),
    (["--fraction", "0.5", "--set", "data.samples_per_class=5"], ["both data.fraction and data.samples_per_class"]),
    (["--distillation", "medium"], ["distill.kind: 'medium' is not one of hard, soft"]),
    # precisions whose model would not take the DataModule's float32 input are refused before a model exists
    (["--precision", "bf16-true"], ["trainer.precision: 'bf16-true' is not one of 32-true, bf16-mixed, 16-mixed"]),
    (["--set", "trainer.precision=64-true", "--print-config"], ["trainer.precision", "32-true, bf16-mixed, 16-mixed"]),
    # dataset names
    (["--dataset", "fashion-mnst"], ["unknown dataset 'fashion-mnst'", "did you mean 'fashion_mnist'?"]),
    (["--dataset", "Fashion_MNIST", "--print-config"], ["did you mean 'fashion_mnist'?"]),
    (["--dataset", "../../no/such/dir"], ["no such file or folder"]),
    (["--dataset", "cifar10!", "--print-config"], ["unknown dataset", "owner/name"]),
    # plugins that break the contract: caught before config.yaml or wandb/ exist
    (["--plugin", PLUGINS / "no_build.py", "--backbone", "no_build"], ["has no build()"]),
    (["--plugin", PLUGINS / "not_a_module.py", "--backbone", "not_a_module"], ["not a torch.nn.Module"]),
    (["--plugin", PLUGINS / "build_raises.py", "--backbone", "build_raises"], ["build() failed (KeyError"]),
    (["--plugin", PLUGINS / "wrong_shape.py", "--backbone", "wrong_shape"], ["[2, 11]", "expected logits [2, 10]"]),
    (["--plugin", PLUGINS / "forward_fails.py", "--backbone", "forward_fails"], ["failed on a [2, 1, 28, 28] batch"]),
]


@pytest.mark.parametrize("args,expect", TRAIN_CASES,
                         ids=lambda v: " ".join(map(str, v))[:60] if isinstance(v, list) else None)
def test_train_refuses(refused, tiny_fashion_mnist, args, expect):
    args = ["--dataset", tiny_fashion_mnist, *args] if "--dataset" not in args else args
    refused("train", "--max-steps", "2", "--wandb", "offline", *args, expect=expect)


def test_train_refuses_a_config_file_whose_keys_are_not_names(refused, tiny_fashion_mnist):
    config = refused.dir / "bad.yaml"
    config.write_text(f"data: {{dataset: {tiny_fashion_mnist}}}\ntrainer: {{1: x}}\n")
    refused("train", "--config", config, expect=["config key 1 in trainer is not a name", "valid keys"])


@pytest.mark.parametrize("args,expect", [
    # The input batch alone (128 images of 20,000 px) needs hundreds of GiB: refused before a model is built.
    (["--image-size", "20000"], ["the input alone", "needs about", "GiB", "--image-size"]),
    # 1 px patches at 512 px: 262,144 tokens an image; the activations a training step keeps need hundreds of GiB.
    (["--backbone", "vit", "--image-size", "512", "--set", "model.overrides.patch_size=1"],
     ["one training step at 512 px", "needs about", "--batch-size of at most"]),
], ids=["input", "activations"])
def test_train_refuses_what_cannot_fit_in_memory(refused, tiny_fashion_mnist, args, expect):
    refused("train", "--dataset", tiny_fashion_mnist, "--max-steps", "2", "--wandb", "offline", *args, expect=expect)


@pytest.mark.slow
def test_diverging_run_stops_without_results(tmp_path, tiny_fashion_mnist, capfd):
    """A learning rate of 1e30 is finite, so accepted; the loss then becomes NaN, and the run stops."""
    from vitbench.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--dataset", tiny_fashion_mnist, "--lr", "1e30", "--max-steps", "4", "--batch-size", "64",
               "--wandb", "disabled", "--out", str(out)])
    stderr = capfd.readouterr().err
    assert rc == 2, stderr[-3000:]
    err = stderr.strip().splitlines()
    assert err[-1].startswith("vitbench: error: the training loss became NaN or infinite"), stderr[-3000:]
    assert "lower optim.lr" in err[-1] and "Traceback" not in stderr
    assert not (out / "results.json").exists()


# ------------------------------------------------------------------ the config: declared once, checked once

def leaves(cls, prefix: str = ""):
    """(dotted key, field) of every key of config dataclass ``cls``."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaves(hints[f.name], f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", f


def test_every_config_key_has_its_help():
    keys = dict(leaves(TrainConfig))
    assert len(keys) > 50 and "data.fraction" in keys and "wandb.mode" in keys
    assert not [key for key, f in keys.items() if not f.metadata.get("help")]


def option_lines(command: str, monkeypatch, capsys) -> dict[str, str]:
    """``vitbench COMMAND --help``, one entry per argument (unwrapped): {flag or metavar: its usage and help}."""
    from vitbench.cli import main

    monkeypatch.setenv("COLUMNS", "1000")
    with pytest.raises(SystemExit):
        main([command, "--help"])
    entries: list[str] = []
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("  ") and line[2] != " ":
            entries.append(line)
        elif line.startswith("  ") and entries:  # the help of a long flag, on the next line
            entries[-1] += line
    return {entry.split()[0].rstrip(","): " ".join(entry.split()) for entry in entries}


@pytest.mark.parametrize("command,own", [("train", {"-h", "--config", "--set", "--print-config"}),
                                         ("data", {"-h", "--json", "--indices"})])
def test_flags_and_their_help_derive_from_the_config(command, own, monkeypatch, capsys):
    """Every other flag is a config key: named after it, its --help the key's help, bounds and default."""
    options = option_lines(command, monkeypatch, capsys)
    derived = set()
    for key, f in leaves(TrainConfig):
        flag = f"--{f.metadata['flag'] or f.name.replace('_', '-')}"
        flag = "DATASET" if (command, key) == ("data", "data.dataset") else flag
        if flag in options:
            derived.add(flag)
            assert f.metadata["help"] in options[flag], (key, options[flag])
    assert derived and set(options) == derived | own
    assert options["--fraction"] == ("--fraction FRACTION stratified share of each class's training images "
                                     "outside validation (in (0, 1]; default: 1.0)")
    assert options["--seed"].endswith(f"(in [0, {2**32 - 1}]; default: 0)")
    if command == "train":
        assert options["--precision"].startswith("--precision {32-true,bf16-mixed,16-mixed}")
        assert options["--distillation"].startswith("--distillation {hard,soft}")


def test_check_returns_a_checked_copy_and_changes_nothing():
    from vitbench.config import check

    cfg = TrainConfig(data=DataConfig(fraction="0.5"), budget=BudgetConfig())
    before = copy.deepcopy(cfg)
    checked = check(cfg)
    assert cfg == before and checked is not cfg
    assert checked.data.fraction == 0.5 and checked.budget.max_epochs == 10 and cfg.budget.max_epochs is None
    with pytest.raises(VitbenchError, match=r"^data.fraction must be in \(0, 1\], got 2.0"):
        check(TrainConfig(data=DataConfig(fraction=2.0)))
    with pytest.raises(VitbenchError, match=r"^batch_size must be >= 1, got 0"):
        check(DataConfig(batch_size=0))


def test_train_changes_nothing_it_is_given(tmp_path, monkeypatch, tiny_fashion_mnist):
    from vitbench.training import train

    monkeypatch.chdir(tmp_path)
    cfg = build_config({"data": {"dataset": tiny_fashion_mnist, "batch_size": 64}, "budget": {"max_steps": 2},
                        "wandb": {"mode": "disabled"}, "trainer": {"accelerator": "cpu"}})
    before = copy.deepcopy(cfg)
    train(cfg)
    assert cfg == before  # the preset, image size and run dir it resolved went into config.yaml, not into cfg
    written = yaml.safe_load((tmp_path / "runs" / "resnet-micro-f1-s0" / "config.yaml").read_text())
    assert written["out"] == str(Path("runs") / "resnet-micro-f1-s0")
    assert (written["model"]["preset"], written["model"]["image_size"]) == ("micro", 28)


def test_a_run_dir_an_older_vitbench_wrote_goes_on(capfd, tiny_fashion_mnist, refused):
    """Its config.yaml lacks the keys added since: they take their defaults, and the same command
    continues the run there; a key it has that vitbench does not know is still an error."""
    from vitbench.cli import main

    out = refused.dir / "run"
    args = ["train", "--dataset", tiny_fashion_mnist, "--max-steps", "2", "--batch-size", "64", "--wandb", "disabled",
            "--accelerator", "cpu", "--out", str(out)]
    assert main([*args, "--print-config"]) == 0
    old = yaml.safe_load(capfd.readouterr().out)
    old["model"]["image_size"] = 28  # what the run resolves from the data
    del old["optim"]["ema_decay"], old["budget"]["min_steps"]
    out.mkdir()
    (out / "config.yaml").write_text(yaml.safe_dump({**old, "optim": {**old["optim"], "lr_decay": 0.5}}))
    refused(*args, expect=[f"{out / 'config.yaml'}: unknown config key 'optim.lr_decay'"])

    (out / "config.yaml").write_text(yaml.safe_dump(old))
    assert main(args) == 0, capfd.readouterr().err
    assert (out / "results.json").is_file()
    assert yaml.safe_load((out / "config.yaml").read_text())["optim"]["ema_decay"] is None  # now written in full


# --------------------------------------------------------------------------------------- backbones

@pytest.mark.parametrize("plugin,expect", [
    ("no_build.py", ["backbone 'no_build'", "has no build()"]),
    ("not_a_module.py", ["backbone 'not_a_module'", "returned function, not a torch.nn.Module"]),
    ("build_raises.py", ["backbone 'build_raises'", "build() failed (KeyError: 'hidden')"]),
    ("wrong_shape.py", ["backbone 'wrong_shape'", "a tensor of shape [2, 11]", "expected logits [2, 10]"]),
    ("forward_fails.py", ["backbone 'forward_fails'", "failed on a [2, 1, 28, 28] batch", "mat1 and mat2"]),
])
def test_backbones_refuses_a_plugin_that_breaks_the_contract(refused, plugin, expect):
    # --preset default: only the plugins (the built-ins have micro, tiny and small), to keep it quick
    refused("backbones", "--plugin", PLUGINS / plugin, "--preset", "default", expect=expect, fresh=True)


@pytest.mark.parametrize("args,expect", [
    (["--num-classes", "0"], ["--num-classes"]),
    (["--in-chans", "-3"], ["--in-chans"]),
    (["--image-size", "0"], ["--image-size must be >= 1, got 0: input size in px"]),  # model.image_size's bound
])
def test_backbones_refuses_bad_sizes(refused, args, expect):
    refused("backbones", *args, expect=expect)


def test_backbones_lists_at_huge_sizes_quickly():
    """FLOPs and the contract check run on fake tensors: 4096 px costs no real forward pass."""
    import time

    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "vitbench", "backbones", "--preset", "micro", "--image-size", "4096",
                        "--in-chans", "3", "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["resnet"]["gflops"] > 100 and rows["vit"]["error"] is None and rows["swin"]["params"] > 0
    assert time.monotonic() - t0 < 120


# ------------------------------------------------------------------------------------------- sweep

def experiment(path: Path, **changes) -> Path:
    exp = {
        "name": "hostile", "dataset": "fashion_mnist", "fractions": [0.1], "seeds": [0],
        "budget": {"max_steps": 2}, "backbones": [{"name": "resnet"}, {"name": "vit"}],
        "resources": {"accelerator": "cpu", "mem": "4G", "time": "00:30:00"}, "wandb": {"mode": "disabled"},
    }
    for key, value in changes.items():
        exp[key] = {**exp[key], **value} if isinstance(value, dict) and isinstance(exp.get(key), dict) else value
    exp = {key: value for key, value in exp.items() if value is not None}
    path.write_text(yaml.safe_dump(exp))
    return path


SWEEP_CASES = [
    (dict(backbones=[{"name": "vit", "overrides": {"embed_dimm": 32}}]),
     ["backbones[0] (vit)", "did you mean 'embed_dim'?"]),
    (dict(backbones=[{"name": "resnet"}, {"name": "swin", "overrides": {"depth": [2, 2]}}]),
     ["backbones[1] (swin)", "did you mean 'depths'?"]),
    (dict(backbones=[{"name": "resnet", "overrides": {"in_chans": 3}}]), ["'in_chans' is set by vitbench"]),
    (dict(backbones=[{"name": "vit", "overrides": {"drop_rate": float("nan")}}]), ["finite"]),
    (dict(backbones=[{"name": "vit", "overrides": {3: 4}}]), ["overrides must map constructor arguments"]),
    (dict(fractions=[0.1, float("nan")]), ["fractions: nan is not a number"]),
    (dict(train={"optim": {"lr": float("inf")}}), ["optim.lr", "finite"]),
    (dict(dataset="fashion-mnst"), ["dataset: unknown dataset 'fashion-mnst'", "did you mean 'fashion_mnist'?"]),
    (dict(dataset="../../etc/nothing"), ["no such file or folder"]),
    (dict(resources={"mem": "32 GB"}), ["resources.mem '32 GB' is not a SLURM memory size"]),
    (dict(resources={"mem": "1.5G"}), ["resources.mem '1.5G'"]),
    (dict(resources={"time": "4 hours"}), ["resources.time '4 hours' is not a SLURM time limit", "D-HH:MM:SS"]),
    (dict(resources={"time": "1-2-3"}), ["resources.time '1-2-3'"]),
    (dict(resources={"time": "12:00\n#SBATCH --qos=high"}), ["resources.time"]),
    (dict(plugins=[str(PLUGINS / "no_build.py")], backbones=[{"name": "resnet"}]), ["has no build()"]),
    (dict(plugins=[str(PLUGINS / "minimal.py")], backbones=[{"name": "minimal_mlp", "preset": "micro"}]),
     ["no preset 'micro'", "default"]),
    # Each list's example is of its own kind, and each error names the key as the file spells it.
    (dict(fractions=None, samples_per_class=[10, 2.5]),
     ["samples_per_class: 2.5 is not an integer: write e.g. samples_per_class: [10, 100]"]),
    (dict(seeds=[0, 0.5]), ["seeds: 0.5 is not an integer: write e.g. seeds: [0, 1, 2]"]),
    (dict(seeds=[-1]), ["seeds must be in [0, 4294967295], got -1"]),
    (dict(backbones=[{"name": "resnet"}, {"name": "vit"}, {"name": "vit", "label": "vit_long",
                                                           "budget": {"max_epochs": 0}}]),
     ["backbones[2].budget.max_epochs must be >= 1, got 0"]),
    (dict(backbones=[{"name": "resnet"}, {"name": "vit"}, {"name": "vit", "label": "vit_long",
                                                           "budget": {"max_epochs": 3, "max_steps": 5}}]),
     ["both backbones[2].budget.max_epochs and backbones[2].budget.max_steps are set"]),
    (dict(backbones=[{"name": "resnet"}, {"name": "vit", "budget": {"min_steps": 3, "max_steps": 5}}]),
     ["backbones[1].budget.min_steps is set with backbones[1].budget.max_steps"]),
    (dict(budget={"max_epochs": 3, "max_steps": 5}), ["both budget.max_epochs and budget.max_steps are set"]),
    (dict(resources={"nodes": 0}), ["resources.nodes must be >= 1, got 0"]),
    (dict(resources={"cpus_per_task": 0}), ["resources.cpus_per_task must be >= 1, got 0"]),
    (dict(local={"parallel": 0}), ["local.parallel must be >= 1, got 0"]),
    (dict(wandb={"mode": "onlin"}), ["wandb.mode: 'onlin' is not one of offline, online, disabled, auto"]),
    # YAML reads an unquoted `1:` or `null:` as a number or None, not a key name
    (dict(backbones=[{"name": "resnet", None: 3}]), ["config key None in backbones[0] is not a name", "valid keys"]),
    (dict(train={"trainer": {1: "x"}}), ["train: config key 1 in trainer is not a name", "precision"]),
]


@pytest.mark.parametrize("changes,expect", SWEEP_CASES, ids=lambda v: str(v)[:60] if isinstance(v, dict) else None)
@pytest.mark.parametrize("command", ["plan", "submit"])
def test_sweep_refuses(refused, command, changes, expect):
    exp = experiment(refused.dir / "exp.yaml", **changes)
    extra = ["--profile", "local", "--dry-run"] if command == "submit" else []
    refused("sweep", command, exp, *extra, expect=expect)


@pytest.mark.parametrize("profile,expect", [
    ({"time": "2 days"}, ["time '2 days' is not a SLURM time limit"]),
    ({"mem_per_cpu": "2GB"}, ["mem_per_cpu '2GB' is not a SLURM memory size"]),
    ({"partition": "debug --qos=high"}, ["partition", "must be one word"]),
], ids=["time", "mem_per_cpu", "partition"])
def test_sweep_submit_refuses_bad_profile_fields(refused, profile, expect):
    prof = yaml.safe_load((REPO / "slurm" / "local.yaml").read_text())
    prof.update(profile)
    (refused.dir / "prof.yaml").write_text(yaml.safe_dump(prof))
    exp = experiment(refused.dir / "exp.yaml")
    refused("sweep", "submit", exp, "--profile", refused.dir / "prof.yaml", "--dry-run", expect=expect)


def test_slurm_times_and_sizes_that_sbatch_reads_are_accepted(tmp_path, capsys):
    """Every documented format passes, and an unquoted `time: 30:00` stays 30 minutes (not YAML's base-60 1800)."""
    from vitbench.cli import main

    for mem, time in [("32G", "30"), ("4000M", "30:00"), ("500K", "04:00:00"), ("1T", "2-00"), (4000, "2-12:30"),
                      ("16g", "1-00:00:00")]:
        path = experiment(tmp_path / "exp.yaml", resources={"mem": mem, "time": time})
        text = path.read_text().replace(f"'{time}'", time)  # unquoted, as people write it
        path.write_text(text)
        assert main(["sweep", "submit", str(path), "--profile", "local", "--dry-run",
                     "--sweep-dir", str(tmp_path / "s")]) == 0
        script = capsys.readouterr().out
        assert f"#SBATCH --mem={mem}\n" in script and f"#SBATCH --time={time}\n" in script


# ----------------------------------------------------------------------------- the minimal plugin

@pytest.mark.slow
def test_minimal_plugin_trains_through_the_cli(tmp_path, tiny_fashion_mnist):
    """name, family and build() only: it gets one preset, `default`, which a run uses without --preset."""
    from vitbench.cli import main

    out = tmp_path / "run"
    assert main(["train", "--plugin", str(PLUGINS / "minimal.py"), "--backbone", "minimal_mlp",
                 "--dataset", tiny_fashion_mnist, "--max-steps", "3", "--batch-size", "64", "--wandb", "disabled",
                 "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["backbone"] == "minimal_mlp" and results["preset"] == "default" and results["family"] == "mlp"
    assert results["params"] == 784 * 10 + 10 and 0.0 <= results["test_acc"] <= 1.0
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["preset"] == "default"


def test_minimal_plugin_in_a_sweep_gets_its_default_preset(tmp_path, capsys):
    from vitbench.cli import main

    exp = experiment(tmp_path / "exp.yaml", plugins=[str(PLUGINS / "minimal.py")],
                     backbones=[{"name": "minimal_mlp"}, {"name": "resnet"}])
    assert main(["sweep", "plan", str(exp), "--sweep-dir", str(tmp_path / "s"), "--json"]) == 0
    tasks = json.loads(capsys.readouterr().out)["tasks"]
    assert [(t["backbone"], t["preset"]) for t in tasks] == [("minimal_mlp", "default"), ("resnet", "micro")]
    assert tasks[0]["config"]["model"]["preset"] == "default"
