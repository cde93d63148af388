"""Finding and loading a distillation teacher: a finished run, or a backbone plus checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from torch import nn

from vitbench.backbones import create_backbone
from vitbench.errors import VitbenchError
from vitbench.utils import read_json


@dataclass
class TeacherSpec:
    backbone: str
    preset: str
    overrides: dict
    checkpoint: str
    class_names: list[str] | None = None
    image_size: int | None = None
    in_chans: int | None = None
    plugins: list[str] | None = None
    run_dir: str | None = None


def teacher_from_run(run_dir: str | Path) -> TeacherSpec:
    """The teacher a finished ``vitbench train`` run provides: its best checkpoint."""
    run = Path(run_dir)
    results, config = run / "results.json", run / "config.yaml"
    if not results.is_file() or not config.is_file():
        raise VitbenchError(
            f"teacher run {run} is not a finished vitbench run (no results.json/config.yaml): "
            "train the teacher first, e.g. vitbench train --backbone resnet --out RUN_DIR"
        )
    res = read_json(results)
    cfg = yaml.safe_load(config.read_text())
    ckpt = run / "checkpoints" / "best.ckpt"
    if not ckpt.is_file():
        raise VitbenchError(f"teacher run {run} has no checkpoints/best.ckpt: re-run the teacher")
    return TeacherSpec(
        backbone=res["backbone"], preset=res["preset"], overrides=cfg["model"].get("overrides") or {},
        checkpoint=str(ckpt.resolve()), class_names=res.get("class_names"), image_size=res.get("image_size"),
        in_chans=res.get("in_chans"), plugins=cfg.get("plugins") or [], run_dir=str(run.resolve()),
    )


def check_compatible(spec: TeacherSpec, class_names: list[str], image_size: int, in_chans: int) -> None:
    if spec.class_names is not None and list(spec.class_names) != list(class_names):
        raise VitbenchError(
            f"teacher run {spec.run_dir} was trained on other classes ({len(spec.class_names)} classes "
            f"{spec.class_names[:3]}...): pick a teacher trained on the student's dataset"
        )
    if spec.in_chans is not None and spec.in_chans != in_chans:
        raise VitbenchError(f"teacher takes {spec.in_chans}-channel images, the student {in_chans}: train both on the same data")
    if spec.image_size is not None and spec.image_size != image_size:
        raise VitbenchError(
            f"teacher was trained at {spec.image_size} px, the student runs at {image_size} px: "
            f"set --image-size {spec.image_size} or retrain the teacher"
        )


def load_teacher(backbone: str, preset: str, overrides: dict, checkpoint: str, *,
                 num_classes: int, image_size: int, in_chans: int) -> nn.Module:
    """Build ``backbone`` and load weights from a vitbench checkpoint or a plain state dict."""
    path = Path(checkpoint)
    if not path.is_file():
        raise VitbenchError(f"teacher checkpoint {path} not found: pass --teacher RUN_DIR of a finished run")
    model = create_backbone(backbone, preset, **overrides).create(num_classes, image_size, in_chans)
    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("state_dict", state)
    prefix = "model."
    if any(k.startswith(prefix) for k in state):
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        first = str(e).splitlines()[0]
        raise VitbenchError(f"teacher checkpoint {path} does not fit {backbone}/{preset} ({first}): check --teacher-backbone/--teacher-preset") from None
    return model.eval().requires_grad_(False)
