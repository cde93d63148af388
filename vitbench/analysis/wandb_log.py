"""Logging analysis figures to W&B, next to the run they analyse.

A finished run is not resumed: W&B cannot resume an offline run, and resuming a finished
online run would append to its history. Instead a new run is started in the same project
and group with ``job_type="analysis"``, named ``<run dir>-analysis``, whose config names the
training run's id. Offline unless logged in (:func:`vitbench.wandb_mode.resolve_mode`, as for training), written
under ``RUN_DIR/wandb`` like the training run, for ``wandb sync`` later.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vitbench.errors import VitbenchError


def log_images(run_dir: Path, config: dict, results: dict, images: dict[str, Any],
               mode: str | None = None) -> str | None:
    """Log ``images`` (key -> wandb.Image or list of them) to an analysis run; return its id, or None if disabled."""
    from vitbench.wandb_mode import resolve_mode

    w = config.get("wandb") or {}
    mode = resolve_mode(mode or w.get("mode") or "auto")
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    try:
        run = wandb.init(
            project=w.get("project") or "vitbench", group=w.get("group") or config.get("sweep") or None,
            job_type="analysis", name=f"{Path(run_dir).resolve().name}-analysis", dir=str(run_dir), mode=mode,
            tags=list(w.get("tags") or []) or None,
            config={"analyzed_run_id": results.get("wandb_run_id"), "run_dir": str(Path(run_dir).resolve()),
                    "backbone": results.get("backbone"), "preset": results.get("preset"),
                    "n_train": results.get("n_train"), "test_acc": results.get("test_acc")},
            settings=wandb.Settings(console="off"), reinit="finish_previous",
        )
    except Exception as e:  # noqa: BLE001
        raise VitbenchError(
            f"W&B could not start ({type(e).__name__}: {e}): pass --wandb offline or --wandb disabled"
        ) from None
    try:
        run.log(images)
    finally:
        run.finish()
    return run.id


def image(data, caption: str | None = None):
    import wandb

    return wandb.Image(str(data) if isinstance(data, Path) else data, caption=caption)
