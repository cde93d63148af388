"""``vitbench data``: what a run would train on, without training."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

from vitbench.config import DataConfig
from vitbench.errors import VitbenchError
from vitbench.utils import atomic_path


def register(subparsers) -> None:
    d = DataConfig()
    p = subparsers.add_parser(
        "data",
        help="show a dataset's splits, the training subset, image shape and mean/std",
        description="Load a dataset, carve validation and the training subset exactly as `vitbench train` would, and describe them.",
    )
    p.add_argument("dataset", metavar="DATASET", help="a built-in (fashion_mnist), a save_to_disk folder, an imagefolder, a parquet file or folder, or a Hub id")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--fraction", type=float, default=d.fraction, metavar="F", help="share of each class's training images (default: %(default)s)")
    size.add_argument("--samples-per-class", type=int, default=None, metavar="K", help="exactly K training images per class")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="subset seed (validation never depends on it; default: %(default)s)")
    p.add_argument("--image-column", default=d.image_column, metavar="C", help="default: the one Image column")
    p.add_argument("--label-column", default=d.label_column, metavar="C", help="default: the ClassLabel column ('label' first)")
    p.add_argument("--train-split", default=d.train_split, metavar="S", help="default: %(default)s")
    p.add_argument("--test-split", default=d.test_split, metavar="S", help="default: %(default)s")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction, metavar="V", help="default: %(default)s")
    p.add_argument("--json", action="store_true", help="print the description as one JSON object")
    p.add_argument("--indices", metavar="DIR", help="write train.npy and val.npy (indices into the source train split) to DIR")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from vitbench.data.datamodule import ImageClassificationDataModule

    if args.indices and Path(args.indices).exists() and not Path(args.indices).is_dir():
        raise VitbenchError(f"--indices {args.indices} is a file: pass a folder (it is created if missing)")
    dm = ImageClassificationDataModule(
        dataset=args.dataset, image_column=args.image_column, label_column=args.label_column,
        train_split=args.train_split, test_split=args.test_split, val_fraction=args.val_fraction,
        fraction=args.fraction, samples_per_class=args.samples_per_class, seed=args.seed,
    )
    dm.setup()
    info = dm.describe()
    if args.indices:
        for name, arr in (("train", dm.train_indices), ("val", dm.val_indices)):
            with atomic_path(Path(args.indices) / f"{name}.npy") as tmp, open(tmp, "wb") as f:
                np.save(f, arr)
    print(json.dumps(info) if args.json else format_table(info, pool=dm.n_source_train - dm.n_val))
    return 0


def format_table(info: dict, pool: int) -> str:
    out = io.StringIO()
    c, h, w = info["image_shape"]
    if info["samples_per_class"] is not None:
        subset = f"{info['samples_per_class']} per class"
    else:
        subset = f"fraction {info['fraction']:g}"
    rows = [
        ("dataset", info["dataset"]),
        ("image shape", f"{c} x {h} x {w} (C x H x W, uint8)"),
        ("classes", str(info["num_classes"])),
        ("mean", " ".join(f"{v:.4f}" for v in info["mean"])),
        ("std", " ".join(f"{v:.4f}" for v in info["std"])),
        ("subset", f"{subset}, seed {info['seed']}: {info['n_train']} of {pool} non-validation images"),
        ("train", f"{info['n_train']:>8}"),
        ("val", f"{info['n_val']:>8}"),
        ("test", f"{info['n_test']:>8}"),
    ]
    for key, value in rows:
        print(f"{key:<13}{value}", file=out)
    width = max(len(n) for n in info["class_counts"]) + 2
    print(f"\n{'class':<{width}}{'train':>8}", file=out)
    for name, count in info["class_counts"].items():
        print(f"{name:<{width}}{count:>8}", file=out)
    return out.getvalue().rstrip("\n")
