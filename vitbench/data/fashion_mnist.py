"""The built-in ``fashion_mnist``: the Hub version's schema, built offline from the IDX files.

Tries, in order: the Arrow cache, the IDX files (converted once into that cache), the Hub.
The result is indistinguishable from ``load_dataset("zalando-datasets/fashion_mnist")``:
``image: Image()`` (PNG bytes), ``label: ClassLabel`` with the Hub's names, train 60000 / test 10000.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np

from vitbench.data.cache import cache_root, progress
from vitbench.data.hub import HubUnavailable, load_from_hub
from vitbench.errors import VitbenchError
from vitbench.utils import Progress

HUB_ID = "zalando-datasets/fashion_mnist"
CLASS_NAMES = ["T - shirt / top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
# Published test accuracies on the full training set, for orientation beside a sweep's numbers: other
# models and training recipes than vitbench's, so not comparable in scale. From the benchmark table of
# the dataset's README (github.com/zalandoresearch/fashion-mnist, "Benchmark"), which lists submitted
# results that Zalando has not re-tested.
REFERENCES = (
    {"model": "ResNet-18 (normalization, flips, translation, rotation)", "test_acc": 0.949, "n_train": 60000,
     "source": "github.com/zalandoresearch/fashion-mnist README, Benchmark table (submitted by Kyriakos Efthymiadis)"},
    {"model": "MLP 256-128-100", "test_acc": 0.883, "n_train": 60000,
     "source": "github.com/zalandoresearch/fashion-mnist README, Benchmark table (submitted by @heitorrapela)"},
)
_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def features():
    from datasets import ClassLabel, Features, Image

    return Features({"image": Image(), "label": ClassLabel(names=CLASS_NAMES)})


def arrow_cache_dir() -> Path:
    return cache_root() / "datasets" / "fashion_mnist"


def load_fashion_mnist():
    """The ``DatasetDict`` (memory-mapped from the Arrow cache whenever possible)."""
    from datasets import load_from_disk

    target = arrow_cache_dir()
    if (target / "dataset_dict.json").is_file():
        try:
            return load_from_disk(str(target))
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, not reported
            progress(f"Fashion-MNIST cache {target} is damaged; rebuilding it")
            shutil.rmtree(target, ignore_errors=True)
    idx_dir = find_idx_dir()
    if idx_dir is not None:
        build_arrow_cache(idx_dir, target)
        return load_from_disk(str(target))
    try:
        return load_from_hub(HUB_ID)
    except HubUnavailable as e:
        raise VitbenchError(
            f"Fashion-MNIST not found: no IDX files in {_idx_dirs_text()} and {e}; "
            "fix: `apt-get install dataset-fashion-mnist`, or set VITBENCH_DATA_DIR to a folder with the IDX files, "
            "or use a machine with internet access to the Hugging Face Hub"
        ) from None


def _idx_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("VITBENCH_DATA_DIR"):
        base = Path(os.environ["VITBENCH_DATA_DIR"]).expanduser()
        dirs += [base, base / "fashion-mnist", base / "fashion_mnist"]
    return dirs + [SYSTEM_DIR]


def _idx_dirs_text() -> str:
    data_dir = os.environ.get("VITBENCH_DATA_DIR")
    return f"VITBENCH_DATA_DIR={data_dir} or {SYSTEM_DIR}" if data_dir else str(SYSTEM_DIR)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def find_idx_dir() -> Path | None:
    data_dir = os.environ.get("VITBENCH_DATA_DIR")
    if data_dir and Path(data_dir).expanduser().exists() and not Path(data_dir).expanduser().is_dir():
        raise VitbenchError(f"VITBENCH_DATA_DIR={data_dir} is a file, not a folder: "
                            "point it at the folder holding the Fashion-MNIST IDX files")
    for folder in _idx_dirs():
        if all(_find(folder, stem) for pair in _IDX.values() for stem in pair):
            return folder
    return None


def read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except EOFError:  # gzip: the stream ends before its end marker
        raise VitbenchError(f"{path} is truncated: replace it with the original Fashion-MNIST file") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        reason = str(e).strip() or type(e).__name__
        raise VitbenchError(
            f"{path} cannot be read ({reason}): replace it with the original Fashion-MNIST file"
        ) from None
    if len(raw) < 4:
        raise VitbenchError(f"{path} is truncated: replace it with the original Fashion-MNIST file")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or ndim not in (1, 3):
        raise VitbenchError(f"{path} is not an unsigned-byte IDX file: replace it with the original Fashion-MNIST file")
    if len(raw) < 4 + 4 * ndim:
        raise VitbenchError(f"{path} is truncated: replace it with the original Fashion-MNIST file")
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise VitbenchError(f"{path} is truncated: replace it with the original Fashion-MNIST file")
    return data.reshape(shape)


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))


def png_encode_gray(images: np.ndarray) -> list[bytes]:
    """Greyscale PNGs for a [N, H, W] uint8 array.

    Written by hand because PIL's per-image save is ~3x slower (about 6 s for the 70000 images);
    every PNG is standard (8-bit grey, filter 0) and decodes back to exactly the IDX pixels.
    """
    n, h, w = images.shape
    rows = np.zeros((n, h, w + 1), np.uint8)  # leading 0 = PNG filter type "None" per row
    rows[:, :, 1:] = images
    head = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
    tail = _chunk(b"IEND", b"")
    return [head + _chunk(b"IDAT", zlib.compress(r.tobytes(), 1)) + tail for r in rows]


def build_arrow_cache(idx_dir: Path, target: Path) -> None:
    """Convert the IDX files into a ``save_to_disk`` DatasetDict at ``target``, atomically."""
    import pyarrow as pa
    from datasets import Dataset, DatasetDict, DatasetInfo
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    # Every file is read and checked before the progress starts: a corrupt file is then the only line.
    arrays = {}
    for split, (img_stem, lbl_stem) in _IDX.items():
        images, labels = read_idx(_find(idx_dir, img_stem)), read_idx(_find(idx_dir, lbl_stem))
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise VitbenchError(f"Fashion-MNIST IDX files in {idx_dir} do not match: replace them with the originals")
        arrays[split] = images, labels
    total = sum(len(images) for images, _ in arrays.values())
    with Progress(f"preparing fashion_mnist: building its Arrow cache from {idx_dir} ({total:,} images, once)",
                  total=total) as p:
        splits = {}
        for split, (images, labels) in arrays.items():
            pngs = []
            for start in range(0, len(images), 5000):
                pngs += png_encode_gray(images[start : start + 5000])
                p.advance(len(images[start : start + 5000]))
            image_col = pa.StructArray.from_arrays(
                [pa.array(pngs, pa.binary()), pa.nulls(len(images), pa.string())], names=["bytes", "path"]
            )
            table = pa.table({"image": image_col, "label": pa.array(labels.astype(np.int64))})
            splits[split] = Dataset(table, info=DatasetInfo(features=features()), split=split)
        p.stage = "writing it"
        tmp = target.parent / f".{target.name}.{os.getpid()}.tmp"
        quiet_before = are_progress_bars_disabled()
        disable_progress_bars()  # its bars would interleave with the progress lines
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            DatasetDict(splits).save_to_disk(str(tmp))
            os.rename(tmp, target)
        except OSError as e:
            # Another process (a second DDP rank) renamed its copy first: theirs is as good as ours.
            if not (target / "dataset_dict.json").is_file():
                # After the progress lines, the last word is one line (the half-written copy is removed below).
                raise VitbenchError(
                    f"cannot write the Fashion-MNIST cache {target} ({e.strerror or type(e).__name__}"
                    f"{f': {e.filename}' if e.filename else ''}): make {target.parent} a writable folder with "
                    "free space, or set VITBENCH_CACHE to one"
                ) from None
        finally:
            if not quiet_before:
                enable_progress_bars()
            shutil.rmtree(tmp, ignore_errors=True)
