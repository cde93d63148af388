"""Decoding images to uint8 arrays, the decoded-array cache, and pixel statistics.

Decoding is the slow part of a small dataset (PIL on 60000 PNGs takes seconds), so
a decoded split is cached as ``$VITBENCH_CACHE/decoded/<key>.npy``. The key covers
everything the pixels depend on: the source's identity, split, column, target shape
and the Arrow files' names, sizes and mtimes; a changed dataset gets a new key.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from io import BytesIO
from typing import Any, Iterator

import numpy as np

from vitbench.data.cache import cache_key, cache_root, files_signature
from vitbench.errors import VitbenchError
from vitbench.utils import Progress, atomic_path, write_json

GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_PROBE = 64


@dataclass(frozen=True)
class ImageSpec:
    """The shape every decoded image is brought to: channels (1 or 3), height, width."""

    chans: int
    height: int
    width: int

    @property
    def mode(self) -> str:
        return "L" if self.chans == 1 else "RGB"

    @property
    def nbytes(self) -> int:
        return self.chans * self.height * self.width


def raw_images(ds: Any, column: str):
    """``ds`` reduced to ``column``, undecoded: {"bytes", "path"} values, cheap to pickle to workers."""
    from datasets import Image

    return ds.select_columns([column]).cast_column(column, Image(decode=False))


def labels_of(ds: Any, column: str) -> np.ndarray:
    # Through Arrow: reading a column via ``ds[column]`` converts element by element (seconds for 60000 rows).
    return ds.select_columns([column]).with_format("arrow")[:].column(column).to_numpy().astype(np.int64)


def _undecodable(value: dict, error: BaseException) -> VitbenchError:
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
    if value.get("path"):
        reason = reason.replace(f" '{value['path']}'", "").replace(str(value["path"]), "it")  # named once, below
    reason = reason[:200]
    where = f"image file {value['path']}" if value.get("path") else "an image stored in the dataset (no file name)"
    return VitbenchError(
        f"{where} cannot be decoded ({reason}): replace or remove it, or re-save the dataset without it"
    )


def _open(value: dict, header_only: bool = False):
    """The PIL image of a raw ``{"bytes", "path"}`` value; ``header_only``: size and mode, pixels not read.

    A file PIL cannot read is a one-line error naming it, not a traceback from deep in a decode loop.
    """
    import PIL.Image
    from datasets import Image

    try:
        if value.get("bytes"):
            img = PIL.Image.open(BytesIO(value["bytes"]))
            if not header_only:
                img.load()
            return img
        return Image().decode_example(value)  # paths, remote files, EXIF rotation
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, PIL.Image.DecompressionBombError) as e:
        # OSError covers PIL's UnidentifiedImageError and "image file is truncated"; SyntaxError a broken PNG chunk.
        raise _undecodable(value, e) from None


def decode_one(value: dict, spec: ImageSpec) -> np.ndarray:
    """One image as uint8 [C, H, W] in ``spec``'s mode and size."""
    import PIL.Image

    img = _open(value)
    if img.mode != spec.mode:
        img = img.convert(spec.mode)
    if img.size != (spec.width, spec.height):
        img = img.resize((spec.width, spec.height), PIL.Image.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _iter_values(raw: Any, column: str, rows: np.ndarray | None = None) -> Iterator[dict]:
    if rows is not None:
        raw = raw.select(rows)
    for batch in raw.iter(batch_size=2048):
        yield from batch[column]


def split_key(identity: str, split: str, ds: Any, column: str) -> list | None:
    """What a split's decoded pixels depend on; None for an in-memory dataset (nothing stable to key on)."""
    files = files_signature(ds)
    return None if files is None else [identity, split, column, len(ds), files]


def probe_spec(ds: Any, column: str, key: list | None = None, name: str = "") -> ImageSpec:
    """Channels and the most common size: cached under ``key``, found from a sample, exactly only when sizes differ."""
    return ImageSpec(**cached_json("spec", key, lambda: vars(_probe(ds, column, name))))


def _preparing(name: str) -> str:
    return f"preparing {name}" if name else "preparing the dataset"


def _probe(ds: Any, column: str, name: str = "") -> ImageSpec:
    raw = raw_images(ds, column)
    rows = np.unique(np.linspace(0, len(raw) - 1, min(_PROBE, len(raw))).astype(np.int64))
    sizes, modes = Counter(), Counter()
    for value in _iter_values(raw, column, rows):
        img = _open(value)
        sizes[img.size] += 1
        modes[img.mode] += 1
    if len(sizes) > 1:
        sizes = Counter()
        with Progress(f"{_preparing(name)}: reading the sizes of {len(raw):,} images", total=len(raw)) as p:
            for value in _iter_values(raw, column):
                if value.get("bytes"):
                    with _open(value, header_only=True) as img:  # lazy: reads the header, not the pixels
                        sizes[img.size] += 1
                else:
                    sizes[_open(value).size] += 1
                p.advance()
    (width, height), _ = sizes.most_common(1)[0]
    chans = 1 if set(modes) <= GREY_MODES else 3
    return ImageSpec(chans, height, width)


def decode_split(ds: Any, column: str, spec: ImageSpec, progress: Progress | None = None) -> np.ndarray:
    raw = raw_images(ds, column)
    out = np.empty((len(raw), spec.chans, spec.height, spec.width), np.uint8)
    for i, value in enumerate(_iter_values(raw, column)):
        out[i] = decode_one(value, spec)
        if progress is not None:
            progress.advance()
    return out


def load_decoded(key: list | None, ds: Any, column: str, spec: ImageSpec, name: str = "",
                 split: str = "") -> np.ndarray:
    """The split as uint8 [N, C, H, W], from the cache (``key``: :func:`split_key`) or decoded and cached.

    ``name`` and ``split`` only say what is being prepared, when decoding takes long enough to report.
    """
    path = cache_root() / "decoded" / f"{cache_key('decoded-v1', key, vars(spec))}.npy" if key else None
    expected = (len(ds), spec.chans, spec.height, spec.width)
    if path is not None and path.is_file():
        try:
            arr = np.load(path)
            if arr.shape == expected and arr.dtype == np.uint8:
                return arr
        except (OSError, ValueError):
            pass  # damaged: decode again and replace it
    split = split or (key[1] if key else "")
    what = f"{_preparing(name)}: decoding {len(ds):,} images" + (f" of split '{split}'" if split else "")
    with Progress(what + (" (cached for later runs)" if path is not None else ""), total=len(ds)) as p:
        arr = decode_split(ds, column, spec, p)
        if path is not None:
            p.stage = "writing the cache"
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, arr)
    return arr


def pixel_stats(images: np.ndarray, exclude: np.ndarray | None = None) -> dict:
    """Per-channel mean and std in [0, 1] units of uint8 [N, C, H, W], leaving out rows ``exclude``.

    Exact and cheap: a 256-bin histogram per channel, minus the excluded rows' histogram.
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    mean, std = [], []
    for c in range(images.shape[1]):
        hist = np.bincount(images[:, c].reshape(-1), minlength=256).astype(np.float64)
        if exclude is not None and len(exclude):
            hist -= np.bincount(images[exclude, c].reshape(-1), minlength=256)
        m = float((hist * values).sum() / hist.sum())
        var = float((hist * (values - m) ** 2).sum() / hist.sum())
        mean.append(m)
        std.append(max(var, 0.0) ** 0.5)
    return {"mean": mean, "std": std}


def cached_json(kind: str, key: list | None, compute) -> dict:
    """``compute()`` (a JSON-able dict) once per key under ``$VITBENCH_CACHE/<kind>``; no key, no caching."""
    path = cache_root() / kind / f"{cache_key(kind + '-v1', key)}.json" if key else None
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            pass  # damaged: compute again and replace it
    value = compute()
    if path is not None:
        write_json(path, value)
    return value
