"""When a run validates: often enough to pick a good checkpoint, rarely enough to stay cheap.

A run validates at most ``MAX_EVALS`` times, evenly over its optimizer steps, and no more
often than keeps validation to about ``VAL_SHARE`` of its training compute: an evaluation
image costs about a third of a training image (forward only, measured 3-4x faster on CPU
for the micro presets), so a long run validates 8 times. Every run validates at least
``MIN_EVALS`` times (fewer only if it has fewer steps), even where that costs more than
``VAL_SHARE``: the convergence check (``convergence``) compares the best validation of the
last quarter of the steps with the best before it, and five evenly spaced validations are
the fewest that put two in the last quarter (at 80 and 100 %; with four, only the last is
there, and the check has to compare halves). Epoch and step budgets follow the same rule.
"""

from __future__ import annotations

import math
from typing import NamedTuple

MAX_EVALS = 8
MIN_EVALS = 5
VAL_SHARE = 0.1
EVAL_SPEEDUP = 3.0  # training image cost / evaluation image cost


def total_steps(*, max_steps: int | None, max_epochs: int | None, n_train: int, batch_size: int, world_size: int = 1,
                min_steps: int | None = None) -> int:
    """Optimizer steps a budget takes: ``max_steps``, or epochs of ``ceil(shard / batch)`` steps.

    At least ``min_steps``.
    """
    if max_steps:
        return max_steps
    per_rank = math.ceil(n_train / world_size)
    return max(1, min_steps or 1, (max_epochs or 1) * math.ceil(per_rank / batch_size))


def _affordable(steps: int, n_val: int, batch_size: int, world_size: int) -> int:
    train_images = steps * batch_size * world_size
    affordable = math.floor(VAL_SHARE * EVAL_SPEEDUP * train_images / n_val)
    return max(1, min(steps, max(MIN_EVALS, min(MAX_EVALS, affordable))))


def validation_interval(steps: int, *, n_val: int, batch_size: int, world_size: int = 1) -> int:
    """Training steps between validations (Lightning's ``val_check_interval``)."""
    if n_val <= 0:
        return steps
    n = _affordable(steps, n_val, batch_size, world_size)
    # Floor, so that all n fit (the last within one interval of the end), unless rounding down
    # would add more than MAX_EVALS (a few steps, e.g. 10 steps for 8 validations).
    every = max(1, steps // n)
    return every if steps // every <= MAX_EVALS else math.ceil(steps / n)


class Schedule(NamedTuple):
    """A run's optimizer steps: ``cycles`` cycles of ``cycle`` steps (one cycle is the whole budget),
    with a validation every ``every`` steps (without validation data, none: ``every`` is the cycle)."""

    cycle: int
    every: int
    cycles: int = 1
    validates: bool = True

    @property
    def max_steps(self) -> int:
        """Every step the run may take: all its cycles."""
        return self.cycle * self.cycles

    @property
    def evaluations(self) -> int:
        """Validations in one cycle."""
        return self.cycle // self.every if self.validates else 0


def cycle_schedule(*, max_steps: int | None, max_epochs: int | None, min_steps: int | None, cycles: int,
                   n_train: int, n_val: int, batch_size: int, world_size: int = 1) -> Schedule:
    """The schedule of a budget: one cycle is the whole budget, validated every ``validation_interval``
    steps. With more cycles, a cycle is rounded up to a whole number of validation intervals (a few
    steps), so that every cycle ends on the validation that judges it."""
    steps = total_steps(max_steps=max_steps, max_epochs=max_epochs, n_train=n_train, batch_size=batch_size,
                        world_size=world_size, min_steps=min_steps)
    every = validation_interval(steps, n_val=n_val, batch_size=batch_size, world_size=world_size)
    if cycles > 1:
        steps = math.ceil(steps / every) * every
    return Schedule(steps, every, cycles, n_val > 0)
