"""Stratified, nested, deterministic training subsets (pure numpy).

The validation set is carved once with a fixed seed, so every fraction and every
seed is scored on the same images. Each class's remaining images are put in a
``seed``-dependent order and a subset takes a prefix of every class, hence for
one seed 5% is inside 20% is inside 100%.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from vitbench.errors import VitbenchError

VAL_SEED = 0x5EED_0FF  # never changes: validation must not depend on the run's seed


class Split(NamedTuple):
    train: np.ndarray  # sorted indices into the source train split
    val: np.ndarray


def _ceil_sig(x: float, digits: int = 2) -> float:
    scale = 10 ** (digits - 1 - math.floor(math.log10(x)))
    return math.ceil(x * scale) / scale


def _round_half_up(x: np.ndarray) -> np.ndarray:
    # np.round rounds halves to even; a subset size should not depend on parity.
    return np.floor(x + 0.5).astype(np.int64)


def split_indices(
    labels: np.ndarray,
    *,
    val_fraction: float,
    fraction: float | None = None,
    samples_per_class: int | None = None,
    seed: int = 0,
    class_names: Sequence[str] | None = None,
) -> Split:
    """Validation and training indices; ``class_names`` only makes error messages readable.

    The parameters are checked already (:func:`vitbench.config.check`: the DataModule checks its
    own); what is checked here is what only the labels tell.
    """
    labels = np.asarray(labels)
    fraction = 1.0 if fraction is None else fraction
    if labels.size == 0:
        raise VitbenchError("the train split is empty: pass --train-split with a split that has images")
    if (labels < 0).any():
        raise VitbenchError(
            f"{int((labels < 0).sum())} train images have no label (-1): drop them or pass another --train-split"
        )

    # Group by class in one sort (stable: members stay in index order), not one scan per class.
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    train_parts, val_parts, rest = [], [], {}
    for c, members in zip(classes, np.split(order, starts[1:])):
        members = members[np.random.default_rng([VAL_SEED, int(c)]).permutation(len(members))]
        n_val = int(_round_half_up(np.float64(val_fraction * len(members))))
        val_parts.append(members[:n_val])
        rest[int(c)] = np.sort(members[n_val:])

    sizes = {c: len(m) for c, m in rest.items()}
    smallest = min(sizes, key=sizes.get)
    name = f"'{class_names[smallest]}'" if class_names is not None and smallest < len(class_names) else str(smallest)
    if samples_per_class is not None:
        if samples_per_class > sizes[smallest]:
            raise VitbenchError(
                f"samples_per_class={samples_per_class} exceeds the smallest class (class {name}: "
                f"{sizes[smallest]} images outside validation): use --samples-per-class {sizes[smallest]} or less"
            )
        take = {c: samples_per_class for c in sizes}
    else:
        take = {c: int(_round_half_up(np.float64(fraction * n))) for c, n in sizes.items()}
        if min(take.values()) < 1:
            if sizes[smallest] == 0:
                raise VitbenchError(
                    f"class {name} has no training images left after validation: lower --val-fraction"
                )
            need = _ceil_sig(0.5 / sizes[smallest])
            raise VitbenchError(
                f"fraction {fraction} leaves class {name} ({sizes[smallest]} images) with no training image: "
                f"use --fraction {need:g} or more, or --samples-per-class"
            )
    for c, members in rest.items():
        order = np.random.default_rng([int(seed), c]).permutation(len(members))
        train_parts.append(members[order[: take[c]]])
    return Split(np.sort(np.concatenate(train_parts)).astype(np.int64),
                 np.sort(np.concatenate(val_parts)).astype(np.int64))
