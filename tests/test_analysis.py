"""vitbench analyze: attention rollout, position-embedding similarity, cost, and the CLI on a real run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

import vitbench
from vitbench.analysis import attention, cost, posembed
from vitbench.backbones import count_flops, create_backbone, list_backbones, load_plugin
from vitbench.cli import main

PLUGINS = Path(__file__).parent / "plugins"
FASHION = ["T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _model(name: str, size: int = 28, **overrides):
    torch.manual_seed(0)
    return create_backbone(name, "micro", **overrides).create(num_classes=10, image_size=size, in_chans=1).eval()


def _assert_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def _fake_run(out: Path, backbone: str) -> Path:
    """A run dir shaped like `vitbench train`'s (config, results, best.ckpt), with untrained weights."""
    from vitbench.config import build_config
    from vitbench.utils import write_json

    (out / "checkpoints").mkdir(parents=True)
    cfg = build_config({"out": str(out), "model": {"backbone": backbone}, "data": {"samples_per_class": 5},
                        "wandb": {"mode": "disabled"}})
    (out / "config.yaml").write_text(cfg.to_yaml())
    model = _model(backbone)
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}},
               out / "checkpoints" / "best.ckpt")
    write_json(out / "results.json", {"backbone": backbone, "family": "?", "preset": "micro", "image_size": 28,
                                      "in_chans": 1, "num_classes": 10, "class_names": FASHION, "wandb_run_id": None})
    return out


# -- rollout ---------------------------------------------------------------------------------

def test_rollout_rows_sum_to_one_on_captured_vit_attention():
    model = _model("vit")
    mods = attention.attention_modules(model)
    assert len(mods) == 4
    with torch.no_grad(), attention.capture_attention(mods) as att:
        model(torch.randn(3, 1, 28, 28))
    assert len(att) == 4 and att[0].shape == (3, 4, 50, 50)  # 4 heads, cls + 7x7 patches
    r = attention.rollout(att)
    assert r.shape == (3, 50, 50)
    assert (r >= 0).all()
    torch.testing.assert_close(r.sum(-1), torch.ones(3, 50), atol=1e-5, rtol=0)
    exp = attention.explain(create_backbone("vit"), model, torch.randn(2, 1, 28, 28))
    assert exp.maps.shape == (2, 28, 28) and (exp.maps >= 0).all() and (exp.maps <= 1).all()


def test_recomputed_attention_matches_timm_unfused_path():
    """The hook's recomputation equals what timm's own unfused path feeds to attn_drop."""
    model = _model("deit")
    mods = attention.attention_modules(model)
    seen = []
    handles = [m.attn_drop.register_forward_hook(lambda mod, i, o: seen.append(i[0].detach())) for m in mods]
    for m in mods:
        m.fused_attn = False
    with torch.no_grad(), attention.capture_attention(mods) as att:
        model(torch.randn(2, 1, 28, 28))
    for h in handles:
        h.remove()
    assert len(att) == len(seen) == len(mods)
    for ours, timm_probs in zip(att, seen):
        torch.testing.assert_close(ours, timm_probs, atol=1e-5, rtol=1e-4)


def test_pit_rollout_through_pooling_is_row_stochastic():
    model = _model("pit")
    conv = model.transformers[1].pool.conv
    p, (h, w) = attention.pooling_matrix(conv, (13, 13), num_prefix=1)
    assert (h, w) == (7, 7) and p.shape == (1 + 49, 1 + 169)
    torch.testing.assert_close(p.sum(1), torch.ones(50))
    stages, transitions, hw = [], [], (13, 13)
    for stage in model.transformers:
        if stage.pool is not None:
            t, hw = attention.pooling_matrix(stage.pool.conv, hw, 1)
            transitions.append(t)
        stages.append(attention.attention_modules(stage))
    with torch.no_grad(), attention.capture_attention([m for s in stages for m in s]) as att:
        model(torch.randn(2, 1, 28, 28))
    it = iter(att)
    r = attention.rollout_stages([[next(it) for _ in s] for s in stages], transitions)
    assert r.shape == (2, 1 + hw[0] * hw[1], 1 + 169)
    assert (r >= 0).all()
    torch.testing.assert_close(r.sum(-1), torch.ones(r.shape[:2]), atol=1e-5, rtol=0)


def _builtin(cls) -> bool:
    return cls.__module__.startswith("vitbench.backbones.")


def test_what_each_builtin_can_show():
    """What `vitbench analyze` offers per built-in, as each class says: a method that goes missing fails here."""
    assert list_backbones(lambda cls: _builtin(cls) and cls.implements("attention_map")) == list_backbones(_builtin)
    learned = ["deit", "pit", "pit_distilled", "vit"]
    assert list_backbones(lambda cls: _builtin(cls) and cls.implements("position_embeddings")) == learned
    assert list_backbones(lambda cls: _builtin(cls) and cls.free_patch_size) == learned


@pytest.mark.parametrize("name", list_backbones(lambda cls: cls.implements("attention_map")))
def test_every_backbone_with_a_map_draws_it(name):
    exp = attention.explain(create_backbone(name), _model(name), torch.randn(2, 1, 28, 28))
    assert exp.maps.shape == (2, 28, 28) and (exp.maps >= 0).all() and (exp.maps <= 1).all()
    assert exp.logits.shape == (2, 10)
    assert ("Grad-CAM" in exp.method) == (name in ("resnet", "swin"))


def test_a_plugin_without_maps_or_with_broken_ones_is_a_one_line_error():
    from vitbench.errors import VitbenchError

    class NoMaps(vitbench.Backbone):
        name = "test_no_maps"

        def build(self, num_classes, image_size, in_chans):
            return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(in_chans * image_size**2, num_classes))

    class BrokenMaps(NoMaps):  # opts into both analyses with methods that raise
        name = "test_broken_maps"

        def attention_map(self, model, images, token_index=0):
            raise IndexError("list index out of range")

        def position_embeddings(self, model):
            return {}["pos_embed"]

    images = torch.randn(2, 1, 28, 28)
    for name, attention_error, posembed_error in [
        ("test_no_maps", "has no attention map here: supported are .*deit.*test_broken_maps",
         "no learned absolute position embedding: posembed works for .*deit.*test_broken_maps"),
        ("test_broken_maps", r"attention_map\(\) failed \(IndexError: list index",
         r"position_embeddings\(\) failed \(KeyError"),
    ]:
        backbone = create_backbone(name)
        model = backbone.create(num_classes=10, image_size=28, in_chans=1)
        with pytest.raises(VitbenchError, match=f"backbone '{name}'.*{attention_error}") as e:
            attention.explain(backbone, model, images)
        assert "\n" not in str(e.value)
        with pytest.raises(VitbenchError, match=f"backbone '{name}'.*{posembed_error}") as e:
            posembed.position_embeddings(backbone, model)
        assert "\n" not in str(e.value)


# -- position embeddings ---------------------------------------------------------------------

@pytest.mark.parametrize("name, grid", [("vit", (7, 7)), ("deit", (7, 7)), ("pit", (13, 13)),
                                        ("pit_distilled", (13, 13))])
def test_posembed_similarity_diagonal_is_one(name, grid):
    emb, g = posembed.position_embeddings(create_backbone(name), _model(name))
    assert g == grid and emb.shape[0] == grid[0] * grid[1]  # prefix tokens excluded
    sim = posembed.similarity(emb)
    torch.testing.assert_close(sim.diagonal(), torch.ones(len(sim)), atol=1e-5, rtol=0)
    assert sim.max() <= 1 + 1e-5 and sim.min() >= -1 - 1e-5


def test_posembed_plot_is_a_png(tmp_path):
    emb, grid = posembed.position_embeddings(create_backbone("vit"), _model("vit"))
    posembed.plot_similarity(tmp_path / "p.png", posembed.similarity(emb), grid, "test")
    _assert_png(tmp_path / "p.png")


# -- cost ------------------------------------------------------------------------------------

def test_vit_flops_grow_faster_than_linearly_in_tokens():
    small = count_flops(_model("vit", 112, patch_size=8), 112, 1)  # 196 tokens
    large = count_flops(_model("vit", 224, patch_size=8), 224, 1)  # 784 tokens
    assert large / small > 4 * 1.5


def test_swin_flops_grow_about_linearly_in_tokens():
    small = count_flops(_model("swin", 112), 112, 1)  # 28x28 tokens, 7x7 windows
    large = count_flops(_model("swin", 224), 224, 1)  # 56x56 tokens
    assert 4 * 0.75 < large / small < 4 * 1.25


def test_flops_count_attention_on_the_cpu_kernel():
    model = _model("vit", 224, patch_size=8)
    n, d, depth = 1 + 28 * 28, 64, 4  # q.k^T and attn.v: 2 matmuls of N x N x d, 2 FLOPs per multiply-add
    assert count_flops(model, 224, 1) > 4 * n * n * d * depth


def test_cost_cli_writes_table_json_and_plot(tmp_path, capsys):
    rc = main(["analyze", "cost", "--backbones", "vit,swin", "--image-sizes", "32,64", "--steps", "1",
               "--batch-size", "2", "--out", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "GFLOPs" in out and "swin" in out
    data = json.loads((tmp_path / "cost.json").read_text())
    rows = data["rows"]
    assert len(rows) == 4 and all(r["gflops"] > 0 and r["params"] > 0 and r["train_images_per_s"] > 0 for r in rows)
    assert data["meta"]["memory"]
    _assert_png(tmp_path / "cost.png")


def test_cost_notes_a_size_a_backbone_cannot_take(tmp_path):
    row = cost.measure("vit", "micro", 24, patch_size=16, steps=1, batch_size=1)
    assert row["gflops"] is None and "cannot take 24 px" in row["error"]


def test_cost_asks_each_backbone_whether_its_patch_size_is_free_and_for_its_preset():
    load_plugin(str(PLUGINS / "minimal.py"))  # no presets: it has one, "default"
    rows = cost.measure_all(["pit_distilled", "swin", "minimal_mlp"], None, [32], patch_size=16, steps=1, batch_size=2)
    by = {r["backbone"]: r for r in rows}
    assert by["pit_distilled"]["patch_size"] == 16 and by["pit_distilled"]["tokens"] == 3 * 3  # stride 8
    assert by["swin"]["patch_size"] is None and by["swin"]["tokens"] == 16 * 16  # its own 2 px patches
    assert [r["preset"] for r in rows] == ["micro", "micro", "default"]
    assert all(r["error"] is None and r["gflops"] > 0 for r in rows)


def test_cost_measures_every_registered_backbone_by_default(tmp_path, monkeypatch, capsys):
    asked = {}

    def measure_all(backbones, presets, image_sizes, **kwargs):
        asked.update(backbones=backbones, presets=presets)
        return []

    monkeypatch.setattr(cost, "measure_all", measure_all)
    assert main(["analyze", "cost", "--plugin", str(PLUGINS / "minimal.py"), "--out", str(tmp_path)]) == 0
    assert asked == {"backbones": list_backbones(), "presets": None}
    assert {"pit_distilled", "minimal_mlp"} <= set(asked["backbones"])


# name -> (arguments, words of the one-line error); none of them may write anything.
COST_ERRORS = {
    "unknown backbone": (["--backbones", "vit,vitt"], ["unknown backbone 'vitt'"]),
    "unknown preset": (["--backbones", "vit", "--presets", "huge"], ["backbone 'vit' has no preset 'huge'"]),
    "a preset a plugin lacks": (
        ["--plugin", PLUGINS / "minimal.py", "--backbones", "minimal_mlp", "--presets", "micro"],
        ["backbone 'minimal_mlp' has no preset 'micro'", "default"]),
    "image sizes not numbers": (["--image-sizes", "32,big"], ["--image-sizes takes comma-separated integers"]),
    "zero image size": (["--image-sizes", "0"], ["--image-sizes needs positive integers"]),
    "patch size not a number": (["--patch-size", "sixteen"], ["--patch-size takes comma-separated integers"]),
    "zero batch": (["--batch-size", "0"], ["--batch-size and --steps must be >= 1"]),
    "missing plugin file": (["--plugin", "no_such_plugin.py"], ["plugin file no_such_plugin.py not found"]),
    "plugin that breaks the contract": (["--plugin", PLUGINS / "no_build.py"],
                                        ["backbone 'no_build'", "has no build()"]),
    "output folder under a file": (["--out", "a_file/cost"], ["cannot create output folder a_file/cost"]),
}


@pytest.mark.parametrize("case", list(COST_ERRORS))
def test_cost_refuses_bad_input_in_one_line_and_writes_nothing(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    args, words = COST_ERRORS[case]
    rc = main(["analyze", "cost", *map(str, args)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("vitbench: error:") and "\n" not in err, err
    assert all(w in err for w in words), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


# -- the CLI on runs -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_vit_run(tmp_path_factory, tiny_fashion_mnist):
    """A real `vitbench train` run on a small slice of Fashion-MNIST saved to disk.

    The slice keeps evaluation short and checks that the analysis reads the run's own
    data config (a save_to_disk folder), not a default.
    """
    out = tmp_path_factory.mktemp("analysis") / "vit-run"
    cmd = [sys.executable, "-m", "vitbench", "train", "--backbone", "vit", "--preset", "micro",
           "--samples-per-class", "5", "--max-epochs", "1", "--wandb", "offline", "--out", str(out),
           "--dataset", tiny_fashion_mnist]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"vitbench train failed:\n{proc.stderr[-3000:]}"
    return out


def test_attention_and_posembed_on_a_trained_run(trained_vit_run, tmp_path, capsys):
    run = trained_vit_run
    assert main(["analyze", "attention", str(run), "--images", "4", "--wandb", "offline"]) == 0
    _assert_png(run / "analysis" / "attention.png")
    assert "logged to W&B run" in capsys.readouterr().out
    assert main(["analyze", "posembed", str(run), "--out", str(tmp_path), "--wandb", "disabled"]) == 0
    _assert_png(tmp_path / "posembed.png")


@pytest.mark.parametrize("backbone", ["swin", "resnet"])
def test_posembed_without_learned_position_embedding_exits_2(backbone, tmp_path, capsys):
    run = _fake_run(tmp_path / backbone, backbone)
    assert main(["analyze", "posembed", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no learned absolute position embedding" in err
    works = err.split("posembed works for ")[1].split(", ")
    assert {"deit", "pit", "pit_distilled", "vit"} <= set(works) and not {"swin", "resnet"} & set(works)
    assert not (run / "analysis" / "posembed.png").exists()


def test_attention_on_a_swin_run_uses_gradcam(tmp_path):
    run = _fake_run(tmp_path / "swin", "swin")
    assert main(["analyze", "attention", str(run), "--images", "3", "--wandb", "disabled"]) == 0
    _assert_png(run / "analysis" / "attention.png")


def test_not_a_run_dir_exits_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "vitbench", "analyze", "attention", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    err = proc.stderr.strip()
    assert err.count("\n") == 0 and "not a finished vitbench run" in err and "Traceback" not in err


class Evil:
    """Unpickling this runs a shell command: what a hostile checkpoint carries."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


BEST, LAST = Path("checkpoints/best.ckpt"), Path("checkpoints/last.ckpt")
# (command, damage(run, marker), words of the one-line error, or None where the command must still work).
# Analysis reads best.ckpt (the weights the run was tested with) and nothing else of the checkpoints.
CHECKPOINT_DAMAGE = {
    "truncated best.ckpt": (lambda run, m: _truncate(run / BEST),
                            ["best.ckpt", "not a readable checkpoint", "truncated"]),
    "best.ckpt of text": (lambda run, m: (run / BEST).write_text("not a checkpoint\n"),
                          ["best.ckpt", "not a readable checkpoint"]),
    "empty best.ckpt": (lambda run, m: (run / BEST).write_bytes(b""), ["best.ckpt", "not a readable checkpoint"]),
    "best.ckpt holding a list": (lambda run, m: torch.save([1, 2], run / BEST),
                                 ["best.ckpt", "holds a list, not a checkpoint dict"]),
    "best.ckpt entry that is not a tensor": (
        lambda run, m: torch.save({"state_dict": {"model.pos_embed": 3}}, run / BEST), ["'pos_embed' is not a tensor"]),
    "best.ckpt that runs code": (lambda run, m: torch.save({"state_dict": {}, "x": Evil(m)}, run / BEST),
                                 ["best.ckpt", "not a weights-only checkpoint", "could run code"]),
    "best.ckpt of another backbone": (
        lambda run, m: torch.save({"state_dict": {f"model.{k}": v for k, v in _model("deit").state_dict().items()}},
                                  run / BEST), ["best.ckpt does not match backbone 'vit'"]),
    "no best.ckpt": (lambda run, m: (run / BEST).unlink(), ["no checkpoints/best.ckpt"]),
    "truncated last.ckpt": (lambda run, m: _truncate(run / LAST), None),
    "last.ckpt that runs code": (lambda run, m: torch.save({"state_dict": {}, "x": Evil(m)}, run / LAST), None),
}


# Both commands read the run alike (runs.load_run): the cases that must still work run the faster one only.
@pytest.mark.parametrize("case, command", [(case, command) for case, (_, words) in CHECKPOINT_DAMAGE.items()
                                           for command in (["posembed", "attention"] if words else ["posembed"])])
def test_analysis_of_a_run_with_a_damaged_checkpoint(case, command, tmp_path, capsys):
    """A damaged best.ckpt is a one-line error (exit 2) that writes nothing and runs no code; a damaged
    last.ckpt, which analysis does not read, changes nothing."""
    run = _fake_run(tmp_path / "run", "vit")
    shutil.copy(run / BEST, run / LAST)
    marker = tmp_path / "PWNED"
    damage, words = CHECKPOINT_DAMAGE[case]
    damage(run, marker)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    extra = ["--images", "2"] if command == "attention" else []
    rc = main(["analyze", command, str(run), "--wandb", "disabled", *extra])
    err = capsys.readouterr().err.strip()
    assert not marker.exists(), "reading the run ran code"
    if words is None:
        assert rc == 0, err
        _assert_png(run / "analysis" / f"{command}.png")
        return
    assert rc == 2 and err.startswith("vitbench: error:") and "\n" not in err, err
    assert all(w in err for w in words), err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_attention_on_a_run_whose_test_images_cannot_load_leaves_no_empty_analysis_folder(tmp_path, capfd):
    import yaml

    run = _fake_run(tmp_path / "run", "vit")
    config = yaml.safe_load((run / "config.yaml").read_text())
    config["data"]["dataset"] = str(tmp_path / "moved-away")  # the run's data is gone from this machine
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    capfd.readouterr()
    assert main(["analyze", "attention", str(run), "--images", "2", "--wandb", "disabled"]) == 2
    err = capfd.readouterr().err.strip()
    assert err.startswith("vitbench: error:") and "\n" not in err and "moved-away" in err, err
    assert not (run / "analysis").exists()
