"""``vitbench report``: accuracy versus training-set size, from a sweep dir, as files and in W&B.

:func:`write_report` writes ``results.csv``, ``summary.md``, ``accuracy_vs_data.png`` and
``efficiency.md`` to ``SWEEP_DIR/report/`` (each file atomically) and, with ``wandb=True``, logs a
``report`` run to the sweep's W&B group. The sweep runner calls it at the end of ``vitbench sweep run``.
The learning curves behind efficiency.md and the plot (a power law per label, bootstrapped over
seeds) are :mod:`vitbench.report.curves`.
"""

from __future__ import annotations

from pathlib import Path

from vitbench.report.collect import Sweep, collect_sweep

REPORT_FILES = ("results.csv", "summary.md", "accuracy_vs_data.png", "efficiency.md")


def write_report(sweep_dir, *, wandb: bool = False, out=None, wandb_mode: str = "auto", echo=print,
                 targets=None) -> Path:
    """Write the report of ``sweep_dir`` to ``out`` (default ``SWEEP_DIR/report``); return that dir.

    ``targets``: the absolute test accuracies efficiency.md gives the training images needed for
    (default :data:`~vitbench.report.curves.DEFAULT_TARGETS`). Raises
    :class:`~vitbench.errors.VitbenchError` (before writing anything) if ``sweep_dir`` is not a sweep,
    no run has finished, or a target is not in (0, 1). ``echo`` receives the progress and summary
    lines (``None``: silent).
    """
    from vitbench.errors import VitbenchError
    from vitbench.report import curves, render, stats

    say = echo or (lambda *a, **k: None)
    targets = tuple(curves.DEFAULT_TARGETS if targets is None else targets)
    bad = [t for t in targets if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t < 1]
    if bad or not targets:
        raise VitbenchError(f"accuracy target {bad[0] if bad else '(none)'!s} is not a number strictly between "
                            "0 and 1: pass e.g. targets=(0.85, 0.9)")
    out = Path(out) if out else Path(sweep_dir) / "report"
    if out.exists() and not out.is_dir():  # before the sweep is read: a wrong --out costs nothing
        raise VitbenchError(f"cannot write the report to {out}: it is a file, not a folder; "
                            "pass another --out (a folder, new or existing)")
    sweep = collect_sweep(sweep_dir, report_dir=out)
    table = stats.cells(sweep)
    analysis = curves.analyse(sweep, table, targets)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VitbenchError(f"cannot create the report folder {out} ({e.strerror or type(e).__name__}): "
                            "pass a writable --out") from None

    n = render.write_csv(out / "results.csv", sweep)
    say(f"wrote {out / 'results.csv'} ({n} runs)")
    from vitbench.utils import write_text

    write_text(out / "summary.md", render.summary_md(sweep, table))
    say(f"wrote {out / 'summary.md'} ({len(sweep.labels)} labels x {len(sweep.sizes)} sizes)")
    render.plot_png(out / "accuracy_vs_data.png", sweep, table, analysis)
    say(f"wrote {out / 'accuracy_vs_data.png'}")
    write_text(out / "efficiency.md", render.efficiency_md(sweep, table, analysis))
    say(f"wrote {out / 'efficiency.md'}")

    for line in render.human_summary(sweep, analysis):
        say(line)
    points = render.missing_points(sweep, table)
    if points:
        say(f"{len(points)} missing grid point(s): " + "; ".join(points))
    if sweep.missing:
        say(f"{len(sweep.missing)} missing run(s):")
        for line in render.missing_lines(sweep):
            say(f"  {line}")
    else:
        say("no missing runs")

    if wandb:
        from vitbench.report.wandb_report import log_report_run

        info = log_report_run(sweep, table, out / "accuracy_vs_data.png", out, mode=wandb_mode, analysis=analysis)
        if info["mode"] == "disabled":
            say("W&B is disabled (WANDB_MODE=disabled): no report run logged")
        elif info["mode"] == "offline":
            say(f"logged offline W&B report run {info['run_dir']}; upload it later with: {info['sync']}")
        else:
            say(f"logged W&B report run {info['url'] or info['run_dir']}")
            if info.get("report_url"):
                say(f"saved W&B comparison report: {info['report_url']}")
        if info.get("warning"):
            say(f"warning: {info['warning']}")
    return out


def build_wandb_report_spec(sweep: Sweep, *, entity: str, project: str | None = None):
    """See :func:`vitbench.report.wandb_report.build_wandb_report_spec`."""
    from vitbench.report.wandb_report import build_wandb_report_spec as build

    return build(sweep, entity=entity, project=project)


__all__ = ["write_report", "collect_sweep", "build_wandb_report_spec", "Sweep", "REPORT_FILES"]
