"""Callbacks that write what a run did: ``metrics.jsonl`` and plain epoch lines."""

from __future__ import annotations

import json
import time
from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only


def _scalar(metrics: dict, key: str):
    value = metrics.get(key)
    return None if value is None else float(value)


class EpochMetrics(L.Callback):
    """One JSON line per epoch: train loss, val accuracy, learning rate, images/s.

    Throughput counts training batches only (validation excluded), across all
    ranks, so it compares fairly between a single GPU and a DDP job.
    """

    def __init__(self, path: str | Path, echo: bool = False):
        self.path = Path(path)
        self.echo = echo
        self.images = 0
        self.train_time = 0.0
        self._t0 = None
        self._epoch_images = 0
        self._val_seconds = 0.0
        self._val_t0 = None
        self.last: dict = {}

    def on_train_start(self, trainer, pl_module):
        # A resumed run repeats the epoch it was interrupted in: drop that epoch's old line.
        if trainer.is_global_zero and self.path.is_file():
            lines = self.path.read_text().splitlines()
            kept = [line for line in lines if json.loads(line)["epoch"] < trainer.current_epoch]
            if kept != lines:
                from vitbench.utils import write_text

                write_text(self.path, "".join(line + "\n" for line in kept))

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_images = 0
        self._val_seconds = 0.0
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._t0 is None:  # resumed mid-epoch (SLURM requeue): Lightning skips on_train_epoch_start
            self._t0 = time.perf_counter()
        self._epoch_images += len(batch[0]) * trainer.world_size

    # Validation can run mid-epoch (step budgets): its time is subtracted, not just cut off.
    def on_validation_epoch_start(self, trainer, pl_module):
        self._val_t0 = time.perf_counter()

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.training and self._val_t0 is not None:
            self._val_seconds += time.perf_counter() - self._val_t0

    def on_train_epoch_end(self, trainer, pl_module):
        seconds = time.perf_counter() - self._t0 - self._val_seconds
        self.images += self._epoch_images
        self.train_time += seconds
        m = trainer.callback_metrics
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": _scalar(m, "train_loss_epoch"),
            "val_acc": _scalar(m, "val_acc"),
            "val_acc5": _scalar(m, "val_acc5"),
            "val_loss": _scalar(m, "val_loss"),
            "lr": trainer.optimizers[0].param_groups[0]["lr"],
            "images_per_s": self._epoch_images / seconds if seconds > 0 else None,
            "time": time.time(),
        }
        self.last = row
        self._write(trainer, row)

    @rank_zero_only
    def _write(self, trainer, row: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.echo:
            epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
            steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
            val = f"{row['val_acc']:.4f}" if row["val_acc"] is not None else "-"
            loss = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "-"
            where = f"epoch {row['epoch'] + 1}/{epochs}" if epochs else f"epoch {row['epoch'] + 1}  step {row['step']}/{steps}"
            print(f"{where}  train_loss {loss}  val_acc {val}  "
                  f"lr {row['lr']:.2e}  {row['images_per_s'] or 0:,.0f} img/s", flush=True)

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.train_time if self.train_time > 0 else None
