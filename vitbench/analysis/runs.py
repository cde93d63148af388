"""A finished run, rebuilt without Lightning: the backbone from ``results.json`` and
``config.yaml``, its weights from the ``model.`` entries of ``checkpoints/best.ckpt`` (the
``ema.module.`` ones for a run with ``optim.ema_decay``: those it was tested with) (read by
:func:`vitbench.rundir.load_checkpoint`: weights only, never code), and its test images from
the same data module (and eval transform) the run used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vitbench import rundir
from vitbench.errors import VitbenchError

if TYPE_CHECKING:
    from vitbench.backbones import Backbone

FIX = "pass a run directory written by `vitbench train`"


@dataclass
class LoadedRun:
    run_dir: Path
    config: dict
    results: dict
    model: nn.Module
    backbone: Backbone  # what built the model: it says which analyses apply (its name is backbone.name)

    @property
    def class_names(self) -> list[str]:
        names = self.results.get("class_names") or []
        return list(names) if names else [str(i) for i in range(self.results["num_classes"])]

    @property
    def image_size(self) -> int:
        return int(self.results["image_size"])

    @property
    def in_chans(self) -> int:
        return int(self.results["in_chans"])


def build_model(config: dict, results: dict) -> tuple[Backbone, nn.Module]:
    from vitbench.backbones import create_backbone, load_plugins

    load_plugins(config.get("plugins") or [])
    overrides = (config.get("model") or {}).get("overrides") or {}
    backbone = create_backbone(results["backbone"], results["preset"], **overrides)
    model = backbone.create(num_classes=int(results["num_classes"]), image_size=int(results["image_size"]),
                            in_chans=int(results["in_chans"]))
    return backbone, model


def ask_backbone(backbone: Backbone, method: str, *args) -> Any:
    """``backbone.<method>(*args)`` (None: it cannot); a plugin's method that raises is one line naming it."""
    try:
        return getattr(backbone, method)(*args)
    except VitbenchError:
        raise
    except Exception as e:  # noqa: BLE001 - a plugin's own method: one line naming it, not a traceback
        text = " ".join(str(e).split())[:240]
        raise VitbenchError(
            f"backbone '{backbone.name}': {method}() failed ({type(e).__name__}: {text}): fix it"
        ) from None


def implementing(method: str) -> str:
    """The registered backbones that implement ``method``, for an error's list."""
    from vitbench.backbones import list_backbones

    return ", ".join(list_backbones(lambda cls: cls.implements(method))) or "no registered backbone"


def load_run(run_dir: str | Path, plugins: list[str] | None = None) -> LoadedRun:
    """Rebuild a finished run's backbone with its best weights, in eval mode on the CPU.

    ``plugins``: those the user names; a plugin the run's config.yaml names must be among them.
    """
    run, config, results = rundir.read_finished_run(run_dir, fix=FIX)
    ckpt_path = rundir.best_checkpoint(run)
    if not ckpt_path.is_file():
        raise VitbenchError(
            f"{run} has no {rundir.BEST_CKPT}: the run kept no best checkpoint; re-run `vitbench train`"
        )
    rundir.check_plugins_named(config["plugins"], plugins or [], run)
    weights = rundir.model_weights(rundir.load_checkpoint(ckpt_path, fix=FIX), ckpt_path, fix=FIX)
    backbone, model = build_model(config, results)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise VitbenchError(
            f"{ckpt_path} does not match backbone '{results['backbone']}' preset '{results['preset']}' ({first}): "
            "the run's config.yaml or plugins changed since training"
        ) from None
    model.eval()
    return LoadedRun(run, config, results, model, backbone)


def test_images(run: LoadedRun, n: int) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """The first ``n`` test images as the model sees them (eval transform), labels, and the transform."""
    from vitbench.data import ImageClassificationDataModule

    data_cfg: dict[str, Any] = dict(run.config.get("data") or {})
    data_cfg["batch_size"] = max(1, n)
    data_cfg["num_workers"] = 0
    data = ImageClassificationDataModule(**data_cfg, seed=run.config.get("seed", 0),
                                         image_size=run.image_size, in_chans=run.in_chans)
    data.setup("test")
    images, labels = next(iter(data.test_dataloader()))
    images, labels = data.on_after_batch_transfer((images[:n], labels[:n]), 0)
    return images, labels, data.eval_transform


def displayable(images: torch.Tensor, transform: Any = None) -> torch.Tensor:
    """Model inputs back to [0, 1] pixels [B, H, W, C] for drawing (undo the normalisation)."""
    x = images.detach().float()
    mean, inv_std = getattr(transform, "mean", None), getattr(transform, "inv_std", None)
    if isinstance(mean, torch.Tensor) and isinstance(inv_std, torch.Tensor) and mean.shape[1] == x.shape[1]:
        x = x / inv_std.to(x) + mean.to(x)
    else:  # unknown normalisation: stretch each image to [0, 1]
        lo = x.amin(dim=(1, 2, 3), keepdim=True)
        hi = x.amax(dim=(1, 2, 3), keepdim=True)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
    return x.clamp(0, 1).permute(0, 2, 3, 1)
