"""``vitbench data``: what a run would train on, without training."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import numpy as np

from vitbench.config import add_config_argument
from vitbench.errors import VitbenchError
from vitbench.utils import atomic_path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="show a dataset's splits, the training subset, image shape and mean/std",
        description="Load a dataset, carve validation and the training subset exactly as `vitbench train` would, "
                    "and describe them.",
    )
    flags = {add_config_argument(p, "data.dataset", positional=True): "data.dataset"}  # dest -> config key
    size = p.add_mutually_exclusive_group()
    for key in ("data.fraction", "data.samples_per_class"):
        flags[add_config_argument(size, key)] = key
    for key in ("seed", "data.image_column", "data.label_column", "data.train_split", "data.test_split",
                "data.val_fraction"):
        flags[add_config_argument(p, key)] = key
    p.add_argument("--json", action="store_true", help="print the description as one JSON object")
    p.add_argument("--indices", metavar="DIR",
                   help="write train.npy and val.npy (indices into the source train split) to DIR")
    p.set_defaults(func=run, config_flags=flags)


def run(args: argparse.Namespace) -> int:
    from vitbench.data.datamodule import ImageClassificationDataModule

    if args.indices and Path(args.indices).exists() and not Path(args.indices).is_dir():
        raise VitbenchError(f"--indices {args.indices} is a file: pass a folder (it is created if missing)")
    # The DataModule's parameters are the keys' own names; a flag not given keeps the key's default.
    given = {key.rsplit(".", 1)[-1]: getattr(args, dest) for dest, key in args.config_flags.items()
             if getattr(args, dest) is not None}
    dm = ImageClassificationDataModule(**given)
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
