"""Finding and loading a distillation teacher: a finished run, or a backbone plus checkpoint."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from vitbench import rundir
from vitbench.backbones import create_backbone
from vitbench.errors import VitbenchError
from vitbench.utils import Progress


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


def teacher_from_run(run_dir: str | Path, plugins: list[str] | None = None) -> TeacherSpec:
    """The teacher a finished ``vitbench train`` run provides: its best checkpoint.

    ``plugins`` are those the student names: a plugin the teacher's config.yaml names must be among them.
    """
    fix = ("pass --teacher a finished run of `vitbench train` "
           "(or retrain the teacher, e.g. vitbench train --backbone resnet --out RUN_DIR)")
    run, cfg, res = rundir.read_finished_run(run_dir, fix=fix)
    ckpt = rundir.best_checkpoint(run)
    if not ckpt.is_file():
        raise VitbenchError(f"teacher run {run} has no {rundir.BEST_CKPT}: re-run the teacher")
    rundir.check_plugins_named(cfg["plugins"], plugins or [], run)
    return TeacherSpec(
        backbone=res["backbone"], preset=res["preset"], overrides=cfg["model"]["overrides"] or {},
        checkpoint=str(ckpt.resolve()), class_names=res.get("class_names"), image_size=res.get("image_size"),
        in_chans=res.get("in_chans"), plugins=cfg["plugins"], run_dir=str(run.resolve()),
    )


def check_compatible(spec: TeacherSpec, class_names: list[str], image_size: int, in_chans: int) -> None:
    if spec.class_names is not None and list(spec.class_names) != list(class_names):
        raise VitbenchError(
            f"teacher run {spec.run_dir} was trained on other classes ({len(spec.class_names)} classes "
            f"{spec.class_names[:3]}...): pick a teacher trained on the student's dataset"
        )
    if spec.in_chans is not None and spec.in_chans != in_chans:
        raise VitbenchError(
            f"teacher takes {spec.in_chans}-channel images, the student {in_chans}: train both on the same data"
        )
    if spec.image_size is not None and spec.image_size != image_size:
        raise VitbenchError(
            f"teacher was trained at {spec.image_size} px, the student runs at {image_size} px: "
            f"set --image-size {spec.image_size} or retrain the teacher"
        )


def load_teacher(backbone: str, preset: str, overrides: dict, checkpoint: str, *,
                 num_classes: int, image_size: int, in_chans: int) -> nn.Module:
    """Build ``backbone`` and load weights from a vitbench checkpoint or a plain state dict."""
    path = Path(checkpoint)
    fix = "pass --teacher RUN_DIR of a finished run (or a --teacher-checkpoint written by vitbench train)"
    if not path.is_file():
        raise VitbenchError(f"teacher checkpoint {path} not found: {fix}")
    with Progress(f"preparing the teacher: loading {path}"):  # a large model's weights take a while to read
        state = rundir.model_weights(rundir.load_checkpoint(path, fix=fix), path, plain_ok=True, fix=fix)
    model = create_backbone(backbone, preset, **overrides).create(num_classes, image_size, in_chans)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else lines[0] if lines else type(e).__name__
        raise VitbenchError(f"teacher checkpoint {path} does not fit {backbone}/{preset} ({first}): "
                            "check --teacher-backbone/--teacher-preset") from None
    return model.eval().requires_grad_(False)
