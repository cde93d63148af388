"""W&B logging through Lightning's ``WandbLogger``: offline unless the user is logged in.

Compute nodes often cannot reach wandb.ai, so ``mode: auto`` runs online only
when credentials exist (``WANDB_API_KEY`` or a ``~/.netrc`` entry) and otherwise
writes an offline run under ``RUN_DIR/wandb`` to ``wandb sync`` later. The run
id is stable for the run dir, so a requeued task continues the same run.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

from vitbench.config import TrainConfig
from vitbench.rundir import stable_run_id


def _logged_in() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        host = os.environ.get("WANDB_BASE_URL", "api.wandb.ai").split("//")[-1]
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def resolve_mode(mode: str) -> str:
    """An explicit mode wins; ``auto`` follows ``WANDB_MODE``, else online only with credentials."""
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE")
    if env in ("offline", "online", "disabled"):
        return env
    if env == "dryrun":
        return "offline"
    return "online" if _logged_in() else "offline"


def make_wandb_logger(cfg: TrainConfig, out: Path, info: dict) -> WandbLogger | None:
    mode = resolve_mode(cfg.wandb.mode)
    if mode == "disabled":
        return None
    w = cfg.wandb
    config = {**cfg.to_dict(), **{k: info[k] for k in (
        "label", "backbone", "family", "preset", "fraction", "samples_per_class", "n_train", "seed", "sweep",
        "dataset", "teacher", "distillation", "params", "gflops")}}
    return WandbLogger(
        project=w.project, group=w.group or cfg.sweep, tags=list(w.tags) or None, name=w.name or out.name,
        id=w.id or stable_run_id(out), save_dir=str(out), mode=mode, resume="allow", config=config,
        job_type="train",
    )
