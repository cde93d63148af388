"""When a run validates: often enough to pick a good checkpoint, rarely enough to stay cheap.

A run validates at most ``MAX_EVALS`` times, evenly over its optimizer steps, and no more
often than keeps validation to about ``VAL_SHARE`` of its training compute: an evaluation
image costs about a third of a training image (forward only, measured 3-4x faster on CPU
for the micro presets), so a short run on a small subset validates once, at the end, and a
long one 8 times. Epoch and step budgets follow the same rule.
"""

from __future__ import annotations

import math

MAX_EVALS = 8
VAL_SHARE = 0.1
EVAL_SPEEDUP = 3.0  # training image cost / evaluation image cost


def total_steps(*, max_steps: int | None, max_epochs: int | None, n_train: int, batch_size: int, world_size: int = 1) -> int:
    """Optimizer steps a budget takes: ``max_steps``, or epochs of ``ceil(shard / batch)`` steps."""
    if max_steps:
        return max_steps
    per_rank = math.ceil(n_train / world_size)
    return max(1, (max_epochs or 1) * math.ceil(per_rank / batch_size))


def _affordable(steps: int, n_val: int, batch_size: int, world_size: int) -> int:
    train_images = steps * batch_size * world_size
    affordable = math.floor(VAL_SHARE * EVAL_SPEEDUP * train_images / n_val)
    return max(1, min(MAX_EVALS, affordable, steps))


def validation_interval(steps: int, *, n_val: int, batch_size: int, world_size: int = 1) -> int:
    """Training steps between validations (Lightning's ``val_check_interval``)."""
    if n_val <= 0:
        return steps
    return math.ceil(steps / _affordable(steps, n_val, batch_size, world_size))


def evaluations(steps: int, *, n_val: int, batch_size: int, world_size: int = 1) -> int:
    """How many times a run of ``steps`` steps validates on ``n_val`` images (0 without validation data)."""
    if n_val <= 0:
        return 0
    return steps // validation_interval(steps, n_val=n_val, batch_size=batch_size, world_size=world_size)
