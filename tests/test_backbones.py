"""Every registered backbone honours the contract the training code relies on."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vitbench
from vitbench.backbones import create_backbone, get_backbone, list_backbones, load_plugin
from vitbench.backbones.registry import BackboneContractError

PLUGIN = Path(__file__).parent / "plugins" / "tiny_mlp.py"
# The built-ins and their families: one that disappears (or changes family) fails here, so the
# parametrizations over list_backbones() below cannot shrink unnoticed.
BUILTIN_FAMILIES = {"resnet": "cnn", "vit": "vit", "deit": "vit", "swin": "hierarchical", "pit": "pooling",
                    "pit_distilled": "pooling"}
BUILTINS = sorted(BUILTIN_FAMILIES)


class BatchNormNet(vitbench.Backbone):
    """A plugin defined here, so every test over list_backbones() checks a plugin too; BatchNorm and
    dropout make its train mode differ from eval mode."""

    name = "test_batchnorm_net"
    family = "cnn"
    presets = {"micro": dict(width=8)}

    def build(self, num_classes, image_size, in_chans):
        width = self.config["width"]
        return nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                             nn.Dropout(0.1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


ALL = list_backbones()  # at collection: the built-ins, installed packages' backbones and the plugin above


def _builtin(cls) -> bool:
    return cls.__module__.startswith("vitbench.backbones.")


def test_builtins_are_the_documented_families():
    assert {name: get_backbone(name).family for name in list_backbones(_builtin)} == BUILTIN_FAMILIES
    assert list_backbones(lambda cls: _builtin(cls) and cls.distillation_head) == ["deit", "pit_distilled"]
    assert set(BUILTINS) | {BatchNormNet.name} <= set(ALL)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("image_size,in_chans", [(28, 1), (32, 3), (64, 3), (224, 3)])
def test_micro_maps_images_to_logits(name, image_size, in_chans):
    model = create_backbone(name).create(num_classes=10, image_size=image_size, in_chans=in_chans)
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, in_chans, image_size, image_size))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", ALL)
def test_a_training_step_reaches_every_parameter_and_lowers_the_loss(name):
    torch.manual_seed(0)
    model = create_backbone(name).create(num_classes=10, image_size=28, in_chans=1).train()
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 3, 7, 9])
    torch.manual_seed(1)
    logits = model(x)
    assert logits.shape == (4, 10)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    params = dict(model.named_parameters())
    assert [n for n, p in params.items() if p.grad is None] == []  # every parameter takes part
    assert all(torch.isfinite(p.grad).all() for p in params.values())
    with torch.no_grad():
        for p in params.values():
            p -= 1e-3 * p.grad
        torch.manual_seed(1)  # the same dropout mask as the first pass
        assert F.cross_entropy(model(x), y) < loss


@pytest.mark.parametrize("name", BUILTINS)
def test_presets_include_micro_and_paper_sizes(name):
    assert {"micro", "tiny", "small"} <= set(get_backbone(name).presets)


def test_pit_has_a_distillation_head_exactly_when_its_class_says_so():
    for name in ("pit", "pit_distilled"):
        model = create_backbone(name, "micro").create(num_classes=10, image_size=28, in_chans=1)
        assert (model.head_dist is not None) == get_backbone(name).distillation_head
    assert "distilled" not in get_backbone("pit").accepted_overrides()  # the class decides, never a preset


@pytest.mark.parametrize("name", list_backbones(lambda cls: cls.distillation_head))
def test_distillation_head_returns_two_heads_only_in_distilled_training(name):
    model = create_backbone(name).create(num_classes=10, image_size=28, in_chans=1)
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
        # Not "huge": a class registers for good in this process, and the bad-input tables refuse --preset huge.
        presets = {"big": {"width": 8}, "bigger": {"width": 16}}

        def build(self, num_classes, image_size, in_chans):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_chans * image_size**2, num_classes))

    assert create_backbone("no_micro_backbone").preset == "big"
    assert NoMicro.accepted_overrides() == {"width"}
    with pytest.raises(vitbench.VitbenchError, match="no preset 'micro'.*big, bigger"):
        create_backbone("no_micro_backbone", "micro")


@pytest.mark.parametrize("name,key,value", [("resnet", "stem_width", 8), ("vit", "patch_size", 7),
                                            ("deit", "qkv_bias", False), ("swin", "window_size", 7),
                                            ("pit", "stride", 2), ("pit_distilled", "base_dims", (8, 8, 8))])
def test_builtins_accept_their_timm_constructor_arguments(name, key, value):
    cls = get_backbone(name)
    accepted = cls.accepted_overrides()
    assert key in accepted and set(cls.presets["micro"]) <= accepted
    assert not {"num_classes", "in_chans", "img_size"} & accepted  # vitbench sets these from the data
    assert create_backbone(name, "micro", **{key: value}).config[key] == value
    with pytest.raises(vitbench.VitbenchError, match=f"has no override '{key}x': did you mean '{key}'"):
        create_backbone(name, "micro", **{key + "x": value})


def test_contract_check_runs_train_mode_too():
    """A model that breaks the contract only in train mode fails in create(), before any training step."""

    class AuxHeadNet(vitbench.Backbone):  # (logits, auxiliary logits) in train mode, as torchvision's Inception
        name = "test_aux_head_net"

        def build(self, num_classes, image_size, in_chans):
            class Net(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.head = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size**2, num_classes))

                def forward(self, x):
                    logits = self.head(x)
                    return (logits, logits) if self.training else logits

            return Net()

    with pytest.raises(BackboneContractError, match=r"in train mode to a tuple of 2 .*expected logits \[2, 10\]"):
        create_backbone("test_aux_head_net").create(num_classes=10, image_size=8, in_chans=1)


def test_contract_check_leaves_the_model_and_the_random_state_as_built():
    """The checking passes (BatchNorm in train mode, dropout) change neither the model's buffers nor
    the random numbers a seeded run draws next."""
    backbone = create_backbone(BatchNormNet.name)
    torch.manual_seed(0)
    built = backbone.build(num_classes=10, image_size=28, in_chans=1)
    after_build = torch.get_rng_state()
    torch.manual_seed(0)
    created = backbone.create(num_classes=10, image_size=28, in_chans=1)
    assert torch.equal(torch.get_rng_state(), after_build)
    for (name, a), b in zip(built.state_dict().items(), created.state_dict().values()):
        assert torch.equal(a, b), name  # running_mean, running_var, num_batches_tracked and the weights


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


@pytest.mark.slow
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
