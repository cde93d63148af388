"""Did a run plateau before its budget ended? A verdict from its validation history.

The rule: split the run's validations at 75 % of its optimizer steps, moving the split
earlier if needed so that the late side holds at least the last two validations. The
run *converged* when the best validation accuracy of that late side beats the best one
before it by less than ``TOLERANCE`` (0.5 points). A run still gaining more than
that at the end was stopped by its budget, not by the data, and its test accuracy
understates what the backbone reaches at that training-set size.

Why this rule: it reads only what every run records (at most 8 validations, see
``schedule``), it is the same for epoch and step budgets, and 0.5 points is about
one standard error of an accuracy near 0.85 on the default 6,000 validation images,
so a plateau's noise rarely fails it. A cosine schedule's final anneal adds a little
in the last quarter even on a plateau; a run that gains less than 0.5 points from it
is still converged for the question vitbench answers. Two late validations, not one: a
single one that happens to dip after a steep rise would pass a run that was still climbing;
every run validates at least five times (``schedule``), which puts two in its last quarter.
A run with fewer than three validations cannot be judged and counts as not converged.

With ``budget.cycles`` (a run that trains another warm-up and cosine from its weights while the
check fails) the late side is the last quarter of the last cycle, and the early side everything
before it, the earlier cycles' best included: the run converged when its last cycle's anneal beat
every earlier validation by less than 0.5 points, i.e. a whole further cycle bought almost nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

from vitbench.rundir import METRICS, RESULTS, validation_rows

LATE_FRACTION = 0.25
TOLERANCE = 0.005  # accuracy, i.e. 0.5 percentage points

LATE_MIN = 2  # validations on the late side, at least
HISTORY_DIGITS = 6  # accuracies in results.json's val_history

RULE = (f"converged: the best validation accuracy in the last {LATE_FRACTION:.0%} of the steps (of the last "
        f"cycle, with budget.cycles; at least the last {LATE_MIN} validations) beats the best before by less than "
        f"{TOLERANCE * 100:.1f} points")


def verdict(validations: Iterable[tuple[int, float]], total_steps: int,
            late_fraction: float = LATE_FRACTION, tolerance: float = TOLERANCE, cycle: int | None = None) -> dict:
    """``{"converged": bool, "best_early", "best_late", "gain", "validations", "rule"}`` for a run.

    ``validations`` are (optimizer step, validation accuracy) pairs; ``total_steps`` the
    run's budget in steps; ``cycle`` the steps of one cycle of a ``budget.cycles`` run (default:
    ``total_steps``): the late side is the last quarter of the last cycle, everything before it
    the early side. ``gain`` is in accuracy (0.004 = 0.4 points); None where a side has no validation.
    """
    # At the precision results.json keeps (val_history): the verdict a run takes while training and the one
    # report and sweep status recompute from its file must agree, a gain of exactly 0.5 points included.
    pairs = sorted((int(s), round(float(a), HISTORY_DIGITS)) for s, a in validations if a is not None)
    split = total_steps - late_fraction * (cycle or total_steps)
    n_late = max(LATE_MIN, sum(s > split for s, _ in pairs))
    early = [a for _, a in pairs[:-n_late]] if len(pairs) > n_late else []
    late = [a for _, a in pairs[-n_late:]] if len(pairs) > n_late else []
    best_early = max(early) if early else None
    best_late = max(late) if late else None
    gain = best_late - best_early if early and late else None
    return {
        "converged": gain is not None and gain < tolerance,
        "best_early": best_early, "best_late": best_late, "gain": gain,
        "validations": len(pairs), "rule": RULE,
    }


def judge(results: dict, metrics_rows: list[dict] | None) -> dict:
    """A finished run's verdict under the current rule, and where it came from (``source``).

    From ``val_history`` in results.json when it holds one (so that a verdict written under an
    older rule is recomputed, never trusted), else the ``converged`` written there, else from
    ``metrics_rows`` (runs older than the verdict: their epoch-end validations), else ``unknown``,
    which counts as not converged: an accuracy that cannot be shown to have plateaued is not trusted.
    """
    steps = results.get("steps")
    steps = steps if isinstance(steps, int) and not isinstance(steps, bool) and steps >= 1 else None
    history = results.get("val_history")
    if steps and isinstance(history, list) and all(_pair(p) for p in history):
        cycles = results.get("cycles")
        cycles = cycles if isinstance(cycles, int) and not isinstance(cycles, bool) and 1 <= cycles <= steps else 1
        return {**verdict(history, steps, cycle=steps // cycles), "source": RESULTS}
    if isinstance(results.get("converged"), bool):
        gain = results.get("gain")
        ok = isinstance(gain, (int, float)) and not isinstance(gain, bool) and math.isfinite(gain)
        return {"converged": results["converged"], "gain": float(gain) if ok else None,
                "rule": str(results.get("rule") or RULE), "validations": None, "source": RESULTS}
    if steps and metrics_rows is not None:
        return {**from_metrics_rows(metrics_rows, steps), "source": METRICS}
    return {"converged": False, "best_early": None, "best_late": None, "gain": None, "validations": None,
            "rule": RULE, "source": "unknown"}


def run_verdict(run_dir: str | Path | None, results: dict) -> dict:
    """A finished run's verdict (:func:`judge`), its metrics.jsonl read when it needs it: one reader for
    ``vitbench report`` and ``vitbench sweep status``, so that the two never disagree."""
    return judge(results, validation_rows(run_dir) if run_dir is not None else None)


def converged(run_dir: str | Path, results: dict) -> bool:
    """Whether a finished run passed the convergence check (see :func:`run_verdict`)."""
    return bool(run_verdict(run_dir, results)["converged"])


def _pair(p) -> bool:
    return (isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                 and math.isfinite(x) for x in p))


def from_metrics_rows(rows: Iterable[dict], total_steps: int) -> dict:
    """The verdict from ``metrics.jsonl`` rows (epoch-end steps): for runs that predate ``val_history``."""
    return verdict(((r.get("step"), r.get("val_acc")) for r in rows if r.get("val_acc") is not None), total_steps)
