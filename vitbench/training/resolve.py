"""A config resolved against its backbone: the preset filled in, the backbone's arguments checked and
the run dir named.

It imports no Lightning (a backbone's build imports torch and timm only when one is built), so
``vitbench train --print-config`` and a bad backbone setting answer without the seconds that
``train()`` itself needs to start.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from vitbench.backbones import Backbone, create_backbone, load_plugins
from vitbench.config import TrainConfig
from vitbench.data.subsets import TrainSize


def default_out_dir(cfg: TrainConfig) -> str:
    """The run dir of a config whose preset is resolved, when it names none."""
    size = TrainSize.of_run(cfg.data.fraction, cfg.data.samples_per_class)
    return str(Path("runs") / f"{cfg.model.backbone}-{cfg.model.preset}-{size.tag}-s{cfg.seed}")


def resolve(cfg: TrainConfig) -> tuple[TrainConfig, Backbone]:
    """A copy of ``cfg`` with the backbone's preset and the run dir filled in, and the run's backbone
    spec: plugins loaded; name, preset, overrides and a given image size checked."""
    load_plugins(cfg.plugins)
    backbone = create_backbone(cfg.model.backbone, cfg.model.preset, **cfg.model.overrides)
    if cfg.model.image_size is not None:
        backbone.check_image_size(cfg.model.image_size)
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, preset=backbone.preset))
    return dataclasses.replace(cfg, out=cfg.out or default_out_dir(cfg)), backbone
