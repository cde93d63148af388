"""W&B logging through Lightning's ``WandbLogger``: offline unless the user is logged in.

The mode comes from :func:`vitbench.wandb_mode.resolve_mode`; an offline run is written
under ``RUN_DIR/wandb`` to ``wandb sync`` later. The run id is stable for the run dir, so a
requeued task continues the same run.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

from vitbench.config import TrainConfig
from vitbench.rundir import stable_run_id
from vitbench.wandb_mode import resolve_mode


def make_wandb_logger(cfg: TrainConfig, out: Path, info: dict) -> WandbLogger | None:
    mode = resolve_mode(cfg.wandb.mode)
    if mode == "disabled":
        return None
    w = cfg.wandb
    config = {**cfg.to_dict(), **{k: info[k] for k in (
        "label", "backbone", "family", "baseline", "preset", "fraction", "samples_per_class", "n_train", "seed",
        "sweep", "dataset", "teacher", "distillation", "params", "gflops")}}
    return WandbLogger(
        project=w.project, group=w.group or cfg.sweep, tags=list(w.tags) or None, name=w.name or out.name,
        id=w.id or stable_run_id(out), save_dir=str(out), mode=mode, resume="allow", config=config,
        job_type="train",
    )
