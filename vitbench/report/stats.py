"""Numbers behind the report: per-cell statistics over seeds, and which label is compared with which.

Accuracies are fractions in [0, 1]; differences are reported in percentage points. Anything between or
beyond the measured sizes comes from the fitted curves (``curves``), never from interpolating means.

Intervals of measured means and differences are Student-t intervals over seeds: with the 3 to 5 seeds
a sweep can afford, a bootstrap over seeds has too few distinct resamples (10 for 3 seeds) and gives
intervals far narrower than the seed spread; the t interval is exact for normal seed-to-seed noise.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from vitbench.data.subsets import TrainSize
from vitbench.report.collect import Sweep


@dataclass
class Cell:
    """Test accuracy of one label at one training-set size, over seeds."""

    label: str
    size: TrainSize
    n_train: int
    accs: np.ndarray
    seeds: list[int]
    expected: int

    @property
    def n(self) -> int:
        return len(self.accs)

    @property
    def mean(self) -> float:
        return float(np.mean(self.accs))

    @property
    def std(self) -> float:
        """Sample standard deviation (ddof=1); NaN for a single seed."""
        return float(np.std(self.accs, ddof=1)) if self.n > 1 else math.nan

    @property
    def min(self) -> float:
        return float(np.min(self.accs))

    @property
    def max(self) -> float:
        return float(np.max(self.accs))


@functools.lru_cache(maxsize=None)  # ~2 ms a call; a report asks for a few distinct (q, df) many times
def t_quantile(q: float, df: float) -> float:
    """Student's t quantile for ``q`` in (0.5, 1) and ``df`` >= 1 (Welch's is fractional, and at least 1),
    without scipy (whose import would cost a report ~0.4 s). With t = sqrt(df)·tan(θ) the CDF is an
    integral of cos(θ)^(df - 1) over [0, θ]: bounded and smooth for df >= 1, so Simpson's rule gets the
    quantile to ~1e-9 (relative) for df up to 10^4, however heavy the tail; θ is found by bisection."""
    if not (0.5 < q < 1 and math.isfinite(df) and df >= 1):
        raise ValueError(f"t_quantile needs 0.5 < q < 1 and a finite df >= 1, got q={q}, df={df}")
    norm = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(math.pi)

    def half_cdf(theta: float) -> float:  # P(0 <= T <= sqrt(df)·tan(theta))
        x = np.linspace(0.0, theta, 4001)
        f = np.cos(x) ** (df - 1)
        return norm * float((x[1] - x[0]) / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()))

    lo, hi = 0.0, math.pi / 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if half_cdf(mid) < q - 0.5 else (lo, mid)
    return math.sqrt(df) * math.tan((lo + hi) / 2)


def mean_interval(values, level: float) -> tuple[Optional[float], Optional[float]]:
    """The two-sided Student-t interval of the mean of ``values`` (NaN dropped); None without 2 values."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if len(v) < 2:
        return None, None
    half = t_quantile((1 + level) / 2, len(v) - 1) * float(np.std(v, ddof=1)) / math.sqrt(len(v))
    return float(v.mean()) - half, float(v.mean()) + half


def difference_interval(a, b, level: float, paired: bool) -> tuple[Optional[float], Optional[float]]:
    """The Student-t interval of mean(a) - mean(b) (NaN dropped): over the per-seed differences when
    ``paired`` (a[k] and b[k] are one seed's), else Welch's (unequal variances)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if paired:
        return mean_interval(a - b, level)
    a, b = a[~np.isnan(a)], b[~np.isnan(b)]
    if len(a) < 2 or len(b) < 2:
        return None, None
    va, vb = np.var(a, ddof=1) / len(a), np.var(b, ddof=1) / len(b)
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return diff, diff
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = t_quantile((1 + level) / 2, df) * math.sqrt(va + vb)
    return diff - half, diff + half


def cells(sweep: Sweep) -> dict[tuple[str, TrainSize], Cell]:
    out: dict[tuple[str, TrainSize], Cell] = {}
    groups: dict[tuple[str, TrainSize], list] = {}
    for r in sweep.runs:
        groups.setdefault((r.label, r.size), []).append(r)
    for (label, size), rs in groups.items():
        rs = sorted(rs, key=lambda r: r.task.seed)
        n = sweep.n_train[size] if sweep.n_train.get(size) is not None else int(rs[0].results.get("n_train") or 0)
        out[(label, size)] = Cell(label, size, n, np.array([float(r.results["test_acc"]) for r in rs]),
                                  [r.task.seed for r in rs], sweep.expected_seeds.get((label, size), len(rs)))
    return out


def distillation_twins(sweep: Sweep) -> list[tuple[str, Optional[str]]]:
    """(distilled label, its twin) for each label with a teacher: the twin is the first label of the same
    backbone and preset without one (None if the sweep has none), the reference its gain is measured from."""
    return [(label, next((lb for lb in sweep.labels if not sweep.distilled.get(lb)
                          and sweep.backbone.get(lb) == sweep.backbone.get(label)
                          and sweep.preset.get(lb) == sweep.preset.get(label)), None))
            for label in sweep.labels if sweep.distilled.get(label)]


def baseline_label(sweep: Sweep) -> Optional[str]:
    """The label the others are compared with: the first undistilled one whose backbone is a baseline
    (``Backbone.baseline``: ResNet, or a plugin that declares itself one)."""
    return next((lb for lb in sweep.labels if sweep.baseline.get(lb) and not sweep.distilled.get(lb)), None)
