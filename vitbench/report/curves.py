"""Learning curves with uncertainty: a saturating power law per label, bootstrapped over seeds.

The model is the three-parameter power law of learning-curve studies (Brumen et al. 2021)::

    err(n) = a * n**(-b) + c        err = 1 - test accuracy, n = training images

with a > 0, 0.01 <= b <= 2 and 0 <= c <= 1; ``c`` is the error the curve levels off at, so ``1 - c`` is
the accuracy more data of the same kind would approach (a parameter of the model: an extrapolation to
unlimited data, the one number the report gives beyond 4x the largest size). It is fitted by least squares to every
finished run of a label (every seed, every size), so a size with more seeds weighs more.

Uncertainty of everything read off a fit is a bootstrap over seeds, because the seed is the unit
that repeats: a seed fixes the subset drawn at every size, the initial weights and the data order.
Each of ``N_BOOT`` replicates draws the label's seeds with replacement, and every drawn seed brings
its runs at all sizes; the replicate is refitted and everything derived from the fit (accuracy at a
size, images needed for a target, crossovers) is recomputed. Intervals are the 5th and 95th
percentiles (``LEVEL`` = 90 %). The generator is seeded from ``BOOT_SEED`` and the label's seed
list, so the report is reproducible, and two labels with the same seeds draw the same seeds in every
replicate: their crossovers are then a paired bootstrap, and otherwise an independent one. With few
seeds such intervals are too narrow (3 seeds give 10 distinct resamples). Measured means, distillation
gains and each transformer's measured difference from the baseline, which need no fit, get Student-t
intervals (:mod:`vitbench.report.stats`).

Speed: every fit, the point fit and the bootstrap refits, solves the least-squares problem by
variable projection (for a fixed ``b`` the model is linear in ``a`` and ``c``, which have a closed
form under their bounds), on a grid of ``b`` refined around its best, for all replicates at once as
arrays. 1,000 scipy ``curve_fit`` calls take ~2 s per label on a 2-core CPU; this takes tens of
milliseconds. The point fit is refined further, to ~1e-10 in ``b``: it reaches the optimum
``curve_fit`` finds, or a better one (the grid is global in ``b``, ``curve_fit`` local), without
importing scipy (~0.4 s of a report on a 2-core CPU), which keeps ``vitbench report`` fast on a
1,000-task sweep.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from vitbench.report import stats
from vitbench.report.collect import Sweep

N_BOOT = 1000
BOOT_SEED = 20_211_028  # any fixed number: the same report from the same runs
LEVEL = 0.90  # two-sided percentile intervals: 5th to 95th percentile
MAX_EXTRAPOLATION = 4.0  # fitted values are reported up to 4x the largest measured size, never beyond
MIN_SIZES = 3  # three parameters need at least three distinct sizes
DEFAULT_TARGETS = (0.85, 0.90)
B_LOW, B_HIGH = 0.01, 2.0  # the exponent's range; b -> 0 makes a and c indistinguishable
_B_GRID = np.linspace(B_LOW, B_HIGH, 100)
_B_FINE = np.linspace(-1.0, 1.0, 21)  # around the best b so far, +- one step of the grid before
BOOT_ROUNDS, POINT_ROUNDS = 2, 8  # refinements of b: each divides the step by 10 (~1e-4, ~1e-10)
_FLAT = 1e-4  # a fitted curve that moves by less than this accuracy across the measured sizes is flat
# c this close to its bound 0: the error still falls like a pure power law at the largest size, and 1 - c
# (then 1.0) says only that the measured sizes do not show where the curve levels off.
_C_AT_BOUND = 1e-6
GRID_POINTS = 120  # the fitted curve and its band are drawn at this many sizes


# ----------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class Params:
    """err(n) = A * (n / n0)**(-b) + c, i.e. a = A * n0**b. ``n0`` is the geometric mean of the sizes:
    there ``A`` is in error units, which keeps the fit well conditioned."""

    A: float
    b: float
    c: float
    n0: float

    @property
    def a(self) -> float:
        return self.A * self.n0 ** self.b

    def err(self, n) -> np.ndarray:
        return self.A * (np.asarray(n, dtype=float) / self.n0) ** (-self.b) + self.c

    def acc(self, n) -> np.ndarray:
        return 1.0 - self.err(n)


def _n_for(A, b, c, n0, target: float) -> np.ndarray:
    """The n where the fitted accuracy reaches ``target``: inf where the asymptote 1 - c is at or below
    it, 0 where a flat curve (A = 0) is above it everywhere. Works on arrays of replicates (NaN stays NaN)."""
    A, b, c = (np.asarray(v, dtype=float) for v in (A, b, c))
    gap = (1.0 - target) - c  # how far the target error is above the floor
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        n = n0 * (A / gap) ** (1.0 / b)
    n = np.where(gap <= 0, np.inf, n)
    n = np.where((A <= 0) & (gap > 0), 0.0, n)
    return np.where(np.isnan(A) | np.isnan(b) | np.isnan(c), np.nan, n)


def _ls_given_b(b: np.ndarray, x: np.ndarray, E: np.ndarray, W: np.ndarray):
    """Least squares of E ~ A * exp(-b x) + c with A >= 0, 0 <= c <= 1, for each b.

    ``b`` is (G,): the same G exponents for every replicate, or (R, G): G for each of R replicates;
    ``E`` and ``W`` (R, S) are the replicates' mean errors and weights (runs) at the S sizes, at centred
    log sizes ``x``. Returns A, c, sse (R, G). The problem is a convex quadratic in (A, c): its minimum
    is the unconstrained one if feasible, or else the best of the minima along the bounds, so all four
    are computed and the best feasible one kept.
    """
    u = np.exp(-b[..., None] * x)  # (G, S) or (R, G, S)
    we = W * E
    sw, se, see = W.sum(-1)[:, None], we.sum(-1)[:, None], (we * E).sum(-1)[:, None]
    if u.ndim == 2:  # shared exponents: the sums over sizes are matrix products, no (R, G, S) array
        # einsum, not @: a product this small costs OpenBLAS more in waking and spinning its threads
        # (~100x the arithmetic on a busy 2-core machine) than it saves.
        su, suu, sue = (np.einsum("rs,gs->rg", W, u), np.einsum("rs,gs->rg", W, u * u),
                        np.einsum("rs,gs->rg", we, u))
    else:
        su, suu, sue = (np.einsum("rgs,rs->rg", u, W), np.einsum("rgs,rgs,rs->rg", u, u, W),
                        np.einsum("rgs,rs->rg", u, we))

    def sse(A, c):
        return see - 2 * A * sue - 2 * c * se + A * A * suu + 2 * A * c * su + c * c * sw

    with np.errstate(divide="ignore", invalid="ignore"):
        det = sw * suu - su * su
        cands = [((sw * sue - su * se) / det, (suu * se - su * sue) / det)]  # unconstrained
        cands.append((np.maximum(sue / suu, 0.0), np.zeros_like(sw)))  # c = 0
        cands.append((np.maximum((sue - su) / suu, 0.0), np.ones_like(sw)))  # c = 1
        cands.append((np.zeros_like(sw), np.clip(se / sw, 0.0, 1.0)))  # A = 0: flat
    best_A, best_c, best = None, None, None
    for A, c in cands:
        ok = np.isfinite(A) & np.isfinite(c) & (A >= 0) & (c >= 0) & (c <= 1)
        s = np.where(ok, sse(np.nan_to_num(A), np.nan_to_num(c)), np.inf)
        if best is None:
            best_A, best_c, best = np.where(ok, A, 0.0), np.where(ok, c, 0.0), s
        else:
            take = s < best
            best_A, best_c, best = np.where(take, A, best_A), np.where(take, c, best_c), np.where(take, s, best)
    return best_A, best_c, best


def fit_profile(x: np.ndarray, E: np.ndarray, W: np.ndarray,
                rounds: int = BOOT_ROUNDS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The least-squares (A, b, c) of each replicate (rows of E, W): a grid of b, refined ``rounds``
    times around each replicate's best (twice: to ~1e-4 in b, far below the spread of b across replicates)."""
    R = E.shape[0]
    A, c, sse = _ls_given_b(_B_GRID, x, E, W)
    j = np.argmin(sse, axis=1)
    best, step = _B_GRID[j], _B_GRID[1] - _B_GRID[0]
    rows = np.arange(R)
    for _ in range(rounds):
        fine = np.clip(best[:, None] + step * _B_FINE[None, :], B_LOW, B_HIGH)
        A, c, sse = _ls_given_b(fine, x, E, W)
        j = np.argmin(sse, axis=1)
        best, step = fine[rows, j], step * (_B_FINE[1] - _B_FINE[0])
    return A[rows, j], best, c[rows, j]


# ----------------------------------------------------------------------------- intervals
@dataclass(frozen=True)
class Interval:
    """A point estimate and its interval (lo, hi None: no interval)."""

    value: float
    lo: Optional[float] = None
    hi: Optional[float] = None

    @property
    def has_ci(self) -> bool:
        return self.lo is not None


def percentile_interval(samples: np.ndarray, level: float = LEVEL) -> tuple[Optional[float], Optional[float]]:
    """The (1 - level)/2 and (1 + level)/2 quantiles of the finite-or-infinite samples (NaN dropped).

    Quantiles are order statistics (no interpolation), so +-inf samples ("never reached") stay
    meaningful bounds instead of turning into NaN."""
    s = np.asarray(samples, dtype=float)
    s = s[~np.isnan(s)]
    if len(s) < 2:
        return None, None
    lo, hi = np.quantile(s, [(1 - level) / 2, (1 + level) / 2], method="inverted_cdf")
    return float(lo), float(hi)


def where(n: float, n_min: float, n_max: float) -> str:
    """Where a fitted size lies: below, interpolated (within the measured sizes), extrapolated (<= 4x the
    largest), beyond, not reached."""
    if math.isinf(n):
        return "not reached"
    if n < n_min:
        return "below"
    if n <= n_max:
        return "interpolated"
    return "extrapolated" if n <= MAX_EXTRAPOLATION * n_max else "beyond"


# ----------------------------------------------------------------------------- one label
@dataclass
class LabelCurve:
    """A label's runs as a seeds x sizes grid, its fit and its bootstrap replicates."""

    label: str
    seeds: list[int]
    ns: np.ndarray  # (S,) ascending training-set sizes
    acc: np.ndarray  # (K, S) test accuracy of seed k at size s; NaN where that run is missing
    params: Optional[Params] = None
    note: Optional[str] = None  # why there is no fit, or what to keep in mind about it
    flat: bool = False
    boot_err: Optional[np.ndarray] = None  # (B, S) mean error over each replicate's drawn seeds
    boot: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None  # (A, b, c), each (B,); NaN: replicate unusable

    @property
    def fitted(self) -> bool:
        return self.params is not None

    @property
    def has_ci(self) -> bool:
        return len(self.seeds) > 1

    @property
    def n_min(self) -> float:
        return float(self.ns[0])

    @property
    def n_max(self) -> float:
        return float(self.ns[-1])

    def mean_acc(self, s: int) -> Interval:
        """Mean test accuracy over seeds at size index ``s``, with the Student-t interval of that mean
        (cut to [0, 1]: two seeds near 1 would otherwise reach above it)."""
        lo, hi = stats.mean_interval(self.acc[:, s], LEVEL)
        if lo is None:
            return Interval(float(np.nanmean(self.acc[:, s])))
        return Interval(float(np.nanmean(self.acc[:, s])), max(lo, 0.0), min(hi, 1.0))

    def fit_acc(self, n) -> tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """Fitted accuracy at ``n`` (array) and its band (None without a bootstrap)."""
        n = np.atleast_1d(np.asarray(n, dtype=float))
        value = self.params.acc(n)
        if self.boot is None:
            return value, None, None
        A, b, c = self.boot
        reps = 1.0 - (A[:, None] * (n[None, :] / self.params.n0) ** (-b[:, None]) + c[:, None])
        ok = ~np.isnan(reps[:, 0])
        if ok.sum() < 2:
            return value, None, None
        lo, hi = np.quantile(reps[ok], [(1 - LEVEL) / 2, (1 + LEVEL) / 2], axis=0, method="inverted_cdf")
        return value, lo, hi

    def fitted_at(self, n: float) -> Interval:
        value, lo, hi = self.fit_acc([n])
        return Interval(float(value[0]), None if lo is None else float(lo[0]), None if hi is None else float(hi[0]))

    @property
    def levels_off(self) -> bool:
        """Whether the fit estimates an asymptote: c above its bound 0 (see ``_C_AT_BOUND``)."""
        return self.fitted and self.params.c > _C_AT_BOUND

    def asymptote(self) -> Interval:
        """1 - c: the accuracy the fitted curve approaches (value None where it does not level off)."""
        if not self.levels_off:
            return Interval(None)
        value = 1.0 - self.params.c
        if self.boot is None:
            return Interval(value)
        lo, hi = percentile_interval(1.0 - self.boot[2])
        return Interval(value, lo, hi)


def _grid(sweep: Sweep, table: dict, label: str) -> Optional[LabelCurve]:
    runs = [r for r in sweep.runs if r.label == label]
    if not runs:
        return None
    seeds = sorted({r.task.seed for r in runs})
    n_of = {key: c.n_train for (lb, key), c in table.items() if lb == label}
    ns = sorted(set(n_of.values()))
    total, count = np.zeros((len(seeds), len(ns))), np.zeros((len(seeds), len(ns)))
    for r in runs:
        k, s = seeds.index(r.task.seed), ns.index(n_of[r.size])
        total[k, s] += float(r.results["test_acc"])
        count[k, s] += 1
    # Two runs of one seed at one size (a fraction and a per-class count giving the same n): their mean.
    acc = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return LabelCurve(label, seeds, np.array(ns, dtype=float), acc)


def _rng(seeds: Sequence[int], seed: int) -> np.random.Generator:
    # Same seed list -> same draws: what makes differences between such labels a paired bootstrap.
    return np.random.default_rng([seed, zlib.crc32(repr(list(seeds)).encode())])


def fit_label(curve: LabelCurve, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> LabelCurve:
    """Fill ``curve``'s fit, its note and its bootstrap replicates (in place; returned for chaining)."""
    K, S = curve.acc.shape
    present = ~np.isnan(curve.acc)
    err0 = np.where(present, 1.0 - curve.acc, 0.0)
    W = None
    if K > 1:
        # Each replicate: K seeds drawn with replacement; at each size, the mean error of the drawn
        # seeds that have a run there, weighted by how many do (= a fit to all their runs).
        idx = _rng(curve.seeds, seed).integers(0, K, size=(n_boot, K))
        W = present[idx].sum(axis=1).astype(float)  # (B, S)
        with np.errstate(invalid="ignore", divide="ignore"):
            curve.boot_err = err0[idx].sum(axis=1) / W  # NaN where no drawn seed has a run at that size
    if S < MIN_SIZES:
        curve.note = f"no fit: {S} measured size{'s' if S != 1 else ''}, the curve needs at least {MIN_SIZES}"
        return curve
    n0 = float(np.exp(np.mean(np.log(curve.ns))))
    x = np.log(curve.ns / n0)
    W0 = present.sum(axis=0).astype(float)[None, :]
    E0 = (err0.sum(axis=0) / W0[0])[None, :]
    # The per-size means weighted by their run counts: the same least squares as a fit to every run.
    A, b, c = (float(v[0]) for v in fit_profile(x, E0, W0, rounds=POINT_ROUNDS))
    if not all(math.isfinite(v) for v in (A, b, c)):
        curve.note = "no fit: the least-squares fit did not converge"
        return curve
    curve.params = Params(A, b, c, n0)
    spread = float(np.ptp(curve.params.acc(curve.ns)))
    if A <= 0 or spread < _FLAT:
        curve.flat = True
        curve.note = "flat: the fitted accuracy does not change with the training-set size"
    elif b >= B_HIGH - 1e-6:
        curve.note = f"b at its bound ({B_HIGH:g}): the curve bends more sharply than the model allows"
    elif c <= _C_AT_BOUND:
        curve.note = "c at its bound (0): no levelling off within the measured sizes, so no asymptote"
    if W is not None:
        usable = (W > 0).sum(axis=1) >= MIN_SIZES  # a replicate whose drawn seeds miss sizes may have too few
        E = np.where(W > 0, curve.boot_err, 0.0)
        bA, bb, bc = fit_profile(x, E, W)
        curve.boot = tuple(np.where(usable, v, np.nan) for v in (bA, bb, bc))
    return curve


# ----------------------------------------------------------------------------- derived numbers
@dataclass(frozen=True)
class Needed:
    """Training images for the fitted curve to reach ``target`` accuracy, with its interval."""

    label: str
    target: float
    n: Optional[float]  # None: no fit
    status: str  # interpolated, extrapolated, beyond, below, not reached, no fit
    lo: Optional[float] = None
    hi: Optional[float] = None
    note: str = ""


def needed(curve: LabelCurve, target: float) -> Needed:
    if not curve.fitted:
        return Needed(curve.label, target, None, "no fit", note=curve.note or "")
    p = curve.params
    n = float(_n_for(p.A, p.b, p.c, p.n0, target))
    lo = hi = None
    if curve.boot is not None:
        lo, hi = percentile_interval(_n_for(*curve.boot, p.n0, target))
    return Needed(curve.label, target, n, where(n, curve.n_min, curve.n_max), lo, hi)


@dataclass(frozen=True)
class Crossing:
    """Where ``label``'s fitted curve first gets ahead of ``baseline``'s (the CNN), with its interval.

    ``n`` is the smallest size, between the smallest size both measured and 4x the largest both
    measured, from which the label's fitted accuracy is above the baseline's: ``n_lo`` itself when it
    is ahead already there, inf when it is behind all the way. ``behind_from``: where a label ahead at
    the smallest size falls behind again (None if it does not within the range)."""

    label: str
    baseline: str
    status: str  # ahead, interpolated, extrapolated, behind, no fit, no common sizes
    n: Optional[float] = None
    lo: Optional[float] = None
    hi: Optional[float] = None
    n_lo: Optional[float] = None
    n_hi: Optional[float] = None
    paired: bool = False
    behind_from: Optional[float] = None
    note: str = ""


def _first_ahead(grid: np.ndarray, diff: np.ndarray) -> np.ndarray:
    """Per row of ``diff`` (label minus baseline on ``grid``): the first n where it turns positive,
    interpolated in log n; grid[0] if positive from the start, inf if never, NaN for a NaN row."""
    ahead = diff > 0
    first = np.argmax(ahead, axis=1)
    any_ahead = ahead.any(axis=1)
    rows = np.arange(diff.shape[0])
    j = np.maximum(first, 1)
    d0, d1 = diff[rows, j - 1], diff[rows, j]
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.clip(-d0 / (d1 - d0), 0.0, 1.0)
    lg = np.log(grid)
    n = np.exp(lg[j - 1] + t * (lg[j] - lg[j - 1]))
    n = np.where(first == 0, grid[0], n)
    n = np.where(any_ahead, n, np.inf)
    return np.where(np.isnan(diff).any(axis=1), np.nan, n)


def crossing(curve: LabelCurve, base: LabelCurve) -> Crossing:
    if not curve.fitted or not base.fitted:
        why = curve.note if not curve.fitted else f"baseline `{base.label}`: {base.note}"
        return Crossing(curve.label, base.label, "no fit", note=why or "")
    n_lo, n_hi = max(curve.n_min, base.n_min), min(curve.n_max, base.n_max)
    if n_lo > n_hi:
        return Crossing(curve.label, base.label, "no common sizes")
    grid = np.geomspace(n_lo, MAX_EXTRAPOLATION * n_hi, 400)
    diff = curve.params.acc(grid) - base.params.acc(grid)
    n = float(_first_ahead(grid, diff[None, :])[0])
    behind_from = None
    if n == n_lo:
        status = "ahead"
        behind = np.nonzero(diff <= 0)[0]
        if len(behind):
            behind_from = float(grid[behind[0]])
    elif math.isinf(n):
        status = "behind"
    else:
        status = "interpolated" if n <= n_hi else "extrapolated"
    lo = hi = None
    paired = curve.seeds == base.seeds
    if curve.boot is not None and base.boot is not None:
        reps = []
        for cv in (curve, base):
            A, b, c = cv.boot
            reps.append(1.0 - (A[:, None] * (grid[None, :] / cv.params.n0) ** (-b[:, None]) + c[:, None]))
        lo, hi = percentile_interval(_first_ahead(grid, reps[0] - reps[1]))
    return Crossing(curve.label, base.label, status, n, lo, hi, n_lo, n_hi, paired, behind_from)


@dataclass(frozen=True)
class DiffRow:
    n_train: float
    diff: Interval  # the label's mean accuracy minus the other's, points
    seeds: tuple[int, int]  # runs behind each side
    paired: bool  # the interval is over per-seed differences (else Welch's, of two independent samples)


@dataclass
class Difference:
    """One label minus another at each size both measured: a distilled label minus its undistilled twin
    (the distillation gain), or a transformer minus the CNN baseline."""

    label: str
    baseline: Optional[str]
    paired: bool
    rows: list[DiffRow] = field(default_factory=list)


def difference(curve: LabelCurve, base: LabelCurve) -> Difference:
    """``curve`` minus ``base`` mean accuracy at each size both measured, in points, with Student-t intervals:
    a distilled label minus its undistilled twin, or a transformer minus the CNN baseline."""
    out = Difference(curve.label, base.label, curve.seeds == base.seeds)
    for s, n in enumerate(curve.ns):
        if n not in base.ns:
            continue
        t = int(np.nonzero(base.ns == n)[0][0])
        kd, kb = int(np.sum(~np.isnan(curve.acc[:, s]))), int(np.sum(~np.isnan(base.acc[:, t])))
        if kd == 0 or kb == 0:
            continue
        d, b = curve.acc[:, s] * 100, base.acc[:, t] * 100
        value = float(np.nanmean(d)) - float(np.nanmean(b))
        # Paired over seeds when every seed has a run on both sides; otherwise the two are independent samples.
        paired = out.paired and np.array_equal(np.isnan(d), np.isnan(b))
        out.rows.append(DiffRow(float(n), Interval(value, *stats.difference_interval(d, b, LEVEL, paired)),
                                (kd, kb), paired))
    return out


# ----------------------------------------------------------------------------- a whole sweep
@dataclass
class Analysis:
    """Everything efficiency.md, the plot and the W&B run show about the curves."""

    curves: dict[str, LabelCurve]
    targets: tuple[float, ...]
    baseline: Optional[str]
    needed: dict[tuple[str, float], Needed]
    crossings: list[Crossing]
    gains: list[Difference]  # one per distilled label that has an undistilled twin
    versus_baseline: dict[str, Difference]  # each crossing's label minus the baseline, measured
    untwinned: list[str]  # distilled labels without one
    n_boot: int = N_BOOT
    level: float = LEVEL


def analyse(sweep: Sweep, table: dict, targets: Sequence[float] = DEFAULT_TARGETS, n_boot: int = N_BOOT,
            seed: int = BOOT_SEED) -> Analysis:
    curves = {}
    for lb in sweep.labels:
        cv = _grid(sweep, table, lb)
        if cv is not None:
            curves[lb] = fit_label(cv, n_boot, seed)
    targets = tuple(targets)
    need = {(lb, t): needed(cv, t) for lb, cv in curves.items() for t in targets}
    base = stats.baseline_label(sweep)
    crossings, versus = [], {}
    if base in curves:
        for lb, cv in curves.items():
            if lb != base and not sweep.baseline.get(lb):
                crossings.append(crossing(cv, curves[base]))
                versus[lb] = difference(cv, curves[base])
    gains, untwinned = [], []
    for label, twin in stats.distillation_twins(sweep):
        if label not in curves:
            continue
        if twin is None or twin not in curves:
            untwinned.append(label)
            continue
        gains.append(difference(curves[label], curves[twin]))
    return Analysis(curves, targets, base, need, crossings, gains, versus, untwinned, n_boot)


def parse_targets(text: str) -> tuple[float, ...]:
    """``"0.85,0.9"`` -> (0.85, 0.9); raises ValueError saying which value is wrong."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"'{part}' is not a number") from None
        if not (0.0 < value < 1.0) or not math.isfinite(value):
            raise ValueError(f"{part} is not an accuracy strictly between 0 and 1 (write 0.9 for 90 %)")
        out.append(value)
    return tuple(sorted(set(out)))
