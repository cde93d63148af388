"""A finished run, rebuilt without Lightning: the backbone from ``results.json`` and
``config.yaml``, its weights from the ``model.`` entries of ``checkpoints/best.ckpt``,
and its test images from the same data module (and eval transform) the run used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from vitbench.errors import VitbenchError
from vitbench.utils import read_json

RESULTS, CONFIG, BEST = "results.json", "config.yaml", Path("checkpoints") / "best.ckpt"
MODEL_PREFIX = "model."


@dataclass
class LoadedRun:
    run_dir: Path
    config: dict
    results: dict
    model: nn.Module
    backbone: str = field(default="")

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


def read_run(run_dir: str | Path) -> tuple[Path, dict, dict]:
    """(run_dir, config, results) of a finished run, or a VitbenchError saying what is missing."""
    run = Path(run_dir)
    if not run.is_dir():
        raise VitbenchError(f"{run} is not a directory: pass a run directory written by `vitbench train`")
    if not (run / RESULTS).is_file():
        hint = " (it has config.yaml: the run has not finished)" if (run / CONFIG).is_file() else ""
        raise VitbenchError(f"{run} is not a finished vitbench run: no {RESULTS}{hint}; pass a run directory written by `vitbench train`")
    if not (run / CONFIG).is_file():
        raise VitbenchError(f"{run} has {RESULTS} but no {CONFIG}: pass a complete run directory written by `vitbench train`")
    try:
        results = read_json(run / RESULTS)
        config = yaml.safe_load((run / CONFIG).read_text()) or {}
    except (ValueError, yaml.YAMLError) as e:
        raise VitbenchError(f"{run}: {RESULTS} or {CONFIG} is unreadable ({type(e).__name__}): re-run `vitbench train`") from None
    missing = [k for k in ("backbone", "preset", "image_size", "in_chans", "num_classes") if k not in results]
    if missing:
        raise VitbenchError(f"{run}/{RESULTS} lacks {', '.join(missing)}: it was not written by `vitbench train`")
    return run, config, results


def build_model(config: dict, results: dict) -> nn.Module:
    from vitbench.backbones import create_backbone, load_plugins

    load_plugins(config.get("plugins") or [])
    overrides = (config.get("model") or {}).get("overrides") or {}
    backbone = create_backbone(results["backbone"], results["preset"], **overrides)
    return backbone.create(num_classes=int(results["num_classes"]), image_size=int(results["image_size"]),
                           in_chans=int(results["in_chans"]))


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001
        # Lightning pickles hyper-parameters; the file is the user's own run, so a full load is acceptable.
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001
            raise VitbenchError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e}): re-run `vitbench train`") from None


def model_state(ckpt: dict, path: Path) -> dict[str, torch.Tensor]:
    """The backbone's weights: ``state_dict`` entries under ``model.`` (teacher etc. dropped)."""
    state = ckpt.get("state_dict") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise VitbenchError(f"{path} has no state_dict: pass a run whose checkpoints/best.ckpt was written by `vitbench train`")
    weights = {k[len(MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    if not weights:
        raise VitbenchError(f"{path} holds no '{MODEL_PREFIX}*' weights: it is not a vitbench ClassifierModule checkpoint")
    return weights


def load_run(run_dir: str | Path) -> LoadedRun:
    """Rebuild a finished run's backbone with its best weights, in eval mode on the CPU."""
    run, config, results = read_run(run_dir)
    ckpt_path = run / BEST
    if not ckpt_path.is_file():
        raise VitbenchError(f"{run} has no {BEST}: the run kept no best checkpoint; re-run `vitbench train`")
    model = build_model(config, results)
    weights = model_state(_torch_load(ckpt_path), ckpt_path)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise VitbenchError(
            f"{ckpt_path} does not match backbone '{results['backbone']}' preset '{results['preset']}' ({first}): "
            "the run's config.yaml or plugins changed since training"
        ) from None
    model.eval()
    return LoadedRun(run, config, results, model, results["backbone"])


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
