"""Learning curves with uncertainty (``vitbench.report.curves``) and the report sections built on them.

Pure numbers first: a fit to points drawn from a known err(n) = a*n^-b + c must recover it, with
intervals that cover the truth. Then the report on a sweep folder whose runs follow known curves
(results.json files with the fields ``vitbench train`` writes; accuracies drawn from the curves),
so the sections can be checked against the truth. The report on a REAL mini-sweep is in test_report.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from vitbench.report import curves

SIZES = np.array([540, 1080, 2700, 5400, 10800, 27000, 54000.0])
A, B, C = 4.0, 0.4, 0.06  # err(n) = 4 n^-0.4 + 0.06: accuracy levels off at 0.94


def true_n(target: float, a=A, b=B, c=C) -> float:
    return (a / ((1 - target) - c)) ** (1 / b)


def label_curve(seeds=5, sizes=SIZES, noise=0.004, a=A, b=B, c=C, rng_seed=1) -> curves.LabelCurve:
    rng = np.random.default_rng(rng_seed)
    acc = np.array([[1 - (a * n ** -b + c) + rng.normal(0, noise) for n in sizes] for _ in range(seeds)])
    return curves.fit_label(curves.LabelCurve("x", list(range(seeds)), np.asarray(sizes, dtype=float), acc))


# ---------------------------------------------------------------- the fit
def test_fit_recovers_the_size_needed_for_a_target_and_its_interval_covers_the_truth():
    cv = label_curve()
    assert cv.fitted and cv.note is None
    assert cv.params.b == pytest.approx(B, abs=0.03) and cv.params.c == pytest.approx(C, abs=0.01)
    nd = curves.needed(cv, 0.85)
    truth = true_n(0.85)  # ~13,200 images: inside the measured sizes
    assert nd.status == "interpolated"
    assert nd.n == pytest.approx(truth, rel=0.05)
    assert nd.lo < truth < nd.hi and nd.hi / nd.lo < 1.5
    asym = cv.asymptote()
    assert asym.lo < 1 - C < asym.hi


def _scipy_fit(x_runs, err_runs, p0):
    """scipy's bounded least squares from ``p0``: the reference the report's own fits are checked against."""
    import warnings

    from scipy.optimize import OptimizeWarning, curve_fit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OptimizeWarning)
        p, _ = curve_fit(lambda x, a, b, c: a * np.exp(-b * x) + c, x_runs, err_runs, p0=p0,
                         bounds=([0.0, curves.B_LOW, 0.0], [np.inf, curves.B_HIGH, 1.0]), maxfev=2000)
    return p


def test_point_fit_and_bootstrap_refits_match_scipy_curve_fit():
    """Every fit is by variable projection, not curve_fit (speed, and no scipy import): same optimum or a better one."""
    cv = label_curve()
    x = np.log(cv.ns / cv.params.n0)

    def sse(p, s, err, k):
        return float(np.sum((p[0] * np.exp(-p[1] * x[s]) + p[2] - err[k, s]) ** 2))

    err = 1 - cv.acc
    k, s = np.nonzero(~np.isnan(err))
    point = (cv.params.A, cv.params.b, cv.params.c)
    assert sse(point, s, err, k) <= sse(_scipy_fit(x[s], err[k, s], point), s, err, k) * (1 + 1e-9) + 1e-15
    idx = curves._rng(cv.seeds, curves.BOOT_SEED).integers(0, len(cv.seeds), size=(curves.N_BOOT, len(cv.seeds)))
    bA, bb, bc = cv.boot
    for r in range(0, 200, 20):
        err = 1 - cv.acc[idx[r]]
        k, s = np.nonzero(~np.isnan(err))
        scipy_fit = _scipy_fit(x[s], err[k, s], (0.1, 0.5, 0.05))
        assert sse((bA[r], bb[r], bc[r]), s, err, k) <= sse(scipy_fit, s, err, k) * (1 + 1e-3) + 1e-12


def test_sizes_are_marked_measured_extrapolated_beyond_or_not_reached():
    cv = label_curve()
    status = {t: curves.needed(cv, t).status for t in (0.5, 0.85, 0.90, 0.92, 0.95)}
    # true sizes: 249 (below 540), 13,169 (inside), 100,000 (<= 4 x 54,000), 565,685 (> 4x), never (asymptote 0.94)
    assert status == {0.5: "below", 0.85: "interpolated", 0.90: "extrapolated", 0.92: "beyond", 0.95: "not reached"}
    assert [curves.where(n, 100, 1000) for n in (99, 100, 1000, 4000, 4001, np.inf)] == \
        ["below", "interpolated", "interpolated", "extrapolated", "beyond", "not reached"]


def test_one_seed_gives_point_estimates_without_intervals():
    cv = label_curve(seeds=1)
    assert cv.fitted and cv.boot is None
    nd = curves.needed(cv, 0.85)
    assert nd.n == pytest.approx(true_n(0.85), rel=0.1) and nd.lo is None and nd.hi is None
    assert not cv.mean_acc(0).has_ci and not cv.fitted_at(1000).has_ci


def test_measured_means_and_gains_get_student_t_intervals_as_scipy_computes_them():
    """With 3 seeds a bootstrap of the mean has 10 distinct resamples and an interval a third as wide as
    Student's t: the measured means and distillation gains use t (paired when the seeds are the same)."""
    from scipy import stats as st

    from vitbench.report import stats

    for q, df in [(0.95, 1), (0.95, 2), (0.975, 4), (0.95, 2.7), (0.995, 30), (0.9999, 1), (0.51, 1000)]:
        assert stats.t_quantile(q, df) == pytest.approx(st.t.ppf(q, df), rel=1e-8)
    for q, df in [(1.0, 2), (0.5, 2), (0.95, 0.5), (0.95, math.nan)]:
        with pytest.raises(ValueError):
            stats.t_quantile(q, df)
    cv = label_curve(seeds=3)
    for s in range(len(cv.ns)):
        acc = cv.acc[:, s]
        lo, hi = st.t.interval(curves.LEVEL, len(acc) - 1, loc=acc.mean(), scale=st.sem(acc))
        iv = cv.mean_acc(s)
        assert (iv.lo, iv.hi) == (pytest.approx(lo, abs=1e-9), pytest.approx(hi, abs=1e-9))
        assert hi - lo > 2 * np.std(acc, ddof=1)  # wider than the seed spread, as 3 seeds warrant
    near_one = curves.LabelCurve("x", [0, 1], cv.ns[:1], np.array([[0.98], [0.995]]))
    assert near_one.mean_acc(0).hi == 1.0  # an accuracy interval stays within [0, 1]

    kd = curves.LabelCurve("kd", [0, 1, 2], cv.ns, cv.acc + np.array([[0.010], [0.004], [0.013]]))
    paired = curves.difference(kd, cv)
    diffs = (kd.acc[:, 0] - cv.acc[:, 0]) * 100
    lo, hi = st.t.interval(curves.LEVEL, 2, loc=diffs.mean(), scale=st.sem(diffs))
    row = paired.rows[0]
    assert paired.paired and row.paired and row.diff.value == pytest.approx(diffs.mean())
    assert (row.diff.lo, row.diff.hi) == (pytest.approx(lo, abs=1e-7), pytest.approx(hi, abs=1e-7))
    other = curves.LabelCurve("kd", [3, 4, 5], kd.ns, kd.acc)  # other seeds: two independent samples
    row = curves.difference(other, cv).rows[0]
    assert not row.paired
    welch = st.ttest_ind(other.acc[:, 0] * 100, cv.acc[:, 0] * 100, equal_var=False).confidence_interval(curves.LEVEL)
    assert (row.diff.lo, row.diff.hi) == (pytest.approx(welch.low, abs=1e-7), pytest.approx(welch.high, abs=1e-7))


def test_two_sizes_are_not_fitted_and_say_why():
    cv = label_curve(sizes=SIZES[:2])
    assert not cv.fitted and "2 measured sizes" in cv.note and "at least 3" in cv.note
    assert curves.needed(cv, 0.85).status == "no fit"
    assert cv.mean_acc(0).has_ci  # the measured means still get their intervals


def test_a_flat_curve_is_flagged():
    cv = label_curve(a=0.0, c=0.2)  # accuracy 0.8 at every size
    assert cv.flat and "flat" in cv.note
    assert curves.needed(cv, 0.9).status == "not reached"


def test_a_curve_still_falling_like_a_power_law_gives_no_asymptote():
    """Errors that fall faster than any levelling-off curve fits (c would be negative) pin c at 0: the
    report then says it saw no asymptote, instead of "1.000 [1.000, 1.000]"."""
    cv = label_curve(c=-0.01, seeds=3)  # error 0.50 at 540 images, 0.041 at 54,000
    assert cv.fitted and not cv.flat and cv.params.c == 0.0
    assert not cv.levels_off and cv.asymptote().value is None and "no asymptote" in cv.note
    assert curves.needed(cv, 0.9).status != "not reached"  # the curve still reaches targets below 1
    assert label_curve().levels_off  # the default curve levels off at 0.94


def true_crossing(base=(3.0, 0.35, 0.06), other=(30.0, 0.6, 0.07)) -> float:
    """Where err_other(n) falls below err_base(n) (on a fine grid: the truth the fits are checked against)."""
    n = np.geomspace(100, 1e6, 200_001)
    diff = (base[0] * n ** -base[1] + base[2]) - (other[0] * n ** -other[1] + other[2])
    return float(n[np.argmax(diff > 0)])


@pytest.mark.parametrize("largest, status", [(54000, "interpolated"), (6000, "extrapolated")])
def test_crossing_with_the_baseline_is_marked_by_where_it_lies(largest, status):
    sizes = SIZES[SIZES <= largest]
    base = label_curve(sizes=sizes, a=3.0, b=0.35, c=0.06, rng_seed=2)
    vit = label_curve(sizes=sizes, a=30.0, b=0.6, c=0.07, rng_seed=3)
    co = curves.crossing(vit, base)
    truth = true_crossing()  # ~12,700 images: inside 540-54,000; above 6,000 but within 4x it
    assert co.status == status and co.paired  # same seeds: a paired bootstrap
    assert co.n == pytest.approx(truth, rel=0.1) and co.lo <= truth <= co.hi


def test_a_transformer_behind_everywhere_is_said_to_be():
    base = label_curve(a=3.0, b=0.35, c=0.06, rng_seed=2)
    worse = label_curve(a=30.0, b=0.6, c=0.12, rng_seed=3)  # worse at every size, and a higher floor
    co = curves.crossing(worse, base)
    assert co.status == "behind" and math.isinf(co.n) and math.isinf(co.hi)


def test_a_transformer_ahead_everywhere_is_said_to_be():
    base = label_curve(a=3.0, b=0.35, c=0.06, rng_seed=2)
    better = label_curve(a=1.0, b=0.35, c=0.05, rng_seed=3)
    co = curves.crossing(better, base)
    assert co.status == "ahead" and co.n == co.n_lo == SIZES[0] and co.behind_from is None


@pytest.mark.parametrize("text", ["1.5", "0", "1", "-0.1", "nan", "0.9,abc", ""])
def test_parse_targets_rejects_what_is_not_an_accuracy(text):
    with pytest.raises(ValueError):
        curves.parse_targets(text)


def test_parse_targets_sorts_and_dedups():
    assert curves.parse_targets("0.9, 0.85,0.9") == (0.85, 0.9)


# ---------------------------------------------------------------- a sweep folder with known curves
TRUE = {"resnet": (3.0, 0.35, 0.06), "vit": (30.0, 0.6, 0.07), "deit": (20.0, 0.55, 0.07),
        "deit_distilled": (12.0, 0.52, 0.065)}
FAMILY = {"resnet": "cnn", "vit": "vit", "deit": "vit"}
SWEEP_SIZES = (600, 1200, 3000, 6000, 12000)
SEEDS = (0, 1, 2)
RULE = ("converged: the best validation accuracy in the last 25% of the steps beats the best before "
        "by less than 0.5 points")


@pytest.fixture(scope="module")
def known_sweep(tmp_path_factory) -> Path:
    """A plain folder of run dirs; vit has the three kinds of unconverged run:

    * at 600 images, runs from before the verdict existed (no ``converged`` key) whose metrics.jsonl
      still climbs 5 points an epoch: the report must compute their verdict itself;
    * at 1,200 images seed 0, such a run without metrics.jsonl: unknown, counted as not converged;
    * at 12,000 images seed 1, a run whose results.json says it did not converge.
    """
    root = tmp_path_factory.mktemp("known") / "sweep"
    rng = np.random.default_rng(0)
    for label, (a, b, c) in TRUE.items():
        backbone = label.removesuffix("_distilled")
        for n in SWEEP_SIZES:
            for seed in SEEDS:
                run = root / "runs" / label / f"n{n}-s{seed}"
                run.mkdir(parents=True)
                acc = float(1 - (a * n ** -b + c) + rng.normal(0, 0.004))
                r = {"label": label, "backbone": backbone, "family": FAMILY[backbone], "preset": "tiny",
                     "dataset": "fashion_mnist", "fraction": n / 54000, "n_train": n, "n_val": 6000,
                     "seed": seed, "sweep": "known", "teacher": "runs/resnet" if label == "deit_distilled" else None,
                     "epochs": 10, "steps": 1000, "test_acc": acc}
                old = label == "vit" and (n == 600 or (n == 1200 and seed == 0))
                if old and n == 600:
                    (run / "metrics.jsonl").write_text("".join(
                        json.dumps({"epoch": e, "step": 100 * (e + 1), "val_acc": 0.3 + 0.05 * e}) + "\n"
                        for e in range(10)))
                if not old:  # 8 validations; the unconverged run still gains 1.2 points after step 750 of 1,000
                    gain = 0.0 if (label, n, seed) != ("vit", 12000, 1) else 0.012
                    history = [[125 * i, acc - gain if 125 * i <= 750 else acc] for i in range(1, 9)]
                    r.update({"converged": gain == 0, "best_early": acc - gain, "best_late": acc, "gain": gain,
                              "validations": 8, "rule": RULE, "val_history": history})
                (run / "results.json").write_text(json.dumps(r))
    return root


@pytest.fixture(scope="module")
def known_report(known_sweep):
    from vitbench.report import write_report

    lines: list[str] = []
    out = write_report(known_sweep, echo=lines.append, targets=(0.85, 0.9, 0.93))
    return {"dir": out, "stdout": "\n".join(lines), "lines": lines}


def test_unconverged_runs_are_flagged_in_summary_and_stdout(known_report):
    summary = (known_report["dir"] / "summary.md").read_text()
    vit = next(ln for ln in summary.splitlines() if ln.startswith("| `vit`"))
    assert vit.count("⚠") == 3  # the cells at 600, 1,200 and 12,000 images
    assert not any("⚠" in ln for ln in summary.splitlines() if ln.startswith(("| `resnet`", "| `deit")))
    section = summary.split("## Runs that did not converge (5)")[1].split("##")[0]
    rows = [ln for ln in section.splitlines() if ln.startswith("| `vit`")]
    assert len(rows) == 5
    assert sum("+15.00" in r for r in rows) == 3  # computed from metrics.jsonl: 0.75 late vs 0.60 before
    assert sum("unknown (no readable metrics.jsonl)" in r for r in rows) == 1
    assert sum("+1.20" in r for r in rows) == 1
    warnings = [ln for ln in known_report["lines"] if ln.startswith("warning:")]
    assert len(warnings) == 1
    assert warnings[0].startswith("warning: 5 of 60 runs did not converge (a run is converged when the best validation")
    assert warnings[0].endswith("their accuracies understate the backbones; see summary.md")


def test_report_and_sweep_status_agree_on_every_run(known_sweep):
    from vitbench.report import collect_sweep
    from vitbench.training import convergence

    sweep = collect_sweep(known_sweep)
    assert len(sweep.runs) == 60
    for run in sweep.runs:  # `vitbench sweep status` reports convergence.converged
        assert run.converged == convergence.converged(run.task.run_dir, run.results), run.task.run_dir


def test_efficiency_reads_absolute_sizes_with_intervals_off_the_fitted_curves(known_report):
    text = (known_report["dir"] / "efficiency.md").read_text()
    assert "err(n) = a·n^(−b) + c" in text and "1000 replicates" in text and "90% percentile intervals" in text
    assert "of the label's own best" not in text  # the relative thresholds are gone
    for heading in ("## Fits", "## Accuracy at each measured size",
                    "## Training images needed to reach 0.85, 0.9 and 0.93",
                    "## Where each transformer crosses the CNN baseline", "## Distillation gain",
                    "## External references (other models, full training set, not comparable in scale)"):
        assert heading in text
    needed = text.split("## Training images needed")[1].split("##")[0]
    deit = next(ln for ln in needed.splitlines() if ln.startswith("| `deit` |"))
    cells = [c.strip() for c in deit.strip().strip("|").split("|")]
    # deit's true n for 0.85 is ~22,900: above the largest size (12,000) but within 4x of it
    assert cells[1].startswith("≈ ") and cells[1].endswith(", extrapolated")
    point = float(cells[1][2:].split(" ")[0].replace(",", ""))
    lo, hi = (float(v.replace(",", "")) for v in cells[1].split("[")[1].split("]")[0].split(", "))
    assert point == pytest.approx(true_n(0.85, *TRUE["deit"]), rel=0.15) and lo <= point <= hi
    assert cells[2] == "beyond 4× the largest size (not reported)"  # 0.90: ~136,000
    resnet = next(ln for ln in needed.splitlines() if ln.startswith("| `resnet` |"))
    last = [c.strip() for c in resnet.strip().strip("|").split("|")][-1]
    # 0.93 is 1 point under resnet's asymptote (truth: ~12 million images): no number either way
    assert last.startswith(("beyond 4×", "not reached: the curve levels off at")), last
    crossings = text.split("## Where each transformer crosses")[1].split("##")[0]
    distilled = next(ln for ln in crossings.splitlines() if ln.startswith("| `deit_distilled` |"))
    assert "overtakes at ≈" in distilled and ", interpolated |" in distilled  # true crossing ~4,000 images
    gains = text.split("## Distillation gain")[1].split("##")[0]
    assert "paired Student-t interval: both have the same seeds" in gains
    refs = text.split("## External references")[1]
    assert "ResNet-18" in refs and "0.949" in refs and "0.883" in refs and "zalandoresearch/fashion-mnist" in refs
    assert "external references for fashion_mnist" in known_report["stdout"]


def test_the_printed_leads_are_efficiency_md_differences_said_as_the_leader_s(known_report):
    """stdout gives each transformer's lead or lag at the smallest and largest size: the measured difference
    of efficiency.md, with its interval turned round when the baseline leads, then the fitted crossing."""
    import re

    text = (known_report["dir"] / "efficiency.md").read_text().split("## Where each transformer crosses")[1]
    rows = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in text.split("##")[0].splitlines()
            if ln.startswith("| `")]
    number = r"([+-]?\d+\.\d)"
    for row in rows:
        label = row[0].strip("`")
        measured = {n: (float(v), float(lo), float(hi))
                    for n, v, lo, hi in re.findall(rf"([\d,]+): {number} \[{number}, {number}\]", row[-1])}
        assert list(measured) == [f"{n:,}" for n in SWEEP_SIZES], row
        line = next(ln for ln in known_report["lines"] if ln.startswith("at ") and f" {label} " in ln.split(";")[0])
        printed = re.findall(rf"at ([\d,]+) images (\w+) leads (\w+) by (\d+\.\d) \[{number}, {number}\] points",
                             line)
        assert [p[0] for p in printed] == ["600", "12,000"], line
        for n, leader, other, by, lo, hi in printed:
            v, d_lo, d_hi = measured[n]
            assert {leader, other} == {label, "resnet"} and float(by) == abs(v), line
            sign = 1 if leader == label else -1
            assert v * sign >= 0, (row, line)  # the leader is the one ahead on the means
            assert (float(lo), float(hi)) == tuple(sorted((sign * d_lo, sign * d_hi))), (row, line)
        assert f"; fitted curves: {label} " in line
    lines = {ln.split(";")[0] for ln in known_report["lines"]}
    # the truth: the CNN far ahead of vit at 600 images (34 points), distilled DeiT ahead at 12,000 (1.6)
    assert any(ln.startswith("at 600 images resnet leads vit by 3") for ln in lines)
    distilled = next(ln for ln in known_report["lines"] if ln.startswith("at ") and " deit_distilled " in ln)
    assert "at 12,000 images deit_distilled leads resnet by " in distilled


def test_plot_with_fitted_curves_and_hollow_markers(known_report):
    from PIL import Image

    with Image.open(known_report["dir"] / "accuracy_vs_data.png") as im:
        assert im.size == (1300, 900)
        assert np.asarray(im.convert("L")).std() > 5


def test_report_is_reproducible(known_sweep, known_report, tmp_path):
    from vitbench.report import write_report

    again = write_report(known_sweep, out=tmp_path / "again", echo=None, targets=(0.85, 0.9, 0.93))
    assert (again / "efficiency.md").read_text() == (known_report["dir"] / "efficiency.md").read_text()


@pytest.mark.parametrize("bad", ["1.5", "0", "0.9,abc", "-0.2", "nan"])
def test_cli_rejects_bad_targets_in_one_line_and_writes_nothing(known_sweep, bad, capsys):
    from vitbench.cli import main

    before = sorted(p.name for p in known_sweep.iterdir())
    capsys.readouterr()
    rc = main(["report", str(known_sweep), "--out", str(known_sweep / "bad-report"), "--targets", bad])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("vitbench: error: --targets") and "\n" not in err, err
    assert sorted(p.name for p in known_sweep.iterdir()) == before
