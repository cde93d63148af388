"""Callbacks that write what a run did (``metrics.jsonl``, plain epoch lines) and make resuming exact.

An epoch's line reaches ``metrics.jsonl`` only once a checkpoint saved after the epoch ended is on
disk (or training is over), and the rows travel in every checkpoint: a run resumed from any
checkpoint rewrites the file to exactly that checkpoint's rows, so a finished epoch's line is
written once and never changes, however often the run is interrupted.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only


def _scalar(metrics: dict, key: str):
    value = metrics.get(key)
    return None if value is None else float(value)


def json_line(row: dict) -> str:
    """``row`` as one line of strict JSON: a non-finite number is ``null``, never ``NaN``."""
    plain = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
    return json.dumps(plain, allow_nan=False) + "\n"


# Steps whose time is not throughput: allocator and cuDNN warm-up, torch.compile's compilation.
WARMUP_STEPS = 5
_VAL_KEYS = ("val_acc", "val_acc5", "val_loss")


def _rate(trainer) -> float:
    """The learning rate the next optimizer step will use."""
    return float(trainer.optimizers[0].param_groups[0]["lr"])


class EpochMetrics(L.Callback):
    """One JSON line per epoch: train loss, val accuracy, learning rate, images/s.

    Throughput counts training batches only (validation and checkpointing excluded,
    and the first ``WARMUP_STEPS`` steps of a run of at least ten times as many),
    across all ranks, so it compares fairly between a single GPU and a DDP job.
    The train loss is the epoch's mean over images, accumulated here (not Lightning's
    epoch mean, which restarts on resume) so that an epoch split by a resume has its exact value.
    """

    def __init__(self, path: str | Path, echo: bool = False):
        self.path = Path(path)
        self.echo = echo
        self.images = 0
        self.train_time = 0.0
        self.rows: list[dict] = []  # every finished epoch, in order; restored from a checkpoint on resume
        self.validations: list[tuple[int, float]] = []  # (step, val_acc) of every validation: the convergence check
        self._written = 0  # rows already in the file
        self._covered = 0  # rows in the newest checkpoint saved (or being saved)
        self._restored = False
        self._started = False  # on_train_start ran (not when a resumed run has no step left)
        self._batch_t0: float | None = None
        self._last_end: float | None = None
        self._warmup = 0
        self._reset_epoch()
        self.last: dict = {}

    def _reset_epoch(self) -> None:
        self._epoch_images, self._epoch_time = 0, 0.0
        self._loss_sum: torch.Tensor | float = 0.0  # on the device between checkpoints: no sync per step
        self._loss_n = 0
        self._validated, self._val = False, {}
        self._end_wall: float | None = None
        self._lr: float | None = None  # the rate the epoch's latest step used
        self._open: int | None = None  # the epoch these sums are of (trainer.current_epoch at its steps)

    # -- checkpoints -------------------------------------------------------------------

    def state_dict(self) -> dict:
        # Called while a checkpoint is being written: the rows it holds are written to the file once it is.
        self._covered = len(self.rows)
        return {
            "rows": [dict(r) for r in self.rows], "images": self.images, "train_time": self.train_time,
            "validations": [list(v) for v in self.validations],
            "epoch": {"images": self._epoch_images, "time": self._epoch_time, "loss_sum": float(self._loss_sum),
                      "loss_n": self._loss_n, "validated": self._validated, "val": dict(self._val),
                      "end_wall": self._end_wall, "lr": self._lr, "index": self._open},
        }

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        # Called just before load_state_dict: only resuming a fit restores the rows (testing best.ckpt must not).
        self._fitting = trainer.state.fn == "fit"

    def load_state_dict(self, state: dict) -> None:
        if not getattr(self, "_fitting", True):
            return
        self.rows = [dict(r) for r in state["rows"]]
        self.validations = [(int(s), float(a)) for s, a in state.get("validations", [])]
        self.images, self.train_time = state["images"], state["train_time"]
        e = state["epoch"]
        self._epoch_images, self._epoch_time = e["images"], e["time"]
        self._loss_sum, self._loss_n = e["loss_sum"], e["loss_n"]
        self._validated, self._val, self._end_wall = e["validated"], dict(e["val"]), e["end_wall"]
        # Absent in a checkpoint of an older vitbench. Its rows are every epoch up to the open one, in order.
        self._lr = e.get("lr")
        self._open = e.get("index", self.rows[-1]["epoch"] + 1 if self.rows else 0)
        self._restored = True

    def checkpoint_saved(self) -> None:
        """A checkpoint is on disk: the rows it holds may go to the file."""
        self._flush(self._covered)

    @rank_zero_only
    def _flush(self, upto: int) -> None:
        if upto <= self._written:
            return
        with self.path.open("a") as f:
            f.write("".join(json_line(r) for r in self.rows[self._written : upto]))
        self._written = upto

    # -- hooks -------------------------------------------------------------------------

    def on_train_start(self, trainer, pl_module):
        self._warmup = WARMUP_STEPS if trainer.estimated_stepping_batches >= 10 * WARMUP_STEPS else 0
        self._sync_file(trainer)

    def _sync_file(self, trainer) -> None:
        self._started = True
        if not self._restored:
            # A fresh start, or a checkpoint from before rows were saved in it: keep the lines of epochs it finished.
            self.rows = [r for r in self._read_rows() if r.get("epoch", -1) < trainer.current_epoch]
        self._covered = len(self.rows)
        if trainer.is_global_zero:
            # The file holds exactly the checkpoint's rows: lines written after it was saved are dropped.
            text = "".join(json_line(r) for r in self.rows)
            if (self.path.read_text() if self.path.is_file() else "") != text:
                from vitbench.utils import write_text

                write_text(self.path, text)
        self._written = len(self.rows)

    def _read_rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        rows = []
        for line in self.path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                break  # a line cut short by a crash, and anything after it
        return rows

    def on_train_epoch_start(self, trainer, pl_module):
        # Not called for the epoch a resumed run re-enters: its restored sums carry on.
        self._close_finished_epoch(trainer, pl_module)
        self._reset_epoch()
        self._last_end = None

    def _close_finished_epoch(self, trainer, pl_module) -> None:
        # A checkpoint saved after an epoch's last step, before the epoch ended (a stop there: every stop,
        # when an epoch is one step), resumes in the next epoch, which Lightning enters without starting
        # it: the restored sums are the finished epoch's, and its row comes first.
        if self._open is not None and self._open != trainer.current_epoch and (self._loss_n or self._validated):
            self._close_epoch(trainer, pl_module)

    # Training time is the time between consecutive training batches, except across a
    # validation (and the checkpoint it saves): step budgets validate mid-epoch.
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._covered > self._written:  # the previous step's validation saved a checkpoint
            self.checkpoint_saved()
        if self._restored:
            self._close_finished_epoch(trainer, pl_module)
            self._restored = False
        now = time.perf_counter()
        if self._last_end is not None and not self._warmup:
            self._epoch_time += now - self._last_end  # fetching this batch
        self._batch_t0 = now
        self._lr = _rate(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        now = time.perf_counter()
        n = len(batch[0])
        if self._warmup > 0:
            self._warmup -= 1
        elif self._batch_t0 is not None:
            self._epoch_time += now - self._batch_t0
            self._epoch_images += n * trainer.world_size
        self._last_end = now
        self._end_wall = time.time()
        self._open = trainer.current_epoch
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            if not isinstance(self._loss_sum, torch.Tensor):  # the epoch's first step (or first after a resume)
                self._loss_sum = torch.tensor(self._loss_sum, dtype=torch.float32, device=loss.device)
            self._loss_sum.add_(loss.detach().float(), alpha=n)  # one kernel, no sync
            self._loss_n += n

    def on_validation_start(self, trainer, pl_module):
        self._last_end = None

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            # Kept here, not read from callback_metrics at epoch end: a checkpoint carries it across a resume.
            self._validated = True
            self._val = {key: _scalar(trainer.callback_metrics, key) for key in _VAL_KEYS}
            if self._val.get("val_acc") is not None:
                self.validations.append((trainer.global_step, self._val["val_acc"]))

    def on_train_epoch_end(self, trainer, pl_module):
        self._close_epoch(trainer, pl_module)

    def _close_epoch(self, trainer, pl_module) -> None:
        if self._last_end is not None and pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)  # the epoch's last steps may still be queued
            self._epoch_time += time.perf_counter() - self._last_end
        self._last_end = None
        seconds = self._epoch_time
        self.images += self._epoch_images
        self.train_time += seconds
        loss_sum, loss_n = self._loss_sum, self._loss_n
        if trainer.world_size > 1:
            # The strategy's device, not the module's: after fit's teardown (on_fit_end) the module is on the
            # CPU, which NCCL cannot reduce.
            device = trainer.strategy.root_device
            totals = trainer.strategy.reduce(torch.tensor([float(loss_sum), float(loss_n)], device=device),
                                             reduce_op="sum")
            loss_sum, loss_n = float(totals[0]), float(totals[1])
        row = {
            "epoch": self._open if self._open is not None else trainer.current_epoch,
            "step": trainer.global_step,
            "train_loss": float(loss_sum) / loss_n if loss_n else None,
            # An epoch that did not validate says so (null), rather than repeating an older validation.
            **{key: self._val.get(key) if self._validated else None for key in _VAL_KEYS},
            # The rate the epoch's last step used: the scheduler has already moved on to the next step's,
            # which after a cycle that passed the check would be a warm-up that never runs.
            "lr": self._lr if self._lr is not None else _rate(trainer),
            "images_per_s": self._epoch_images / seconds if seconds > 0 else None,
            # When its last step ended: the same value if a resumed run has to close this epoch again.
            "time": self._end_wall if self._end_wall is not None else time.time(),
        }
        self.last = row
        self.rows.append(row)
        self._reset_epoch()
        self._echo(trainer, row)
        self.checkpoint_saved()  # rows before this one, if a checkpoint since covers them

    def on_train_end(self, trainer, pl_module):
        # A run resumed from a checkpoint saved at its very end (a cycle that passed the check, the last
        # step) has nothing left to train, and Lightning never ends the epoch it re-entered: its row is
        # written here, from the restored sums, as the uninterrupted run wrote it.
        if self._loss_n or self._validated:
            self._close_epoch(trainer, pl_module)
        # Training is over: every row goes to the file now, not at a next checkpoint that will not come.
        self._flush(len(self.rows))

    def on_fit_end(self, trainer, pl_module):
        # A run resumed from a checkpoint saved at its last step (stopped in its final validation, or while
        # testing) has no step left: Lightning skips training and every training hook. The epoch that
        # checkpoint left open is closed here, as the uninterrupted run closed it.
        if not self._started:
            self._sync_file(trainer)
            self.on_train_end(trainer, pl_module)

    @rank_zero_only
    def _echo(self, trainer, row: dict) -> None:
        if not self.echo:
            return
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        steps = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        val = f"{row['val_acc']:.4f}" if row["val_acc"] is not None else "-"
        loss = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "-"
        where = (f"epoch {row['epoch'] + 1}/{epochs}" if epochs
                 else f"epoch {row['epoch'] + 1}  step {row['step']}/{steps}")
        print(f"{where}  train_loss {loss}  val_acc {val}  "
              f"lr {row['lr']:.2e}  {row['images_per_s'] or 0:,.0f} img/s", flush=True)

    @property
    def images_per_s(self) -> float | None:
        return self.images / self.train_time if self.train_time > 0 else None


class ConvergenceCycles(L.Callback):
    """``budget.cycles``: at the end of each cycle of ``cycle`` steps, which is a validation step (see
    ``schedule.cycle_schedule``), the convergence check on every validation so far (``metrics.validations``);
    the run stops there if it passed (and has trained ``min_cycles``), or trains the next cycle (the
    learning-rate schedule restarts by itself, see ``ClassifierModule``) up to ``cycles``.

    The verdict is a function of the validations alone, which every checkpoint carries, so a run
    resumed at a cycle's end decides again and the same way.
    """

    def __init__(self, metrics: EpochMetrics, cycle: int, cycles: int, min_cycles: int = 1, echo: bool = False):
        self.metrics, self.cycle, self.cycles, self.min_cycles, self.echo = metrics, cycle, cycles, min_cycles, echo

    def _at_cycle_end(self, step: int) -> bool:
        return step > 0 and step % self.cycle == 0 and step < self.cycle * self.cycles

    def _decide(self, trainer) -> None:
        from vitbench.training import convergence

        step = trainer.global_step
        k = step // self.cycle
        v = convergence.verdict(self.metrics.validations, step, cycle=self.cycle)
        converged = trainer.strategy.reduce_boolean_decision(bool(v["converged"]), all=True)
        stop = converged and k >= self.min_cycles
        if stop:
            trainer.should_stop = True
        if self.echo and trainer.is_global_zero:
            gain = "-" if v["gain"] is None else f"{v['gain'] * 100:+.2f}"
            then = ("converged, stopping" if stop else f"converged, cycle {k + 1} starts (budget.min_cycles)"
                    if converged else f"not converged, cycle {k + 1} starts")
            print(f"cycle {k}/{self.cycles}  gain {gain} points: {then}", flush=True)

    def on_train_start(self, trainer, pl_module):
        if self._at_cycle_end(trainer.global_step):  # resumed from a checkpoint saved at a cycle's end
            self._decide(trainer)

    def on_validation_end(self, trainer, pl_module):
        if not trainer.sanity_checking and self._at_cycle_end(trainer.global_step):
            self._decide(trainer)


class RNGState(L.Callback):
    """The random generators' states, saved in every checkpoint and restored on resume.

    Augmentation (crops, flips, mixup) draws from them, so a run resumed mid-epoch (its data order
    restored by :class:`~vitbench.data.device_batches.DeviceBatches`) trains on the same batches as
    one never interrupted. Plain tensors and numbers: the state loads with ``weights_only=True``.
    """

    def state_dict(self) -> dict:
        _, keys, pos, has_gauss, gauss = np.random.get_state()
        state = {"torch": torch.get_rng_state(),
                 "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)),
                           "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state()
        return state

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._fitting = trainer.state.fn == "fit"

    def load_state_dict(self, state: dict) -> None:
        if not getattr(self, "_fitting", True):  # testing best.ckpt is no resume
            return
        torch.set_rng_state(state["torch"])
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["cuda"])
