"""Open a dataset by name, path or Hub id and find its image and label columns.

Local things are always tried before the Hub, because ``load_dataset`` on an
unreachable Hub retries for ~25 s before it fails.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, Callable

from vitbench.data.cache import cache_root
from vitbench.data.fashion_mnist import HUB_ID as FASHION_MNIST_HUB_ID
from vitbench.data.fashion_mnist import REFERENCES as FASHION_MNIST_REFERENCES
from vitbench.data.fashion_mnist import load_fashion_mnist
from vitbench.data.hub import HubUnavailable, load_from_hub
from vitbench.errors import VitbenchError

BUILTINS: dict[str, Callable[[], Any]] = {"fashion_mnist": load_fashion_mnist}
# The Hub id of a built-in resolves to the built-in: same schema, and it works offline.
ALIASES = {"fashion-mnist": "fashion_mnist", FASHION_MNIST_HUB_ID: "fashion_mnist"}
@dataclass(frozen=True)
class Reference:
    """A published result on a dataset, by another model: shown beside a report's numbers, never mixed in."""

    model: str
    test_acc: float
    n_train: int  # the training images it used
    source: str


# Kept with the dataset (not in the report) so that no report code branches on a dataset's name.
REFERENCES: dict[str, tuple[Reference, ...]] = {
    "fashion_mnist": tuple(Reference(**r) for r in FASHION_MNIST_REFERENCES),
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
WAYS = (
    f"use a built-in ({', '.join(BUILTINS)}), a save_to_disk folder, an imagefolder "
    "(class subfolders, optionally under train/ and test/), a parquet file or folder, or a Hugging Face Hub id"
)
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


@dataclass
class DatasetSource:
    """The train and test splits of one dataset, with the columns vitbench reads."""

    train: Any  # datasets.Dataset
    test: Any  # datasets.Dataset
    image_column: str
    label_column: str
    class_names: list[str]
    identity: str  # stable across processes: part of every cache key derived from this source
    name: str = field(default="")
    references: tuple[Reference, ...] = ()  # published results of other models (see REFERENCES)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def load_source(
    dataset: str,
    *,
    train_split: str = "train",
    test_split: str = "test",
    image_column: str | None = None,
    label_column: str | None = None,
) -> DatasetSource:
    splits, identity = _open(dataset)
    train = _split(splits, train_split, dataset, "--train-split")
    test = _split(splits, test_split, dataset, "--test-split")
    image = _image_column(train, image_column, dataset)
    label = _label_column(train, label_column, dataset)
    for col in (image, label):
        if col not in test.column_names:
            raise VitbenchError(
                f"test split '{test_split}' of '{dataset}' has no column '{col}' "
                f"(columns: {', '.join(test.column_names)}): "
                "pass --test-split with a split that has the train split's columns"
            )
    names = list(train.features[label].names)
    return DatasetSource(train, test, image, label, names, identity, name=dataset, references=references(dataset))


def references(dataset: str) -> tuple[Reference, ...]:
    """The published references of a built-in dataset (by name or alias); () for any other dataset."""
    return REFERENCES.get(ALIASES.get(str(dataset), str(dataset)), ())


def _open(dataset: str):
    """The DatasetDict behind ``dataset`` and its identity."""
    name = ALIASES.get(dataset, dataset)
    if name in BUILTINS:
        return BUILTINS[name](), f"builtin:{name}"
    path = Path(dataset).expanduser()
    if path.exists():
        path = path.resolve()
        if path.is_dir():
            return _open_folder(path)
        if path.suffix == ".parquet":
            return _load_local("parquet", path, data_files=str(path)), f"parquet:{path}"
        raise VitbenchError(f"{path} is a file but not a .parquet file: {WAYS}")
    close = close_builtin(dataset)
    fix = f"did you mean {close}?" if close else WAYS
    if not _HUB_ID.fullmatch(dataset):
        raise VitbenchError(f"unknown dataset '{dataset}': no such file or folder; {fix}")
    # A name close to a built-in may still be a Hub dataset of that name: the Hub has the last word.
    try:
        return load_from_hub(dataset), f"hub:{dataset}"
    except HubUnavailable as e:
        raise VitbenchError(
            f"unknown dataset '{dataset}': not a built-in, not a file or folder, and {e}; {fix}"
        ) from None


def close_builtin(name: str) -> str | None:
    """The built-in dataset ``name`` is most likely a misspelling of (by its name or an alias), or None."""
    names = {**{b: b for b in BUILTINS}, **ALIASES}
    close = difflib.get_close_matches(str(name).lower(), list(names), n=1, cutoff=0.8)
    return names[close[0]] if close else None


def _open_folder(path: Path):
    from datasets import load_from_disk

    if (path / "dataset_dict.json").is_file():
        try:
            return load_from_disk(str(path)), f"disk:{path}"
        except Exception as e:  # noqa: BLE001 - json, Arrow and OS errors alike: the folder is damaged
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise VitbenchError(
                f"{path} cannot be read as a save_to_disk dataset ({first}): "
                "save it again with DatasetDict.save_to_disk"
            ) from None
    if (path / "state.json").is_file():
        raise VitbenchError(
            f"{path} holds one saved Dataset, not a DatasetDict with train and test splits: "
            "save DatasetDict({'train': ..., 'test': ...}) with save_to_disk instead"
        )
    files = (p for p in path.rglob("*") if p.is_file())
    sample = list(islice(files, 2000))  # enough to tell the layout
    suffixes = {p.suffix.lower() for p in sample}
    # datasets' progress bars: worth their lines on a big folder only (an error is then not one line).
    quiet = len(sample) < 2000
    parquet, images = ".parquet" in suffixes, bool(suffixes & IMAGE_SUFFIXES)
    if parquet and images:
        raise VitbenchError(
            f"folder {path} mixes parquet files and image files: point to the folder holding only one kind"
        )
    if parquet:
        return _load_local("parquet", path, quiet=quiet, data_dir=str(path)), f"parquet:{path}"
    if images:
        return _load_local("imagefolder", path, quiet=quiet, data_dir=str(path)), f"imagefolder:{path}"
    raise VitbenchError(
        f"folder {path} is not a dataset: it has no dataset_dict.json (save_to_disk), no parquet files "
        "and no class subfolders of images (imagefolder)"
    )


def _load_local(builder: str, path: Path, quiet: bool = False, **kwargs):
    from datasets import DatasetDict, load_dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    cache = str(cache_root() / "hf")  # checked before the builder writes anything there
    quiet_before = are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        # Kept under VITBENCH_CACHE: these Arrow copies are derived data, like the rest of the cache.
        ds = load_dataset(builder, cache_dir=cache, **kwargs)
    except Exception as e:  # noqa: BLE001 - the builders raise many types; the user needs the gist only
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise VitbenchError(f"{path} could not be read as {builder}: {first[:200]}") from None
    finally:
        if quiet and not quiet_before:
            enable_progress_bars()
    if not isinstance(ds, DatasetDict):
        raise VitbenchError(f"{path} could not be read as {builder} with splits: {WAYS}")
    return ds


def _split(splits, split: str, dataset: str, option: str):
    if split not in splits:
        raise VitbenchError(
            f"dataset '{dataset}' has no split '{split}' (available: {', '.join(splits)}): "
            f"pass {option} with one of them"
        )
    return splits[split]


def _image_column(ds, column: str | None, dataset: str) -> str:
    from datasets import Image

    images = [c for c, f in ds.features.items() if isinstance(f, Image)]
    cols = ", ".join(ds.column_names)
    if column is not None:
        if column not in ds.column_names:
            raise VitbenchError(
                f"dataset '{dataset}' has no column '{column}' (columns: {cols}): "
                "pass --image-column with one of them"
            )
        if column not in images:
            raise VitbenchError(
                f"image column '{column}' of '{dataset}' is {ds.features[column]!r}, not an Image: "
                f"cast it with dataset.cast_column('{column}', Image()) "
                f"or pass --image-column with another column ({cols})"
            )
        return column
    if len(images) == 1:
        return images[0]
    if not images:
        raise VitbenchError(
            f"dataset '{dataset}' has no Image column (columns: {cols}): pass --image-column, "
            "casting it first with dataset.cast_column(col, Image()) if needed"
        )
    raise VitbenchError(
        f"dataset '{dataset}' has several Image columns ({', '.join(images)}): pass --image-column with one of them"
    )


def _label_column(ds, column: str | None, dataset: str) -> str:
    from datasets import ClassLabel

    labels = [c for c, f in ds.features.items() if isinstance(f, ClassLabel)]
    cols = ", ".join(ds.column_names)
    if column is None:
        if "label" in labels or len(labels) == 1:
            return "label" if "label" in labels else labels[0]
        if labels:
            raise VitbenchError(
                f"dataset '{dataset}' has several ClassLabel columns ({', '.join(labels)}): "
                "pass --label-column with one of them"
            )
        if "label" not in ds.column_names:
            raise VitbenchError(
                f"dataset '{dataset}' has no ClassLabel column (columns: {cols}): "
                "pass --label-column, casting it first with dataset.cast_column(col, ClassLabel(names=[...]))"
            )
        column = "label"
    if column not in ds.column_names:
        raise VitbenchError(
            f"dataset '{dataset}' has no column '{column}' (columns: {cols}): pass --label-column with one of them"
        )
    if column not in labels:
        raise VitbenchError(
            f"label column '{column}' of '{dataset}' is {ds.features[column]!r}, not a ClassLabel: "
            f"cast it with dataset.cast_column('{column}', ClassLabel(names=[...])) "
            "or pass --label-column with another column"
        )
    return column
