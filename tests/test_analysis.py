"""vitbench analyze: attention rollout, position-embedding similarity, cost, and the CLI on a real run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from vitbench.analysis import attention, cost, posembed
from vitbench.backbones import count_flops, create_backbone
from vitbench.cli import main

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
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, out / "checkpoints" / "best.ckpt")
    write_json(out / "results.json", {"backbone": backbone, "family": "?", "preset": "micro", "image_size": 28, "in_chans": 1,
                                      "num_classes": 10, "class_names": FASHION, "wandb_run_id": None})
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
    exp = attention.explain(model, torch.randn(2, 1, 28, 28), "vit")
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
    for i, stage in enumerate(model.transformers):
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


@pytest.mark.parametrize("name", ["deit", "pit_distilled", "swin", "resnet"])
def test_every_builtin_gets_a_map(name):
    exp = attention.explain(_model(name), torch.randn(2, 1, 28, 28), name)
    assert exp.maps.shape == (2, 28, 28) and (exp.maps >= 0).all() and exp.logits.shape == (2, 10)
    assert ("Grad-CAM" in exp.method) == (name in ("swin", "resnet"))


# -- position embeddings ---------------------------------------------------------------------

@pytest.mark.parametrize("name, grid", [("vit", (7, 7)), ("deit", (7, 7)), ("pit", (13, 13))])
def test_posembed_similarity_diagonal_is_one(name, grid):
    emb, g = posembed.position_embeddings(_model(name), name)
    assert g == grid and emb.shape[0] == grid[0] * grid[1]  # prefix tokens excluded
    sim = posembed.similarity(emb)
    torch.testing.assert_close(sim.diagonal(), torch.ones(len(sim)), atol=1e-5, rtol=0)
    assert sim.max() <= 1 + 1e-5 and sim.min() >= -1 - 1e-5


def test_posembed_plot_is_a_png(tmp_path):
    emb, grid = posembed.position_embeddings(_model("vit"), "vit")
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


# -- the CLI on runs -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained_vit_run(tmp_path_factory, tiny_fashion_mnist):
    """A real `vitbench train` run on a small slice of Fashion-MNIST saved to disk.

    The slice keeps evaluation short and checks that the analysis reads the run's own
    data config (a save_to_disk folder), not a default.
    """
    out = tmp_path_factory.mktemp("analysis") / "vit-run"
    cmd = [sys.executable, "-m", "vitbench", "train", "--backbone", "vit", "--preset", "micro", "--samples-per-class", "5",
           "--max-epochs", "1", "--wandb", "offline", "--out", str(out), "--dataset", tiny_fashion_mnist]
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
    assert err.count("\n") == 0 and "no learned absolute position embedding" in err and "vit, deit" in err
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
