"""Augmentation: whole batches on the device, plus optional per-image RandAugment on the CPU.

The loaders deliver uint8 [B, C, H, W]; :class:`BatchTransform` turns a batch into the
model's float input after the host-to-device copy, so the copy moves 4x fewer bytes and
the per-sample work is a handful of vectorised tensor ops instead of a Python loop.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitbench.errors import VitbenchError

# ITU-R 601 luma, as PIL's convert("L") uses.
_LUMA = (0.299, 0.587, 0.114)


class BatchTransform(nn.Module):
    """uint8 [B, C, H, W] -> normalised float [B, in_chans, image_size, image_size].

    ``mean``/``std`` are per channel of the data as stored (C values, in [0, 1] units);
    converting channels converts them too. ``train`` adds a random crop from the image
    zero-padded by ``padding`` px and, with ``hflip``, a horizontal flip with p=0.5, each
    drawn per sample.
    """

    def __init__(
        self,
        *,
        image_size: int,
        in_chans: int,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool = False,
        padding: int = 0,
        hflip: bool = False,
    ):
        super().__init__()
        data_chans = len(mean)
        if in_chans not in (1, 3) or data_chans not in (1, 3):
            raise VitbenchError(
                f"in_chans must be 1 or 3 and the data must have 1 or 3 channels, got {in_chans} from {data_chans}"
            )
        if padding < 0:
            raise VitbenchError(f"random_crop_padding must be >= 0, got {padding}")
        self.image_size, self.in_chans, self.data_chans = int(image_size), int(in_chans), data_chans
        self.train_mode, self.padding, self.hflip = bool(train), int(padding), bool(hflip)
        mean_t = torch.tensor(mean, dtype=torch.float32)
        std_t = torch.tensor(std, dtype=torch.float32)
        if in_chans == 3 and data_chans == 1:
            mean_t, std_t = mean_t.repeat(3), std_t.repeat(3)
        elif in_chans == 1 and data_chans == 3:
            luma = torch.tensor(_LUMA)
            # Colour channels are strongly correlated, so luma's std is close to the weighted stds.
            mean_t, std_t = (luma * mean_t).sum(0, keepdim=True), (luma * std_t).sum(0, keepdim=True)
        self.register_buffer("mean", mean_t.view(1, -1, 1, 1), persistent=False)
        self.register_buffer("inv_std", (1.0 / std_t.clamp_min(1e-6)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("luma", torch.tensor(_LUMA).view(1, 3, 1, 1), persistent=False)

    def extra_repr(self) -> str:
        return (f"image_size={self.image_size}, in_chans={self.in_chans}, train={self.train_mode}, "
                f"padding={self.padding}, hflip={self.hflip}")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != self.data_chans:
            raise ValueError(f"expected uint8 [B, {self.data_chans}, H, W], got {tuple(images.shape)}")
        if self.mean.device != images.device:
            self.to(images.device)
        x = images.float().div_(255.0)
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        if self.in_chans == 3 and self.data_chans == 1:
            x = x.expand(-1, 3, -1, -1)
        elif self.in_chans == 1 and self.data_chans == 3:
            x = (x * self.luma).sum(1, keepdim=True)
        if self.train_mode:
            if self.padding:
                x = random_crop(x, self.padding)
            if self.hflip:
                flip = torch.rand(x.shape[0], device=x.device) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        return (x - self.mean) * self.inv_std


def random_crop(x: torch.Tensor, padding: int) -> torch.Tensor:
    """Per-sample random crop of the original size from ``x`` zero-padded by ``padding``, vectorised."""
    b, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    dx = torch.randint(0, 2 * padding + 1, (b, 1), device=x.device)
    rows = (dy + torch.arange(h, device=x.device)).view(b, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(b, 1, 1, w)
    rows = rows.expand(-1, padded.shape[1], -1, padded.shape[-1])
    out = padded.gather(2, rows)  # [B, C, h, W+2p]: the chosen rows
    return out.gather(3, cols.expand(-1, out.shape[1], h, -1))


def parse_randaugment(spec: str | None):
    """``"rand-m9-n2"`` (timm's notation: magnitude 9, 2 ops) -> torchvision RandAugment, or None."""
    if not spec:
        return None
    m = re.fullmatch(r"rand((?:-[mn]\d+)*)", spec.strip())
    if not m:
        raise VitbenchError(f"randaugment '{spec}' is not understood: write it like 'rand-m9-n2' (magnitude 9, 2 ops)")
    params = {p[0]: int(p[1:]) for p in m.group(1).split("-") if p}
    magnitude, num_ops = params.get("m", 9), params.get("n", 2)
    if not 0 <= magnitude <= 30:
        raise VitbenchError(f"randaugment magnitude must be in 0..30, got {magnitude} in '{spec}'")
    try:
        from torchvision.transforms import v2
    except ImportError:
        raise VitbenchError(
            "randaugment needs torchvision: pip install torchvision, or set data.randaugment to null"
        ) from None
    return v2.RandAugment(num_ops=num_ops, magnitude=magnitude)
