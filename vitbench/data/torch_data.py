"""Torch datasets that yield uint8 [C, H, W] images and int64 labels.

Both implement ``__getitems__``: the DataLoader then asks for a whole batch at once
and :func:`collate` passes it through, instead of building and stacking B samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from vitbench.data.decode import ImageSpec, decode_one, raw_images


def collate(batch):
    """Batches from ``__getitems__`` are already (images, labels); anything else is collated as usual."""
    return batch if isinstance(batch, tuple) else default_collate(batch)


class InMemoryImages(Dataset):
    """Rows ``indices`` of a decoded uint8 tensor [N, C, H, W]; ``augment`` (per image, uint8 CHW) is optional.

    Rows are gathered through numpy views of the tensors: torch's indexing of a CPU tensor goes
    through its thread pool, which costs ~0.2-13 ms per batch against numpy's ~10 us.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray, augment=None):
        self.images, self.labels, self.augment = images, labels, augment
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        imgs, labels = self.__getitems__([i])
        return imgs[0], labels[0]

    def __getitems__(self, batch: list[int]):
        rows = self.indices[np.asarray(batch, dtype=np.int64)]
        imgs = torch.from_numpy(self.images.numpy()[rows])
        if self.augment:
            imgs = torch.stack([self.augment(img) for img in imgs])
        return imgs, torch.from_numpy(self.labels.numpy()[rows])


class StreamingImages(Dataset):
    """Rows ``indices`` of a Hugging Face dataset, decoded one at a time (in the DataLoader workers)."""

    def __init__(self, hf_dataset: Any, image_column: str, labels: np.ndarray, indices: np.ndarray, spec: ImageSpec,
                 augment=None):
        self.raw, self.column = raw_images(hf_dataset, image_column), image_column
        self.spec, self.augment = spec, augment
        self.labels = np.asarray(labels, dtype=np.int64)
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def _decode(self, value: dict) -> torch.Tensor:
        img = torch.from_numpy(decode_one(value, self.spec).copy())
        return self.augment(img) if self.augment else img

    def __getitem__(self, i: int):
        imgs, labels = self.__getitems__([i])
        return imgs[0], labels[0]

    def __getitems__(self, batch: list[int]):
        rows = self.indices[np.asarray(batch, dtype=np.int64)]
        values = self.raw[rows.tolist()][self.column]  # one Arrow read for the whole batch
        return torch.stack([self._decode(v) for v in values]), torch.from_numpy(self.labels[rows])
