"""The report's files: results.csv, summary.md, efficiency.md, accuracy_vs_data.png, and the stdout summary."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from vitbench.report import stats
from vitbench.report.collect import Sweep
from vitbench.utils import atomic_path, write_text

# One colour per backbone family, so e.g. ViT and DeiT share a hue and differ in line style.
FAMILY_COLORS = {"cnn": "#333333", "vit": "#d62728", "hierarchical": "#1f77b4", "pooling": "#2ca02c"}
OTHER_COLORS = ["#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
LINESTYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P"]

LEAD_COLUMNS = ["label", "task_id", "run_dir"]


def _fmt_acc(x: float) -> str:
    return f"{x:.3f}"


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
    for r in sorted(sweep.runs, key=lambda r: (sweep.labels.index(r.label), r.results.get("n_train") or 0, r.task.seed)):
        row = {"label": r.label, "task_id": "" if r.task.id is None else r.task.id, "run_dir": str(r.task.run_dir or "")}
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


# ---------------------------------------------------------------- summary.md
def cell_text(cell: stats.Cell | None) -> str:
    if cell is None:
        return "missing"
    std = "—" if cell.n < 2 else _fmt_acc(cell.std)
    count = f"{cell.n}" if cell.n >= cell.expected else f"{cell.n} of {cell.expected}"
    return f"{_fmt_acc(cell.mean)} ± {std} ({count})"


def missing_lines(sweep: Sweep) -> list[str]:
    return [f"{t.label} at {sweep.size_header(t.size)}, seed {t.seed}" + (f": {t.run_dir}" if t.run_dir else "")
            for t in sweep.missing]


def missing_points(sweep: Sweep, table: dict) -> list[str]:
    """Label x size cells with no finished run."""
    return [f"{lb} at {sweep.size_header(s)}" for lb in sweep.labels for s in sweep.sizes
            if (lb, s) not in table and (lb, s) in sweep.expected_seeds]


def summary_md(sweep: Sweep, table: dict) -> str:
    header = ["label", "family"] + [sweep.size_header(s) for s in sweep.sizes]
    rows = [[f"`{lb}`", sweep.family[lb]] + [cell_text(table.get((lb, s))) for s in sweep.sizes] for lb in sweep.labels]
    out = [
        f"# Test accuracy vs training-set size: {sweep.name}\n",
        f"Dataset `{sweep.dataset}`; {len(sweep.runs)} finished runs. Columns: training images n_train "
        "(fraction or images per class in brackets). Cells: mean ± sample std (ddof=1) of the test accuracy "
        "over seeds, with the number of seeds in brackets (`—`: one seed, no std; `k of m`: m planned); "
        "`missing`: no finished run.\n",
        _md_table(header, rows),
    ]
    miss = missing_lines(sweep)
    grid = "" if sweep.has_sweep_json else " (no sweep.json: the grid is the one the runs found imply)"
    points = missing_points(sweep, table)
    out.append(f"\n## Missing grid points ({len(points)})\n")
    out.append("\n".join(f"- {p}" for p in points) + "\n" if points else "None: every label has a finished run at every size.\n")
    out.append(f"\n## Missing runs ({len(miss)}){grid}\n")
    out.append("\n".join(f"- {m}" for m in miss) + "\n" if miss else "None: every planned run finished.\n")
    return "\n".join(out)


# ---------------------------------------------------------------- efficiency.md
def _needed_text(nd: stats.Needed | None) -> str:
    if nd is None:
        return "—"
    if nd.n is None:
        return "not reached"
    return f"≤ {_fmt_n(nd.n)} (smallest size)" if nd.at_smallest else f"≈ {_fmt_n(nd.n)}"


def efficiency_md(sweep: Sweep, table: dict) -> str:
    out = [
        f"# Data efficiency: {sweep.name}\n",
        f"Dataset `{sweep.dataset}`. Accuracies are mean test accuracies over seeds; differences are in "
        "percentage points. Between measured sizes, values are interpolated linearly in log(n_train).\n",
        "## Training images needed to reach 90% and 95% of the label's own best accuracy\n",
        "Reference: each label's OWN mean test accuracy at ITS largest measured training-set size "
        "(not the best accuracy across labels). Target = 90% (95%) of that reference; the size is the first "
        "point where the mean curve reaches the target.\n",
    ]
    rows = []
    largest = max((c.n_train for c in table.values()), default=0)
    for lb in sweep.labels:
        ns, accs = stats.curve(sweep, table, lb)
        n90, n95 = stats.needed(ns, accs, 0.90), stats.needed(ns, accs, 0.95)
        if n90 is None:
            rows.append([f"`{lb}`", "no finished runs", "—", "—", "—", "—"])
            continue
        short = " (largest planned size missing)" if largest and n90.reference_n < largest else ""
        rows.append([f"`{lb}`", f"{_fmt_acc(n90.reference)} at {_fmt_n(n90.reference_n)}{short}",
                     _fmt_acc(n90.target), _needed_text(n90), _fmt_acc(n95.target), _needed_text(n95)])
    out.append(_md_table(["label", "reference (acc at largest n)", "90% target", "n for 90%", "95% target", "n for 95%"], rows))

    base = stats.baseline_label(sweep)
    out.append("\n## Where each transformer overtakes the CNN baseline\n")
    if base is None:
        out.append("No CNN baseline (family `cnn`) in this sweep: nothing to compare with.\n")
    else:
        out.append(f"Baseline: `{base}`. Difference = transformer minus baseline mean accuracy at the sizes both have; "
                   "the crossover is where the difference turns positive.\n")
        rows = []
        for lb in sweep.labels:
            if lb == base or sweep.family.get(lb) == "cnn":
                continue
            co = stats.crossover(sweep, table, lb, base)
            if co is None:
                rows.append([f"`{lb}`", "no common sizes", "—"])
                continue
            if co.ahead_from_start:
                where = f"ahead already at the smallest common size ({_fmt_n(co.ns[0])})"
            elif co.n is None:
                where = "does not overtake within the measured sizes"
            else:
                where = f"≈ {_fmt_n(co.n)} images"
            diffs = ", ".join(f"{_fmt_n(n)}: {d:+.1f}" for n, d in zip(co.ns, co.diff))
            rows.append([f"`{lb}`", where, diffs])
        out.append(_md_table(["label", "overtakes baseline at", "difference by size (points)"], rows) if rows
                   else "No transformer labels to compare.\n")

    out.append("\n## Distillation gain\n")
    gains = stats.distillation_gains(sweep, table)
    if not gains:
        out.append("No distilled labels (runs with a teacher) in this sweep.\n")
    for g in gains:
        if g.baseline is None:
            out.append(f"`{g.label}`: no run of the same backbone and preset without a teacher, so no gain to report.\n")
            continue
        out.append(f"`{g.label}` minus `{g.baseline}` (same backbone and preset, no teacher):\n")
        if not g.rows:
            out.append("no training-set size has both; see the missing runs in summary.md.\n")
            continue
        out.append(_md_table(["n_train", f"`{g.label}`", f"`{g.baseline}`", "gain (points)"],
                             [[_fmt_n(n), cell_text(d), cell_text(b), f"{gain:+.1f}"] for n, d, b, gain in g.rows]))
    return "\n".join(out)


# ---------------------------------------------------------------- stdout
def human_summary(sweep: Sweep, table: dict) -> list[str]:
    lines = []
    base = stats.baseline_label(sweep)
    if base is not None:
        for lb in sweep.labels:
            if lb == base or sweep.family.get(lb) == "cnn":
                continue
            co = stats.crossover(sweep, table, lb, base)
            if co is None:
                continue
            parts = []
            for n, d in sorted({(co.ns[0], co.diff[0]), (co.ns[-1], co.diff[-1])}):
                lead, lag = (base, lb) if d <= 0 else (lb, base)
                parts.append(f"at {_fmt_n(n)} images {lead} leads {lag} by {abs(d):.1f} points")
            if co.ahead_from_start:
                parts.append(f"{lb} is ahead of {base} from the smallest size")
            elif co.n is not None:
                parts.append(f"{lb} overtakes {base} at ≈ {_fmt_n(co.n)} images")
            else:
                parts.append(f"{lb} does not overtake {base} within the measured sizes")
            lines.append("; ".join(parts))
    for g in stats.distillation_gains(sweep, table):
        if g.rows:
            lines.append(f"distillation: {g.label} minus {g.baseline} = "
                         + ", ".join(f"{gain:+.1f} points at {_fmt_n(n)} images" for n, _, _, gain in g.rows))
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


def plot_png(path: Path, sweep: Sweep, table: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    styles = label_styles(sweep)
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=200)
    all_n = set()
    for lb in sweep.labels:
        cs = sorted((c for (l2, _), c in table.items() if l2 == lb), key=lambda c: c.n_train)
        if not cs:
            continue
        ns = np.array([c.n_train for c in cs], dtype=float)
        all_n.update(ns)
        st = styles[lb]
        ax.fill_between(ns, [c.min for c in cs], [c.max for c in cs], color=st["color"], alpha=0.15, linewidth=0)
        seeds = sorted({c.n for c in cs})
        ax.plot(ns, [c.mean for c in cs], color=st["color"], linestyle=st["linestyle"], marker=st["marker"],
                markersize=4.5, linewidth=1.6,
                label=f"{lb} ({seeds[0]} seed{'s' if seeds[0] > 1 else ''})" if len(seeds) == 1 else f"{lb} ({seeds[0]}–{seeds[-1]} seeds)")
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
    ax.legend(fontsize=8, loc="best", title="mean over seeds; band: min–max", title_fontsize=7, frameon=True)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=200)
    plt.close(fig)


def fmt_missing_count(sweep: Sweep) -> str:
    return f"{len(sweep.missing)} missing run{'s' if len(sweep.missing) != 1 else ''}"

