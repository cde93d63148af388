"""The report's files: results.csv, summary.md, efficiency.md, accuracy_vs_data.png, and the stdout summary.

The numbers come from :mod:`~vitbench.report.stats` (per-cell statistics over seeds) and
:mod:`~vitbench.report.curves` (fitted learning curves and their bootstrap intervals); this module
only words and draws them.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from pathlib import Path

import numpy as np

from vitbench import rundir
from vitbench.errors import VitbenchError
from vitbench.report import curves, stats
from vitbench.report.collect import Run, Sweep
from vitbench.utils import atomic_path, write_text

# One colour per backbone family, so e.g. ViT and DeiT share a hue and differ in line style.
FAMILY_COLORS = {"cnn": "#333333", "vit": "#d62728", "hierarchical": "#1f77b4", "pooling": "#2ca02c"}
OTHER_COLORS = ["#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P"]

LEAD_COLUMNS = ["label", "task_id", "run_dir"]


def _fmt_acc(x: float) -> str:
    return f"{x:.3f}"


def _fmt_points(v: float) -> str:
    return f"{v:+.1f}"


def _fmt_n(n) -> str:
    return "—" if n is None else f"{n:,.0f}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- results.csv
def result_rows(sweep: Sweep) -> tuple[list[str], list[dict]]:
    """One row per finished run: label, task id, run dir, then every results.json field (class_names joined by '|')."""
    columns = list(LEAD_COLUMNS)
    rows = []
    for r in sorted(sweep.runs,
                    key=lambda r: (sweep.labels.index(r.label), r.results.get("n_train") or 0, r.task.seed)):
        row = {"label": r.label, "task_id": "" if r.task.id is None else r.task.id,
               "run_dir": str(r.task.run_dir or "")}
        for k, v in r.results.items():
            if k not in columns:
                columns.append(k)
            row[k] = "|".join(map(str, v)) if isinstance(v, (list, tuple)) else v
        rows.append(row)
    return columns, rows


def write_csv(path: Path, sweep: Sweep) -> int:
    columns, rows = result_rows(sweep)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    write_text(path, buf.getvalue())
    return len(rows)


# ---------------------------------------------------------------- convergence
WARN = "⚠"


def unconverged(sweep: Sweep) -> dict[tuple, list[Run]]:
    """(label, size) -> its runs that did not converge (or could not be judged), by seed."""
    out: dict[tuple, list[Run]] = {}
    for r in sorted(sweep.runs, key=lambda r: r.task.seed):
        if not r.converged:
            out.setdefault((r.label, r.size), []).append(r)
    return out


def _rules(runs: list[Run]) -> str:
    # Every current run carries the same rule; a run from an older vitbench may carry another wording.
    rules = dict.fromkeys(str(r.verdict["rule"]) for r in runs if r.verdict.get("rule"))
    return "; ".join(("a run is converged when " + rule[len("converged: "):])
                     if rule.startswith("converged: ") else rule
                     for rule in rules)


def _gain_text(r: Run) -> str:
    gain = r.verdict.get("gain")
    if gain is not None:
        return f"{gain * 100:+.2f}"
    source = r.verdict.get("source")
    if source == "unknown":
        return "unknown (no readable metrics.jsonl)"
    return "unknown (no validation before or in the last part of the run)"


def _noise_text(sweep: Sweep) -> str:
    """The sampling noise of one validation next to the check: what a verdict near its tolerance means."""
    results = [r.results for r in sweep.runs]
    n_val = [r["n_val"] for r in results if isinstance(r.get("n_val"), int) and r["n_val"] > 0]
    acc = [r["best_val_acc"] for r in results if isinstance(r.get("best_val_acc"), (int, float))]
    if not n_val or not acc:
        return ""
    n, p = int(np.median(n_val)), float(np.median(acc))
    se = math.sqrt(p * (1 - p) / n) * 100
    return (f"The check compares validation accuracies measured on {n:,} images (the runs' median), where one "
            f"standard error of an accuracy near {p:.2f} is {se:.2f} points: a gain within about that of the "
            "tolerance is a verdict the noise could have turned either way.\n")


def convergence_warning(sweep: Sweep) -> str | None:
    bad = [r for rs in unconverged(sweep).values() for r in rs]
    if not bad:
        return None
    unknown = sum(1 for r in bad if r.verdict.get("gain") is None)
    judged = f"; {unknown} of them could not be judged" if unknown else ""
    return (f"{len(bad)} of {len(sweep.runs)} runs did not converge ({_rules(bad)}{judged}): "
            "their accuracies understate the backbones; see summary.md")


# ---------------------------------------------------------------- summary.md
def cell_text(cell: stats.Cell | None, flagged: bool = False) -> str:
    if cell is None:
        return "missing"
    std = "—" if cell.n < 2 else _fmt_acc(cell.std)
    count = f"{cell.n}" if cell.n >= cell.expected else f"{cell.n} of {cell.expected}"
    return f"{_fmt_acc(cell.mean)} ± {std} ({count})" + (f" {WARN}" if flagged else "")


def missing_lines(sweep: Sweep) -> list[str]:
    return [f"{t.label} at {sweep.size_header(t.size)}, seed {t.seed}" + (f": {t.run_dir}" if t.run_dir else "")
            for t in sweep.missing]


def missing_points(sweep: Sweep, table: dict) -> list[str]:
    """Label x size cells with no finished run."""
    return [f"{lb} at {sweep.size_header(s)}" for lb in sweep.labels for s in sweep.sizes
            if (lb, s) not in table and (lb, s) in sweep.expected_seeds]


def _budget_text(budget: dict) -> str:
    parts = [f"{budget['max_epochs']:,} epochs" if budget.get("max_epochs") else None,
             f"{budget['max_steps']:,} steps" if budget.get("max_steps") else None,
             f"≥ {budget['min_steps']:,} steps" if budget.get("min_steps") else None]
    text = ", ".join(p for p in parts if p) or "—"
    cycles, least = budget.get("cycles") or 1, budget.get("min_cycles") or 1
    if cycles == 1:
        return text
    return text + (f"; {least} to {cycles} cycles" if least > 1 else f"; up to {cycles} cycles")


def _setting_text(counts: Counter) -> str:
    """One setting of a label's runs; where its runs differ (a study that reuses runs trained under an
    older config, or one edited midway), each value with its number of runs."""
    if len(counts) == 1:
        return next(iter(counts))
    return "runs differ: " + " · ".join(f"{text} ({n} run{'' if n == 1 else 's'})"
                                        for text, n in counts.most_common())


def _run_settings(run) -> tuple[str, str]:
    """A run's precision (with torch.compile) and budget, from its config.yaml: "—" for an older or
    damaged config.yaml, whose settings are unknown."""
    try:
        cfg = rundir.read_config(run.task.run_dir) if run.task.run_dir else None
    except VitbenchError:
        cfg = None
    if cfg is None:
        return "—", "—"
    trainer = cfg["trainer"]
    return trainer["precision"] + (", compiled" if trainer.get("compile") else ""), _budget_text(cfg["budget"])


def training_rows(sweep: Sweep) -> list[list[str]]:
    """What each label's runs trained with, from their results.json and config.yaml: settings that differ
    between labels, such as precision or budget, are part of the comparison."""
    rows = []
    for lb in sweep.labels:
        runs = [r for r in sweep.runs if r.label == lb]
        if not runs:
            continue
        settings = [_run_settings(r) for r in runs]
        params = runs[0].results.get("params")
        steps = sorted(int(r.results["steps"]) for r in runs if isinstance(r.results.get("steps"), int))
        cycles = Counter(int(r.results.get("cycles") or 1) for r in runs)
        rows.append([
            f"`{lb}`", f"{params / 1e6:.2f} M" if isinstance(params, int) else "—",
            _setting_text(Counter(p for p, _ in settings)), _setting_text(Counter(b for _, b in settings)),
            (f"{steps[0]:,}" if steps[0] == steps[-1] else f"{steps[0]:,}–{steps[-1]:,}") if steps else "—",
            ", ".join(f"{c}: {k}" for c, k in sorted(cycles.items())),
        ])
    return rows


def environment_text(sweep: Sweep) -> str:
    """The software and devices the runs used (results.json), each with its runs per label: a study
    resumed on another machine or a fresh install can mix them, and then says so."""
    used: dict[tuple, Counter] = {}
    for r in sweep.runs:
        key = (r.results.get("software"), r.results.get("device"))
        if not all(key) or key[1] == rundir.UNKNOWN_DEVICE:  # cannot be compared: listed, never warned about
            key = (None, None)
        used.setdefault(key, Counter())[r.label] += 1
    lines = ["\nSoftware and device (results.json), with each one's runs per label:\n"]
    for (software, device), labels in sorted(used.items(), key=lambda kv: -sum(kv[1].values())):
        where = (f"{software} on {device}" if software
                 else "not recorded (runs older than these fields) or an unknown device")
        counts = ", ".join(f"`{lb}` {labels[lb]}" for lb in sweep.labels if labels[lb])
        n = sum(labels.values())
        lines.append(f"- {where}: {n} run{'' if n == 1 else 's'} ({counts})")
    recorded = [key for key in used if all(key)]
    if len(recorded) > 1:
        lines.append(f"\n{WARN} The runs used {len(recorded)} different combinations: a difference between labels "
                     "that tracks one of them may come from the software or the device, not the backbone.")
    return "\n".join(lines) + "\n"


def summary_md(sweep: Sweep, table: dict) -> str:
    bad = unconverged(sweep)
    header = ["label", "family"] + [sweep.size_header(s) for s in sweep.sizes]
    rows = [[f"`{lb}`", sweep.family[lb]] + [cell_text(table.get((lb, s)), (lb, s) in bad) for s in sweep.sizes]
            for lb in sweep.labels]
    out = [
        f"# Test accuracy vs training-set size: {sweep.name}\n",
        f"Dataset `{sweep.dataset}`; {len(sweep.runs)} finished runs. Columns: training images n_train "
        "(fraction or images per class in brackets). Cells: mean ± sample std (ddof=1) of the test accuracy "
        "over seeds, with the number of seeds in brackets (`—`: one seed, no std; `k of m`: m planned); "
        f"`missing`: no finished run; `{WARN}`: the cell holds a run that did not converge.\n",
        _md_table(header, rows),
    ]
    runs = sorted((r for rs in bad.values() for r in rs),
                  key=lambda r: (sweep.labels.index(r.label), sweep.sizes.index(r.size), r.task.seed))
    if runs:
        out.append(f"{WARN} {len(runs)} of {len(sweep.runs)} runs did not converge ({_rules(runs)}), in "
                   f"{len(bad)} of {len(table)} cells. Such a run was still improving when its budget ended, so "
                   "its test accuracy understates what the backbone reaches at that size: give those runs a "
                   "larger budget (or more budget.cycles) before drawing conclusions from their cells.\n")
    out.append(f"\n## Runs that did not converge ({len(runs)})\n")
    if runs:
        out.append("Gain: best validation accuracy in the last part of the run minus the best before it, in points "
                   "(`unknown`: the run could not be judged, which counts as not converged).\n")
        out.append(_md_table(["label", "n_train", "seed", "gain (points)", "run dir"],
                             [[f"`{r.label}`", sweep.size_header(r.size), r.task.seed, _gain_text(r),
                               str(r.task.run_dir or "")] for r in runs]))
    else:
        out.append(f"None: every run passed the convergence check ({_rules(sweep.runs)}).\n")
    noise = _noise_text(sweep)
    if noise:
        out.append(noise)
    out.append("\n## How each label trained\n")
    out.append("From each label's runs (precision, torch.compile and budget from their config.yaml; where a "
               "label's runs differ, each value with its number of runs). "
               "Settings that differ between labels are part of what the comparison compares (a compiled run "
               "also drops each epoch's last partial batch). Budget: per cycle "
               "(`budget.cycles`: another cycle from the weights reached, only while the convergence check "
               "fails); cycles run: how many runs took 1, 2, ... cycles.\n")
    out.append(_md_table(["label", "parameters", "precision", "budget", "steps run", "cycles run: runs"],
                         training_rows(sweep)))
    out.append(environment_text(sweep))
    miss = missing_lines(sweep)
    grid = "" if sweep.has_sweep_json else " (no sweep.json: the grid is the one the runs found imply)"
    points = missing_points(sweep, table)
    out.append(f"\n## Missing grid points ({len(points)})\n")
    out.append("\n".join(f"- {p}" for p in points) + "\n" if points
               else "None: every label has a finished run at every size.\n")
    out.append(f"\n## Missing runs ({len(miss)}){grid}\n")
    out.append("\n".join(f"- {m}" for m in miss) + "\n" if miss else "None: every planned run finished.\n")
    return "\n".join(out)


# ---------------------------------------------------------------- efficiency.md
def _sig(n: float) -> str:
    """A fitted size to 3 significant digits: the fit is not more precise than that."""
    if n <= 0:
        return "0"
    return f"{float(f'{n:.3g}'):,.0f}" if n >= 100 else f"{n:.3g}"


def _ci(iv: curves.Interval, fmt=_fmt_acc, one_seed: str = "one seed: no CI") -> str:
    if not iv.has_ci:
        return f"{fmt(iv.value)} ({one_seed})"
    return f"{fmt(iv.value)} [{fmt(iv.lo)}, {fmt(iv.hi)}]"


def _n_bound(n: float, n_min: float, n_max: float) -> str:
    """One end of a size interval: below the measured range or past 4x its top say so instead of a number."""
    if math.isinf(n):
        return "not reached"
    if n < n_min:
        return f"< {_fmt_n(n_min)}"
    if n > curves.MAX_EXTRAPOLATION * n_max:
        return f"> {_fmt_n(curves.MAX_EXTRAPOLATION * n_max)}"
    return _sig(n)


def _n_interval(lo, hi, n_min: float, n_max: float) -> str:
    if lo is None:
        return "one seed: no CI"
    return f"[{_n_bound(lo, n_min, n_max)}, {_n_bound(hi, n_min, n_max)}]"


def needed_text(nd: curves.Needed, cv: curves.LabelCurve) -> str:
    if nd.status == "no fit":
        return "— (no fit)"
    if nd.status == "not reached":
        return (f"not reached: the curve levels off at {_ci(cv.asymptote())}" if cv.levels_off
                else "not reached")
    if nd.status == "beyond":
        return f"beyond {curves.MAX_EXTRAPOLATION:g}× the largest size (not reported)"
    ci = _n_interval(nd.lo, nd.hi, cv.n_min, cv.n_max)
    if nd.status == "below":
        return f"≤ {_fmt_n(cv.n_min)}: reached at the smallest measured size {ci}"
    return f"≈ {_sig(nd.n)} {ci}, {nd.status}"


def crossing_text(co: curves.Crossing) -> tuple[str, str]:
    """(where the label crosses the baseline, its interval)."""
    if co.status == "no fit":
        return f"— ({co.note or 'no fit'})", "—"
    if co.status == "no common sizes":
        return "— (no size measured for both)", "—"
    ci = "one seed: no CI" if co.lo is None else f"[{_cross_bound(co.lo, co)}, {_cross_bound(co.hi, co)}]"
    far = curves.MAX_EXTRAPOLATION * co.n_hi
    if co.status == "ahead":
        text = f"ahead at all measured sizes (from {_fmt_n(co.n_lo)})"
        if co.behind_from is not None:
            text = (f"ahead at the smallest common size ({_fmt_n(co.n_lo)}), behind from ≈ {_sig(co.behind_from)} "
                    f"({'interpolated' if co.behind_from <= co.n_hi else 'extrapolated'})")
        return text, ci
    if co.status == "behind":
        if _never_crosses(co):
            ci = f"— ({_never_crosses(co)})"
        return (f"behind up to {curves.MAX_EXTRAPOLATION:g}× the largest common size "
                f"({_fmt_n(far)}; extrapolated above {_fmt_n(co.n_hi)})"), ci
    return f"overtakes at ≈ {_sig(co.n)}, {co.status}", ci


def _never_crosses(co: curves.Crossing) -> str:
    """Why a crossing has no interval although it was bootstrapped ("" if it has one): both of its ends
    would read "not within 4x"."""
    if co.lo is not None and math.isinf(co.lo):
        return f"at least {(1 + curves.LEVEL) / 2:.0%} of the bootstrap replicates do not cross either"
    return ""


def _cross_bound(n: float, co: curves.Crossing) -> str:
    if math.isinf(n):
        return f"not within {curves.MAX_EXTRAPOLATION:g}×"
    if n <= co.n_lo:
        return f"≤ {_fmt_n(co.n_lo)}"
    return _sig(n)


def _targets_text(targets) -> str:
    words = [f"{t:g}" for t in targets]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def efficiency_md(sweep: Sweep, table: dict, an: curves.Analysis) -> str:
    level = f"{an.level:.0%}"
    out = [
        f"# Data efficiency: {sweep.name}\n",
        f"Dataset `{sweep.dataset}`; {len(sweep.runs)} finished runs. Accuracies are absolute test accuracies "
        "(fractions); differences are in percentage points; sizes are training images.\n",
        f"- **Fit.** Per label, the test error err = 1 − test accuracy is fitted as **err(n) = a·n^(−b) + c** "
        "(a saturating power law, Brumen et al. 2021) to every finished run of the label (every seed, every "
        f"size), by bounded least squares (a > 0, {curves.B_LOW:g} ≤ b ≤ {curves.B_HIGH:g}, 0 ≤ c ≤ 1; variable "
        "projection: a and c in closed form for each b, b on a grid refined to ~1e-10). 1 − c is the accuracy the "
        "curve levels off at: a parameter of the model, its extrapolation to unlimited data; a fit with c at its "
        f"bound 0 has not seen it level off, and gives no asymptote. A fit needs at least {curves.MIN_SIZES} "
        "measured sizes.\n"
        f"- **Uncertainty.** Measured means and distillation gains: **{level} Student-t intervals** over seeds (a "
        "gain: paired over seeds where both labels have a run for every seed, Welch's otherwise); they assume "
        "roughly normal seed-to-seed variation. Everything read off a fitted curve (fitted values, sizes needed, "
        f"crossings, asymptotes): a bootstrap over seeds, {an.n_boot} replicates, each drawing the label's seeds "
        "with replacement (a drawn seed brings its runs at every size) and refitting; brackets are "
        f"**{level} percentile intervals** ({(1 - an.level) / 2:.0%} to {(1 + an.level) / 2:.0%} percentile), "
        "from a generator with a fixed seed, so the same runs give the same report. Labels with the same seeds "
        "are resampled together (a paired bootstrap), others independently. These intervals hold only if the "
        "model fits, and with few seeds they are too narrow (3 seeds allow 10 distinct resamples): with fewer "
        "than 5 seeds read them as a lower bound on the uncertainty. One seed gives no interval.\n"
        "- **Extrapolation.** A size read off a fitted curve is *interpolated* when it lies within the measured "
        f"sizes, *extrapolated* above the largest but within {curves.MAX_EXTRAPOLATION:g}× it, and not reported "
        "beyond that.\n",
    ]
    warning = convergence_warning(sweep)
    if warning:
        out.append(f"**{WARN} {warning}.** The fits include those runs: their curves are lower bounds.\n")

    out.append("## Fits\n")
    rows = []
    for lb in sweep.labels:
        cv = an.curves.get(lb)
        if cv is None:
            continue
        shape = f"{len(cv.seeds)} × {len(cv.ns)}"
        if not cv.fitted:
            rows.append([f"`{lb}`", shape, "—", "—", "—", "—", cv.note or ""])
            continue
        p = cv.params
        asymptote = _ci(cv.asymptote()) if cv.levels_off else "— (not estimated)"
        rows.append([f"`{lb}`", shape, f"{p.a:.3g}", f"{p.b:.2f}", f"{p.c:.3f}", asymptote, cv.note or ""])
    out.append(_md_table(["label", "seeds × sizes", "a", "b", "c", f"asymptote 1 − c [{level} CI]", "note"], rows))

    out.append("\n## Accuracy at each measured size\n")
    out.append(f"Mean test accuracy over seeds with the {level} Student-t interval of that mean, and the fitted "
               f"curve's value with its {level} bootstrap band. `{WARN}`: a run of the cell did not converge.\n")
    bad = unconverged(sweep)
    rows = []
    for lb in sweep.labels:
        cv = an.curves.get(lb)
        if cv is None:
            continue
        for s, n in enumerate(cv.ns):
            size = next(key for (l2, key), c in table.items() if l2 == lb and c.n_train == n)
            fitted = _ci(cv.fitted_at(n)) if cv.fitted else "—"
            seeds = int(np.sum(~np.isnan(cv.acc[:, s])))
            rows.append([f"`{lb}`", _fmt_n(n), _ci(cv.mean_acc(s)) + (f" {WARN}" if (lb, size) in bad else ""),
                         fitted, seeds])
    out.append(_md_table(["label", "n_train", f"mean over seeds [{level} CI]", f"fitted [{level} CI]", "seeds"], rows))

    out.append(f"\n## Training images needed to reach {_targets_text(an.targets)} test accuracy\n")
    out.append(f"Where the fitted curve reaches each absolute accuracy target, with its {level} interval "
               f"(set the targets with `vitbench report --targets {','.join(f'{t:g}' for t in an.targets)}`).\n")
    rows = []
    for lb in sweep.labels:
        cv = an.curves.get(lb)
        if cv is not None:
            rows.append([f"`{lb}`"] + [needed_text(an.needed[(lb, t)], cv) for t in an.targets])
    out.append(_md_table(["label"] + [f"n for {t:g}" for t in an.targets], rows))

    out.append("\n## Where each transformer crosses the CNN baseline\n")
    if an.baseline is None:
        out.append("No baseline in this sweep (a backbone whose class sets `baseline = True`, as ResNet does): "
                   "nothing to compare with.\n")
    elif not an.crossings:
        out.append(f"Baseline: `{an.baseline}`. No transformer labels to compare.\n")
    else:
        out.append(f"Baseline: `{an.baseline}`. From the two fitted curves, between the smallest size both "
                   f"measured and {curves.MAX_EXTRAPOLATION:g}× the largest both measured: the size from which the "
                   f"transformer's accuracy is above the baseline's, with its {level} interval. The measured "
                   f"differences (transformer minus baseline, mean over seeds, with the {level} Student-t interval: "
                   "paired over seeds where both have a run for every seed) are beside it.\n")
        rows = []
        for co in an.crossings:
            where, ci = crossing_text(co)
            measured = an.versus_baseline[co.label].rows
            diffs = ("—" if not measured else ", ".join(
                f"{_fmt_n(r.n_train)}: {_ci(r.diff, _fmt_points, 'one seed')}" for r in measured))
            rows.append([f"`{co.label}`", where, ci, diffs])
        out.append(_md_table(["label", "crosses the baseline", f"{level} CI",
                              f"measured difference by size (points) [{level} CI]"], rows))

    out.append("\n## Distillation gain\n")
    if not an.gains and not an.untwinned:
        out.append("No distilled labels (runs with a teacher) in this sweep.\n")
    for lb in an.untwinned:
        out.append(f"`{lb}`: no run of the same backbone and preset without a teacher, so no gain to report.\n")
    for g in an.gains:
        how = ("paired Student-t interval: both have the same seeds (Welch's at a size where one misses a seed)"
               if g.paired else "Welch's Student-t interval: the two have different seeds")
        out.append(f"`{g.label}` minus `{g.baseline}` (same backbone and preset, no teacher), "
                   f"{level} interval by {how}:\n")
        if not g.rows:
            out.append("no training-set size has both; see the missing runs in summary.md.\n")
            continue
        d, b = an.curves[g.label], an.curves[g.baseline]
        rows = []
        for row in g.rows:
            sd, sb = int(np.nonzero(d.ns == row.n_train)[0][0]), int(np.nonzero(b.ns == row.n_train)[0][0])
            gain = _ci(row.diff, _fmt_points, "one seed: no CI")
            rows.append([_fmt_n(row.n_train), _ci(d.mean_acc(sd)), _ci(b.mean_acc(sb)), gain,
                         f"{row.seeds[0]} / {row.seeds[1]}"])
        out.append(_md_table(["n_train", f"`{g.label}`", f"`{g.baseline}`", f"gain (points) [{level} CI]", "seeds"],
                             rows))

    out.append("\n## External references (other models, full training set, not comparable in scale)\n")
    if not sweep.references:
        out.append(f"No published references are recorded for dataset `{sweep.dataset}` "
                   "(they live with the dataset's definition in `vitbench.data`).\n")
    else:
        out.append("Published results of OTHER models trained on the full training set, with their own recipes: "
                   "for orientation only, not measured here and not comparable with this sweep's sizes or budgets.\n")
        out.append(_md_table(["model", "test accuracy", "training images", "source"],
                             [[ref.model, _fmt_acc(ref.test_acc), _fmt_n(ref.n_train), ref.source]
                              for ref in sweep.references]))
        out.append("This sweep, at each label's largest measured size: " + largest_text(sweep, an) + ".\n")
    return "\n".join(out)


def largest_text(sweep: Sweep, an: curves.Analysis) -> str:
    parts = []
    for lb in sweep.labels:
        cv = an.curves.get(lb)
        if cv is not None:
            parts.append(f"{lb} {_ci(cv.mean_acc(len(cv.ns) - 1), one_seed='one seed')} at {_fmt_n(cv.n_max)}")
    return "; ".join(parts)


# ---------------------------------------------------------------- stdout
def human_summary(sweep: Sweep, an: curves.Analysis) -> list[str]:
    lines = []
    for co in an.crossings:
        lb, base = co.label, an.baseline
        rows = an.versus_baseline[lb].rows
        parts = []
        for r in rows[:1] + rows[1:][-1:]:  # the smallest and the largest size
            # Said as the leader's lead, so the interval is the difference's, signed the same way.
            sign = 1 if r.diff.value > 0 else -1
            lead, lag = (lb, base) if sign > 0 else (base, lb)
            by = f"{abs(r.diff.value):.1f}"
            if r.diff.has_ci:
                lo, hi = sorted((sign * r.diff.lo, sign * r.diff.hi))
                by += f" [{lo:.1f}, {hi:.1f}]"
            parts.append(f"at {_fmt_n(r.n_train)} images {lead} leads {lag} by {by} points")
        if co.status not in ("no fit", "no common sizes"):
            where, ci = crossing_text(co)
            if _never_crosses(co):
                ci_text = f" ({_never_crosses(co)})"
            else:
                ci_text = f" ({an.level:.0%} CI {ci})" if ci != "—" else ""
            parts.append(f"fitted curves: {lb} {where}{ci_text}")
        elif rows:  # no fit to cross with: only what was measured
            ahead = [r.n_train for r in rows if r.diff.value > 0]
            parts.append(f"{lb} is ahead of {base} on the means at {', '.join(_fmt_n(n) for n in ahead)} images"
                         if ahead else f"{lb} is behind {base} at every measured size")
        if parts:
            lines.append("; ".join(parts))
    for g in an.gains:
        if g.rows:
            lines.append(f"distillation: {g.label} minus {g.baseline} = " + ", ".join(
                f"{_ci(r.diff, _fmt_points, 'one seed')} points at {_fmt_n(r.n_train)} images"
                for r in g.rows))
    for lb in sweep.labels:
        cv = an.curves.get(lb)
        if cv is None or not cv.fitted:
            continue
        needs = [f"{t:g}: {needed_text(an.needed[(lb, t)], cv)}" for t in an.targets]
        lines.append(f"{lb}: images needed for " + "; ".join(needs))
    if sweep.references:
        lines.append("measured, at each label's largest size: " + largest_text(sweep, an))
        lines.append(f"external references for {sweep.dataset} "
                     "(other models, full training set, not comparable in scale): "
                     + "; ".join(f"{ref.model} {_fmt_acc(ref.test_acc)} ({ref.source})" for ref in sweep.references))
    warning = convergence_warning(sweep)
    if warning:
        lines.append(f"warning: {warning}")
    return lines


# ---------------------------------------------------------------- accuracy_vs_data.png
def label_styles(sweep: Sweep) -> dict[str, dict]:
    styles, per_family, other = {}, {}, {}
    for lb in sweep.labels:
        fam = sweep.family.get(lb, "other")
        if fam not in FAMILY_COLORS and fam not in other:
            other[fam] = OTHER_COLORS[len(other) % len(OTHER_COLORS)]
        k = per_family.get(fam, 0)
        per_family[fam] = k + 1
        styles[lb] = {"color": FAMILY_COLORS.get(fam) or other[fam], "linestyle": LINESTYLES[k % len(LINESTYLES)],
                      "marker": MARKERS[(len(styles)) % len(MARKERS)]}
    return styles


def plot_png(path: Path, sweep: Sweep, table: dict, an: curves.Analysis) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    styles = label_styles(sweep)
    bad = unconverged(sweep)
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=200)
    all_n = set()
    level = f"{an.level:.0%}"
    for lb in sweep.labels:
        cv = an.curves.get(lb)
        if cv is None:
            continue
        all_n.update(cv.ns)
        st = styles[lb]
        if cv.fitted:
            grid = np.geomspace(cv.n_min, cv.n_max, curves.GRID_POINTS)
            fit, lo, hi = cv.fit_acc(grid)
            if lo is not None:
                ax.fill_between(grid, lo, hi, color=st["color"], alpha=0.13, linewidth=0)
            ax.plot(grid, fit, color=st["color"], linestyle=st["linestyle"], linewidth=1.0)
        else:  # no curve to draw: join the means so the label still reads as a line
            ax.plot(cv.ns, np.nanmean(cv.acc, axis=0), color=st["color"], linestyle=st["linestyle"], linewidth=0.8)
        seeds = sorted({int(np.sum(~np.isnan(cv.acc[:, s]))) for s in range(len(cv.ns))})
        name = (f"{lb} ({seeds[0]} seed{'s' if seeds[0] > 1 else ''})" if len(seeds) == 1
                else f"{lb} ({seeds[0]}–{seeds[-1]} seeds)")
        # One errorbar call per kind of point, not per point: each call costs matplotlib ~5 artists.
        groups: dict[tuple[bool, bool], list] = {}
        for s, n in enumerate(cv.ns):
            size = next(key for (l2, key), c in table.items() if l2 == lb and c.n_train == n)
            m = cv.mean_acc(s)
            hollow = (lb, size) in bad  # an unconverged run: the mean understates the backbone
            below, above = (max(m.value - m.lo, 0.0), max(m.hi - m.value, 0.0)) if m.has_ci else (0.0, 0.0)
            groups.setdefault((hollow, m.has_ci), []).append((n, m.value, below, above))
        for (hollow, has_ci), points in groups.items():
            ns_, values, below, above = zip(*points)
            ax.errorbar(ns_, values, yerr=[below, above] if has_ci else None, color=st["color"], marker=st["marker"],
                        markersize=4.5, markerfacecolor="none" if hollow else st["color"], markeredgewidth=1.0,
                        linestyle="none", elinewidth=0.9, capsize=2)
        ax.plot([], [], color=st["color"], linestyle=st["linestyle"], marker=st["marker"], markersize=4.5, label=name)
    ax.set_xscale("log")
    if 0 < len(all_n) <= 8:
        ax.set_xticks(sorted(all_n))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("number of training images (log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"{sweep.dataset}: test accuracy vs training-set size\nsweep {sweep.name}", fontsize=10)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    handles, labels = ax.get_legend_handles_labels()
    if bad:
        handles.append(Line2D([], [], color="#777777", marker="o", markerfacecolor="none", linestyle="none"))
        labels.append("hollow: a run did not converge")
    ax.legend(handles, labels, fontsize=7, loc="best", title_fontsize=6.5, frameon=True,
              title=f"markers: mean over seeds, bars: {level} Student-t interval of the mean\n"
                    f"lines: fit a·n^(−b)+c, band: {level} CI (bootstrap over seeds)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=200)
    plt.close(fig)
