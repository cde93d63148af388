"""Training-set sizes (:class:`TrainSize`, one spelling everywhere) and the stratified, nested,
deterministic subsets that realise them (pure numpy).

The validation set is carved once with a fixed seed, so every fraction and every
seed is scored on the same images. Each class's remaining images are put in a
``seed``-dependent order and a subset takes a prefix of every class, hence for
one seed 5% is inside 20% is inside 100%.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Optional, Sequence

import numpy as np

from vitbench.errors import VitbenchError

VAL_SEED = 0x5EED_0FF  # never changes: validation must not depend on the run's seed


@dataclass(frozen=True)
class TrainSize:
    """A training-set size as an experiment names it: a fraction of the training split, or images per class.

    One spelling each: :attr:`tag` in run dirs, task names and W&B names (``f0.1``, ``spc25``),
    ``str()`` in tables (``f=0.1``, ``25/class``). Sizes sort fractions first, each kind by value
    (the report sorts by training images first, which only a finished run knows).
    """

    fraction: Optional[float] = None
    samples_per_class: Optional[int] = None

    def __post_init__(self):
        if (self.fraction is None) == (self.samples_per_class is None):
            raise ValueError("a training-set size is a fraction or a number of images per class, not both or neither")

    @classmethod
    def of_run(cls, fraction: Any, samples_per_class: Any) -> TrainSize:
        """The size a run's data config gives: its images per class if set (from the whole split), else its fraction."""
        if samples_per_class is not None:
            return cls(samples_per_class=int(samples_per_class))
        return cls(fraction=float(fraction if fraction is not None else 1.0))

    @classmethod
    def from_dict(cls, d: dict) -> TrainSize:
        """The size of a sweep.json task; ValueError (what is wrong) unless exactly one is set and in range."""
        fraction, spc = d.get("fraction"), d.get("samples_per_class")
        if (fraction is None) == (spc is None):
            raise ValueError("it needs one of 'fraction' and 'samples_per_class'")
        is_fraction = isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and 0 < fraction <= 1
        is_count = isinstance(spc, int) and not isinstance(spc, bool) and spc >= 1
        if not (spc is None and is_fraction or fraction is None and is_count):
            raise ValueError(f"its size is fraction {json.dumps(fraction)}, samples_per_class {json.dumps(spc)}")
        return cls(fraction, spc)

    def to_dict(self) -> dict:
        return {"fraction": self.fraction, "samples_per_class": self.samples_per_class}

    @property
    def tag(self) -> str:
        return f"spc{self.samples_per_class}" if self.samples_per_class is not None else f"f{self.fraction:g}"

    def __str__(self) -> str:
        return f"{self.samples_per_class}/class" if self.samples_per_class is not None else f"f={self.fraction:g}"

    def __lt__(self, other: TrainSize) -> bool:
        def key(s: TrainSize) -> tuple:
            return ("spc", s.samples_per_class) if s.samples_per_class is not None else ("fraction", s.fraction)

        return key(self) < key(other)


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
