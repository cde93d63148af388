"""Batches drawn by index from uint8 tensors that live on the training device.

When the decoded split fits in memory it is moved to the device once; every batch is then
a gather on the device, so a step costs no DataLoader, no collate and no host-to-device copy.
The semantics match the DataLoader path they replace: a seeded shuffle per epoch, the last
partial batch kept, and under DDP each rank drawing a disjoint shard of the epoch (padded
like ``DistributedSampler`` for training, so every rank takes the same number of steps;
unpadded for evaluation, so every image is counted exactly once).

A pass can be resumed where it stopped: ``state_dict()``/``load_state_dict()`` are Lightning's
stateful-dataloader protocol, so a checkpoint saved mid-epoch records how many batches of which
epoch were used, and the resumed run draws the rest of that epoch's order, not a new one.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

# Each epoch's order comes from (seed, epoch) alone, so a resumed run replays the same order.
_EPOCH_STRIDE = 1_000_003


class DeviceBatches:
    """An iterable of ``(images uint8 [B, C, H, W], labels int64 [B])`` on ``images.device``.

    ``rows`` index into ``images``/``labels`` (a subset of a split). ``epoch`` is asked once
    per pass (``trainer.current_epoch``); ``rank``/``world_size`` shard each pass; ``drop_last``
    drops a pass's last partial batch if it has a full one.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        rows: np.ndarray,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        epoch: Callable[[], int] = lambda: 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
        augment=None,
        consumed: Callable[[], int] | None = None,
    ):
        if augment is not None:
            raise ValueError("per-image augmentation runs in DataLoader workers: use the DataLoader path")
        self.images, self.labels = images, labels
        self.rows = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size = rank, world_size
        # Only when a full batch exists: a subset smaller than one batch still trains.
        self.drop_last = drop_last and self._shard_size() >= batch_size
        self._on_cpu = images.device.type == "cpu"
        # Batches of the current pass the trainer has used: the trainer's own count when given, since
        # Lightning fetches a batch ahead, so the iterator has always served one more than was trained on.
        self.consumed = consumed
        self._pass_epoch, self._served = 0, 0
        self._resume: tuple[int, int] | None = None

    def _shard_size(self) -> int:
        n = len(self.rows)
        if self.shuffle:  # padded: equal step counts on every rank keep DDP's collectives in lockstep
            return math.ceil(n / self.world_size)
        return len(range(self.rank, n, self.world_size))

    def __len__(self) -> int:
        if self.drop_last:
            return self._shard_size() // self.batch_size
        return math.ceil(self._shard_size() / self.batch_size)

    def state_dict(self) -> dict:
        """Where the current pass stands: its epoch and how many of its batches were used."""
        used = self.consumed() if self.consumed is not None else self._served
        return {"epoch": self._pass_epoch, "batches": int(used)}

    def load_state_dict(self, state: dict) -> None:
        """Make the next pass, if it is of ``state["epoch"]``, skip the ``state["batches"]`` batches already used."""
        self._resume = (int(state["epoch"]), int(state["batches"]))

    def _order(self, epoch: int) -> torch.Tensor:
        rows = self.rows
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * _EPOCH_STRIDE + epoch)
            rows = rows[torch.randperm(len(rows), generator=g)]
            total = self._shard_size() * self.world_size
            if total > len(rows):
                rows = torch.cat([rows, rows[: total - len(rows)]])
        rows = rows[self.rank :: self.world_size]
        return rows[: len(self) * self.batch_size] if self.drop_last else rows

    def __iter__(self):
        epoch = int(self.epoch())
        skip = self._resume[1] if self._resume is not None and self._resume[0] == epoch else 0
        self._resume = None  # once: the passes after it start from their beginning
        self._pass_epoch, self._served = epoch, skip
        order = self._order(epoch)
        starts = range(skip * self.batch_size, len(order), self.batch_size)
        if self._on_cpu:
            # numpy's fancy indexing of a CPU tensor's memory beats torch's (no thread-pool dispatch).
            images, labels, order = self.images.numpy(), self.labels.numpy(), order.numpy()
            for start in starts:
                idx = order[start : start + self.batch_size]
                self._served += 1
                yield torch.from_numpy(images[idx]), torch.from_numpy(labels[idx])
            return
        order = order.to(self.images.device)  # one small copy per pass, none per step
        for start in starts:
            idx = order[start : start + self.batch_size]
            self._served += 1
            yield self.images.index_select(0, idx), self.labels.index_select(0, idx)
