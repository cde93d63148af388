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


# Steps whose time is not throughput: allocator and cuDNN warm-up, torch.compile's compilation.
WARMUP_STEPS = 5


class EpochMetrics(L.Callback):
    """One JSON line per epoch: train loss, val accuracy, learning rate, images/s.

    Throughput counts training batches only (validation and checkpointing excluded,
    and the first ``WARMUP_STEPS`` steps of a run of at least ten times as many),
    across all ranks, so it compares fairly between a single GPU and a DDP job.
    """

    def __init__(self, path: str | Path, echo: bool = False):
        self.path = Path(path)
        self.echo = echo
        self.images = 0
        self.train_time = 0.0
        self._epoch_images = 0
        self._epoch_time = 0.0
        self._batch_t0: float | None = None
        self._last_end: float | None = None
        self._validated = False
        self._warmup = 0
        self.last: dict = {}

    def on_train_start(self, trainer, pl_module):
        self._warmup = WARMUP_STEPS if trainer.estimated_stepping_batches >= 10 * WARMUP_STEPS else 0
        # A resumed run repeats the epoch it was interrupted in: drop that epoch's old line.
        if trainer.is_global_zero and self.path.is_file():
            lines = self.path.read_text().splitlines()
            kept = [line for line in lines if json.loads(line)["epoch"] < trainer.current_epoch]
            if kept != lines:
                from vitbench.utils import write_text

                write_text(self.path, "".join(line + "\n" for line in kept))

    def on_train_epoch_start(self, trainer, pl_module):
        self._epoch_images, self._epoch_time, self._last_end = 0, 0.0, None

    # Training time is the time between consecutive training batches, except across a
    # validation (and the checkpoint it saves): step budgets validate mid-epoch.
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = time.perf_counter()
        if self._last_end is not None and not self._warmup:
            self._epoch_time += now - self._last_end  # fetching this batch
        self._batch_t0 = now

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        if self._warmup > 0:
            self._warmup -= 1
        elif self._batch_t0 is not None:
            self._epoch_time += now - self._batch_t0
            self._epoch_images += len(batch[0]) * trainer.world_size
        self._last_end = now

    def on_validation_start(self, trainer, pl_module):
        self._last_end = None

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_epoch_end(self, trainer, pl_module):
        if self._last_end is not None and pl_module.device.type == "cuda":
            import torch

            torch.cuda.synchronize(pl_module.device)  # the epoch's last steps may still be queued
            self._epoch_time += time.perf_counter() - self._last_end
        seconds = self._epoch_time
        self.images += self._epoch_images
        self.train_time += seconds
        m = trainer.callback_metrics
        # callback_metrics keeps the last validation's values: an epoch that did not validate says so.
        val = (lambda key: _scalar(m, key)) if self._validated else (lambda key: None)
        self._validated = False
        row = {
            "epoch": trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": _scalar(m, "train_loss_epoch"),
            "val_acc": val("val_acc"),
            "val_acc5": val("val_acc5"),
            "val_loss": val("val_loss"),
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
