"""Every registered backbone honours the contract the training code relies on."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vitbench
from vitbench.backbones import create_backbone, get_backbone, list_backbones, load_plugin

PLUGIN = Path(__file__).parent / "plugins" / "tiny_mlp.py"
BUILTINS = ["deit", "pit", "pit_distilled", "resnet", "swin", "vit"]


def test_builtins_are_registered():
    assert set(BUILTINS) <= set(list_backbones())


@pytest.mark.parametrize("name", BUILTINS)
@pytest.mark.parametrize("image_size,in_chans", [(28, 1), (32, 3), (64, 3), (224, 3)])
def test_micro_maps_images_to_logits(name, image_size, in_chans):
    model = create_backbone(name, "micro").create(num_classes=10, image_size=image_size, in_chans=in_chans)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_chans, image_size, image_size))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", BUILTINS)
def test_presets_include_micro_and_paper_sizes(name):
    assert {"micro", "tiny", "small"} <= set(get_backbone(name).presets)


@pytest.mark.parametrize("name", [n for n in BUILTINS if get_backbone(n).distillation_head])
def test_distillation_head_returns_two_heads_only_in_distilled_training(name):
    model = create_backbone(name, "micro").create(num_classes=10, image_size=28, in_chans=1)
    x = torch.randn(2, 1, 28, 28)
    model.train()
    assert model(x).shape == (2, 10)  # without a teacher: one (averaged) output
    model.set_distilled_training(True)
    cls_logits, dist_logits = model(x)
    assert cls_logits.shape == dist_logits.shape == (2, 10)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 10)  # inference averages the heads


def test_duplicate_name_raises():
    with pytest.raises(vitbench.VitbenchError, match="already registered"):
        class Again(vitbench.Backbone):  # noqa: F841
            name = "resnet"
            presets = {"micro": {}}


def test_backbone_without_micro_preset_defaults_to_its_first():
    class NoMicro(vitbench.Backbone):
        name = "no_micro_backbone"
        presets = {"big": {"width": 8}, "huge": {"width": 16}}

        def build(self, num_classes, image_size, in_chans):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_chans * image_size**2, num_classes))

    assert create_backbone("no_micro_backbone").preset == "big"
    assert NoMicro.accepted_overrides() == {"width"}
    with pytest.raises(vitbench.VitbenchError, match="no preset 'micro'.*big, huge"):
        create_backbone("no_micro_backbone", "micro")


@pytest.mark.parametrize("name,key,value", [("resnet", "stem_width", 8), ("vit", "patch_size", 7), ("deit", "qkv_bias", False),
                                            ("swin", "window_size", 7), ("pit", "stride", 2), ("pit_distilled", "base_dims", (8, 8, 8))])
def test_builtins_accept_their_timm_constructor_arguments(name, key, value):
    cls = get_backbone(name)
    accepted = cls.accepted_overrides()
    assert key in accepted and set(cls.presets["micro"]) <= accepted
    assert not {"num_classes", "in_chans", "img_size"} & accepted  # vitbench sets these from the data
    assert create_backbone(name, "micro", **{key: value}).config[key] == value
    with pytest.raises(vitbench.VitbenchError, match=f"has no override '{key}x': did you mean '{key}'"):
        create_backbone(name, "micro", **{key + "x": value})


def test_unknown_backbone_lists_registered():
    with pytest.raises(vitbench.VitbenchError, match="unknown backbone 'vitt'.*resnet"):
        get_backbone("vitt")


def test_unknown_preset_lists_presets():
    with pytest.raises(vitbench.VitbenchError, match="no preset 'huge'.*micro, tiny, small"):
        create_backbone("vit", "huge")


@pytest.mark.parametrize("name,size", [("vit", 30), ("deit", 6), ("pit", 30)])
def test_image_size_a_backbone_cannot_take_says_which_work(name, size):
    with pytest.raises(vitbench.VitbenchError, match="28, 32, 64"):
        create_backbone(name, "micro").create(num_classes=10, image_size=size, in_chans=1)


def test_plugin_file_registers_its_backbone():
    load_plugin(str(PLUGIN))
    load_plugin(str(PLUGIN))  # loading twice is harmless
    model = create_backbone("tiny_mlp", "wide").create(num_classes=3, image_size=8, in_chans=1)
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 3)


def test_plugin_that_does_not_import(tmp_path):
    broken = tmp_path / "broken_plugin.py"
    broken.write_text("import does_not_exist_anywhere\n")
    with pytest.raises(vitbench.VitbenchError, match="does not import.*does_not_exist_anywhere"):
        load_plugin(str(broken))


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vitbench", *args], capture_output=True, text=True, timeout=300)


def test_cli_lists_plugin_with_params_and_gflops():
    import json

    r = _cli("backbones", "--plugin", str(PLUGIN), "--preset", "micro", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert set(BUILTINS) | {"tiny_mlp"} <= set(rows)
    # 784*64 + 64 + 64*10 + 10 parameters; a Linear layer costs 2 FLOPs per weight.
    assert rows["tiny_mlp"]["params"] == 784 * 64 + 64 + 64 * 10 + 10
    assert rows["tiny_mlp"]["gflops"] == pytest.approx(2 * (784 * 64 + 64 * 10) / 1e9)
    assert rows["vit"]["family"] == "vit" and rows["resnet"]["family"] == "cnn"


def test_cli_bad_plugin_is_one_line_exit_2(tmp_path):
    r = _cli("backbones", "--plugin", str(tmp_path / "nope.py"))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "nope.py" in r.stderr and "Traceback" not in r.stderr


def test_installed_package_registers_through_the_entry_point_group(tmp_path):
    """A pip-installed package exposes backbones via the `vitbench.backbones` entry-point group."""
    import os

    (tmp_path / "acme_backbones.py").write_text(PLUGIN.read_text().replace('"tiny_mlp"', '"acme_mlp"'))
    dist = tmp_path / "acme_backbones-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-backbones\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[vitbench.backbones]\nacme = acme_backbones\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    r = subprocess.run([sys.executable, "-m", "vitbench", "backbones", "--preset", "micro", "--json"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    import json

    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["acme_mlp"]["family"] == "mlp" and "resnet" in rows
