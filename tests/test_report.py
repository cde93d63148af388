"""``vitbench report`` on a REAL mini-sweep: micro ResNet/ViT/DeiT planned by ``vitbench sweep plan``, trained by
``vitbench sweep run-task`` subprocesses.

The sweep (built once per session, ~1-2 min on 2 CPU cores) trains on a small Fashion-MNIST subset
(the ``tiny_fashion_mnist`` fixture: 40 train and 20 test images per class) so each run takes seconds.
It plans resnet, vit, deit and deit distilled from resnet at 5 and 20 images per class, seeds 0 and 1;
resnet and vit run every task, deit and deit_distilled only 5/class seed 0 (the other 6 tasks are missing runs).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

SWEEP_NAME = "mini"
SIZES = (5, 20)
SEEDS = (0, 1)


def _vitbench(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "vitbench", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="session")
def mini_sweep(tmp_path_factory, tiny_fashion_mnist):
    root = tmp_path_factory.mktemp("report")
    sweep = root / SWEEP_NAME
    env = {**os.environ, "VITBENCH_CACHE": str(root / "cache"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    exp = root / f"{SWEEP_NAME}.yaml"
    exp.write_text(yaml.safe_dump({
        "name": SWEEP_NAME, "dataset": tiny_fashion_mnist, "samples_per_class": list(SIZES), "seeds": list(SEEDS),
        "budget": {"max_epochs": 1},
        "backbones": [{"name": b, "preset": "micro"} for b in ("resnet", "vit", "deit")]
        + [{"name": "deit", "preset": "micro", "label": "deit_distilled", "teacher": "resnet"}],
        "resources": {"accelerator": "cpu"}, "wandb": {"project": "vitbench-test", "mode": "disabled"},
    }))
    p = _vitbench("sweep", "plan", exp, "--sweep-dir", sweep, env=env)
    assert p.returncode == 0, p.stderr
    planned = {(t["label"], t["samples_per_class"], t["seed"]): t
               for t in json.loads((sweep / "sweep.json").read_text())["tasks"]}
    tasks = [planned[(b, spc, seed)] for b in ("resnet", "vit") for spc in SIZES for seed in SEEDS]
    tasks += [planned[("deit", 5, 0)], planned[("deit_distilled", 5, 0)]]

    # Each task runs as `sweep run` starts it, `vitbench sweep run-task DIR ID`, but in this process: a new
    # interpreter would spend longer importing Lightning than the task spends training. The teacher
    # (resnet) tasks come first, the student that reads one last.
    from vitbench.cli import main

    for task in tasks:
        assert main(["sweep", "run-task", str(sweep), str(task["id"])]) == 0, f"task {task['name']} failed"

    missing = [t for t in planned.values() if t not in tasks]
    return {"dir": sweep, "tasks": tasks, "planned": planned, "missing": missing, "env": env, "root": root}


@pytest.fixture(scope="module")
def report(mini_sweep):
    p = _vitbench("report", mini_sweep["dir"], env=mini_sweep["env"])
    assert p.returncode == 0, p.stderr
    return {"dir": mini_sweep["dir"] / "report", "stdout": p.stdout}


def _results(mini_sweep) -> list[tuple[str, dict]]:
    out = []
    for t in mini_sweep["tasks"]:
        out.append((t["label"], json.loads((Path(t["run_dir"]) / "results.json").read_text())))
    return out


def _md_table(text: str) -> tuple[list[str], dict[str, list[str]]]:
    """The first markdown table in ``text``: header, {first cell: cells}."""
    all_lines = text.splitlines()
    start = next(i for i, ln in enumerate(all_lines) if ln.startswith("|"))
    end = next((i for i in range(start, len(all_lines)) if not all_lines[i].startswith("|")), len(all_lines))
    lines = all_lines[start:end]
    split = lambda ln: [c.strip() for c in ln.strip().strip("|").split("|")]  # noqa: E731
    header = split(lines[0])
    return header, {split(ln)[0].strip("`"): split(ln) for ln in lines[2:]}


def test_report_writes_the_four_files_and_a_human_summary(report):
    for name in ("results.csv", "summary.md", "accuracy_vs_data.png", "efficiency.md"):
        assert (report["dir"] / name).stat().st_size > 0
        assert f"wrote {report['dir'] / name}" in report["stdout"]
    assert not list(report["dir"].glob(".*.tmp")), "atomic writes left temporary files"
    # vit against resnet at the smallest and largest size, each lead with its interval over the two seeds
    vit = next(ln for ln in report["stdout"].splitlines() if ln.startswith("at ") and " vit" in ln.split(";")[0])
    lead = r"at [\d,]+ images (?:resnet leads vit|vit leads resnet) by \d+\.\d \[-?\d+\.\d, -?\d+\.\d\] points"
    leads = re.findall(lead, vit)
    assert len(leads) == 2, vit
    assert "distillation: deit_distilled minus deit" in report["stdout"]


def test_summary_says_how_each_label_trained(report, mini_sweep):
    """Precision, budget, steps and cycles per label: what differs between labels is part of the comparison."""
    section = (report["dir"] / "summary.md").read_text().split("## How each label trained")[1].split("\n## ")[0]
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip().strip("|").split("|")]
            for ln in section.splitlines() if ln.startswith("| `")}
    assert set(rows) == {"`resnet`", "`vit`", "`deit`", "`deit_distilled`"}
    for label, res in _results(mini_sweep):
        row = rows[f"`{label}`"]
        assert row[1] == f"{res['params'] / 1e6:.2f} M" and row[2] == "32-true" and row[3] == "1 epochs"
        steps = sorted(r["steps"] for lb, r in _results(mini_sweep) if lb == label)
        assert row[4] == (f"{steps[0]:,}" if steps[0] == steps[-1] else f"{steps[0]:,}–{steps[-1]:,}")
        assert row[5] == f"1: {len(steps)}"
    # next to the convergence verdicts: how noisy the validations they compare are
    results = [r for _, r in _results(mini_sweep)]
    n, p = int(np.median([r["n_val"] for r in results])), float(np.median([r["best_val_acc"] for r in results]))
    summary = (report["dir"] / "summary.md").read_text()
    assert (f"measured on {n:,} images (the runs' median), where one standard error of an accuracy near {p:.2f} "
            f"is {math.sqrt(p * (1 - p) / n) * 100:.2f} points") in summary
    # one software and device for every run: listed once, with each label's runs, and no warning
    per_label = Counter(label for label, _ in _results(mini_sweep))
    counts = ", ".join(f"`{lb}` {per_label[lb]}" for lb in ("resnet", "vit", "deit", "deit_distilled"))
    assert f"- {results[0]['software']} on {results[0]['device']}: {len(results)} runs ({counts})" in section
    assert "different combinations" not in summary


def test_csv_has_one_row_per_finished_run(report, mini_sweep):
    with open(report["dir"] / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(mini_sweep["tasks"]) == 10
    assert sorted(int(r["task_id"]) for r in rows) == sorted(t["id"] for t in mini_sweep["tasks"])
    by_key = {(r["label"], int(r["samples_per_class"]), int(r["seed"])): r for r in rows}
    for label, res in _results(mini_sweep):
        row = by_key[(label, res["samples_per_class"], res["seed"])]
        assert row["label"] == label
        assert float(row["test_acc"]) == pytest.approx(res["test_acc"], abs=1e-12)
        assert int(row["n_train"]) == res["n_train"]
        assert row["class_names"] == "|".join(res["class_names"])
    assert by_key[("deit_distilled", 5, 0)]["teacher"].endswith("runs/resnet/spc5-s0")


def test_summary_means_and_stds_match_the_run_files(report, mini_sweep):
    groups: dict[tuple, list] = {}
    n_of = {}
    for label, res in _results(mini_sweep):
        groups.setdefault((label, res["samples_per_class"]), []).append(res["test_acc"])
        n_of[res["samples_per_class"]] = res["n_train"]
    unconverged = {(label, res["samples_per_class"]) for label, res in _results(mini_sweep) if not res["converged"]}
    header, rows = _md_table((report["dir"] / "summary.md").read_text())
    col = {spc: header.index(f"{n_of[spc]} ({spc}/class)") for spc in SIZES}
    assert set(rows) == {"resnet", "vit", "deit", "deit_distilled"}
    for (label, spc), accs in groups.items():
        accs = np.array(accs)
        std = f"{np.std(accs, ddof=1):.3f}" if len(accs) > 1 else "—"
        flag = " ⚠" if (label, spc) in unconverged else ""  # a run of the cell did not converge
        count = f"{len(accs)}" if len(accs) == len(SEEDS) else f"{len(accs)} of {len(SEEDS)}"  # of the planned seeds
        assert rows[label][col[spc]] == f"{accs.mean():.3f} ± {std} ({count}){flag}", (label, spc)
    assert rows["deit"][col[20]] == "missing"
    assert rows["deit_distilled"][col[20]] == "missing"


def test_missing_points_are_reported(report, mini_sweep):
    text = (report["dir"] / "summary.md").read_text()
    missing = mini_sweep["missing"]
    assert len(missing) == 6 and f"## Missing runs ({len(missing)})" in text
    assert f"{len(missing)} missing run(s)" in report["stdout"]
    for t in missing:
        assert t["run_dir"] in text and t["run_dir"] in report["stdout"], t["name"]
    assert "deit at " in text.split("## Missing grid points")[1]


def test_png_is_a_paper_sized_image(report):
    from PIL import Image

    with Image.open(report["dir"] / "accuracy_vs_data.png") as im:
        im.verify()
    with Image.open(report["dir"] / "accuracy_vs_data.png") as im:
        assert im.format == "PNG"
        assert im.size == (1300, 900)  # 6.5 x 4.5 in at 200 dpi
        assert np.asarray(im.convert("L")).std() > 5  # not a blank canvas


def test_unconverged_runs_are_listed_and_warned_about(report, mini_sweep):
    bad = [(lb, r) for lb, r in _results(mini_sweep) if not r["converged"]]
    summary = (report["dir"] / "summary.md").read_text()
    assert f"## Runs that did not converge ({len(bad)})" in summary
    section = summary.split("## Runs that did not converge")[1].split("\n## ")[0]
    for lb, r in bad:
        gain = "unknown" if r["gain"] is None else f"{r['gain'] * 100:+.2f}"
        assert any(f"| `{lb}` |" in ln and f"| {r['seed']} | {gain}" in ln
                   for ln in section.splitlines()), (lb, r["seed"])
    warnings = [ln for ln in report["stdout"].splitlines() if ln.startswith("warning:")]
    if bad:
        assert len(warnings) == 1 and warnings[0].startswith(f"warning: {len(bad)} of 10 runs did not converge (")
        assert warnings[0].endswith("their accuracies understate the backbones; see summary.md")
    else:
        assert not warnings


def test_efficiency_has_fits_needed_sizes_crossover_and_distillation_gain(report, mini_sweep):
    text = (report["dir"] / "efficiency.md").read_text()
    assert "of the label's own best" not in text  # relative thresholds reward flat, unconverged curves: gone
    assert "err(n) = a·n^(−b) + c" in text and "90% percentile intervals" in text
    # two sizes per label: no curve can be fitted, and the report says so instead of a number
    fits = text.split("## Fits")[1].split("\n## ")[0]
    assert fits.count("no fit: 2 measured sizes, the curve needs at least 3") == 2  # resnet, vit
    assert "no fit: 1 measured size" in fits  # deit, deit_distilled
    assert "## Where each transformer crosses the CNN baseline" in text and "Baseline: `resnet`" in text
    assert "## Training images needed to reach 0.85 and 0.9 test accuracy" in text
    assert "## Distillation gain" in text and "`deit_distilled` minus `deit`" in text
    res = {(lb, r["samples_per_class"], r["seed"]): r for lb, r in _results(mini_sweep)}
    gain = (res[("deit_distilled", 5, 0)]["test_acc"] - res[("deit", 5, 0)]["test_acc"]) * 100
    gain_table = text.split("`deit_distilled` minus `deit`")[1]
    header, rows = _md_table(gain_table)
    n5 = f"{res[('deit', 5, 0)]['n_train']:,}"
    assert rows[n5][header.index("gain (points) [90% CI]")] == f"{gain:+.1f} (one seed: no CI)"
    # how far each transformer is from the CNN at each size, with a paired t interval over the seeds
    from scipy import stats as st

    header, rows = _md_table(text.split("## Where each transformer crosses the CNN baseline")[1])
    expected = []
    for spc in SIZES:
        d = np.array([res[("vit", spc, s)]["test_acc"] - res[("resnet", spc, s)]["test_acc"] for s in SEEDS]) * 100
        lo, hi = st.t.interval(0.9, len(d) - 1, loc=d.mean(), scale=st.sem(d))
        expected.append(f"{res[('vit', spc, 0)]['n_train']:,}: {d.mean():+.1f} [{lo:+.1f}, {hi:+.1f}]")
    assert rows["vit"][header.index("measured difference by size (points) [90% CI]")] == ", ".join(expected)
    # deit has one seed: its difference from the mean of resnet's two, without an interval
    one = res[("deit", 5, 0)]["test_acc"] - np.mean([res[("resnet", 5, s)]["test_acc"] for s in SEEDS])
    assert rows["deit"][-1] == f"{n5}: {one * 100:+.1f} (one seed)"
    # the accuracy table: the mean over seeds of every cell, with an interval where there are two seeds
    section = text.split("## Accuracy at each measured size")[1].split("\n## ")[0]
    for (lb, spc, _seed), r in res.items():
        accs = [x["test_acc"] for (l2, s2, _), x in res.items() if (l2, s2) == (lb, spc)]
        row = next(ln for ln in section.splitlines() if ln.startswith(f"| `{lb}` | {r['n_train']:,} |"))
        mean = row.split("|")[3].strip()
        assert mean.startswith(f"{np.mean(accs):.3f} [" if len(accs) > 1
                               else f"{np.mean(accs):.3f} (one seed: no CI)"), row
    # a local subset of Fashion-MNIST is not the built-in dataset: no published numbers beside it
    refs = text.split("## External references (other models, full training set, not comparable in scale)")[1]
    assert "No published references are recorded for dataset `fashion_mnist_tiny`" in refs


def test_plain_folder_of_runs_without_sweep_json(mini_sweep, tmp_path):
    from vitbench.report import write_report

    # the vit runs as `trainer.compile: true` would have written them: the report says how each label ran
    runs = tmp_path / "runs"
    shutil.copytree(mini_sweep["dir"] / "runs", runs)
    for config in (runs / "vit").glob("*/config.yaml"):
        cfg = yaml.safe_load(config.read_text())
        cfg["trainer"]["compile"] = True
        config.write_text(yaml.safe_dump(cfg))
    lines = []
    out = write_report(runs, out=tmp_path / "rep", echo=lines.append)
    assert out == tmp_path / "rep"
    with open(out / "results.csv", newline="") as f:
        labels = sorted({r["label"] for r in csv.DictReader(f)})
    assert labels == ["deit", "deit_distilled", "resnet", "vit"]  # label = backbone + _distilled if teacher
    summary = (out / "summary.md").read_text()
    assert "no sweep.json" in summary
    trained = summary.split("## How each label trained")[1].split("\n## ")[0]
    precision = {ln.split("|")[1].strip(): ln.split("|")[3].strip()
                 for ln in trained.splitlines() if ln.startswith("| `")}
    assert precision == {"`resnet`": "32-true", "`vit`": "32-true, compiled", "`deit`": "32-true",
                         "`deit_distilled`": "32-true"}


def test_runs_of_another_install_or_device_are_listed_and_warned_about(mini_sweep, tmp_path):
    """A study resumed on another machine or a fresh install mixes software or devices: the summary lists
    each combination with its runs, and warns once two recorded ones differ (one not recorded is only listed)."""
    from vitbench.report import write_report

    runs = tmp_path / "runs"
    shutil.copytree(mini_sweep["dir"] / "runs", runs)
    first = json.loads(next((runs / "resnet").glob("*/results.json")).read_text())
    edited = {}
    for label, change in (("vit", {"device": "cuda: NVIDIA H200"}), ("deit", None)):
        path = next((runs / label).glob("*/results.json"))
        res = json.loads(path.read_text())
        if change:
            res.update(change)
        else:
            del res["software"], res["device"]
        path.write_text(json.dumps(res))
        edited[label] = path
    out = write_report(runs, out=tmp_path / "rep", echo=lambda line: None)
    trained = (out / "summary.md").read_text().split("## How each label trained")[1].split("\n## ")[0]
    assert f"- {first['software']} on cuda: NVIDIA H200: 1 run (`vit` 1)" in trained
    assert "- not recorded (runs older than these fields) or an unknown device: 1 run (`deit` 1)" in trained
    assert f"- {first['software']} on {first['device']}: " in trained
    assert "⚠ The runs used 2 different combinations" in trained

    # the vit run on a device it could not tell (mps): like the unrecorded run, it cannot be compared
    res = json.loads(edited["vit"].read_text())
    res["device"] = "unknown"
    edited["vit"].write_text(json.dumps(res))
    out = write_report(runs, out=tmp_path / "rep2", echo=lambda line: None)
    trained = (out / "summary.md").read_text().split("## How each label trained")[1].split("\n## ")[0]
    assert "an unknown device: 2 runs (`deit` 1, `vit` 1)" in trained and "different combinations" not in trained


def test_not_a_sweep_is_a_one_line_cli_error_and_writes_nothing(tmp_path):
    target = tmp_path / "notasweep"
    target.mkdir()
    (target / "notes.txt").write_text("hello\n")
    p = _vitbench("report", target)
    assert p.returncode == 2, p.stderr
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vitbench: error:") and "notasweep" in err[0], p.stderr
    assert sorted(x.name for x in tmp_path.rglob("*")) == ["notasweep", "notes.txt"]


@pytest.mark.parametrize("kind", ["nonexistent", "bad_sweep_json", "nothing_finished"])
def test_unusable_sweep_dirs_raise_before_writing(tmp_path, kind):
    from vitbench.errors import VitbenchError
    from vitbench.report import write_report

    target = tmp_path / "sweep"
    if kind != "nonexistent":
        target.mkdir()
    if kind == "bad_sweep_json":
        (target / "sweep.json").write_text('{"name": 1}')
    if kind == "nothing_finished":  # planned, never run
        from vitbench.cli import main

        exp = tmp_path / "exp.yaml"
        exp.write_text(yaml.safe_dump({"name": "s", "samples_per_class": [5], "backbones": [{"name": "vit"}]}))
        assert main(["sweep", "plan", str(exp), "--sweep-dir", str(target)]) == 0
    before = sorted(x.name for x in tmp_path.rglob("*"))
    with pytest.raises(VitbenchError) as e:
        write_report(target, echo=None)
    assert "\n" not in str(e.value) and str(target) in str(e.value)
    assert sorted(x.name for x in tmp_path.rglob("*")) == before


def _leet(run_dir: str) -> list[dict]:
    wandb_cli = shutil.which("wandb", path=str(Path(sys.executable).parent)) or shutil.which("wandb")
    p = subprocess.run([wandb_cli, "leet", "inspect", "--json", run_dir], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def test_wandb_offline_report_run_has_table_chart_and_image(mini_sweep, tmp_path):
    env = {**mini_sweep["env"], "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    out = tmp_path / "rep"
    p = _vitbench("report", mini_sweep["dir"], "--wandb", "--out", out, env=env)
    assert p.returncode == 0, p.stderr
    sync = [ln for ln in p.stdout.splitlines() if "wandb sync " in ln]
    assert len(sync) == 1, p.stdout
    run_dir = sync[0].split("wandb sync ", 1)[1].strip()
    assert Path(run_dir).is_dir() and out in Path(run_dir).parents

    records = _leet(run_dir)
    run = next(r["run"] for r in records if r["type"] == "run")
    assert run["job_type"] == "report" and run["run_group"] == SWEEP_NAME and run["project"] == "vitbench-test"
    history = [r["history"]["item"] for r in records if r["type"] == "history"]
    logged = {k: v for item in history for k, v in item.items()}
    assert logged["results._type"] == "table-file" and logged["results.nrows"] == 10
    assert logged["accuracy_vs_data_png._type"] == "image-file"
    assert logged["accuracy_vs_data_table._type"] == "table-file"
    charts = {k: v for r in records if r["type"] == "config" for k, v in r["config"]["update"].items()
              if k.startswith("_wandb.visualize.")}
    chart = charts["_wandb.visualize.accuracy_vs_data"]["panel_config"]
    assert chart["panelDefId"] == "wandb/lineseries/v0"

    # the chart's data: one line per label, xs = n_train, ys = mean test accuracy
    table = json.loads((Path(run_dir) / "files" / logged["accuracy_vs_data_table.path"]).read_text())
    cols = table["columns"]
    points = {(row[cols.index("lineKey")], row[cols.index("step")]): row[cols.index("lineVal")]
              for row in table["data"]}
    res = _results(mini_sweep)
    for label in ("resnet", "vit", "deit", "deit_distilled"):
        for spc in SIZES:
            accs = [r["test_acc"] for lb, r in res if lb == label and r["samples_per_class"] == spc]
            if accs:
                n = next(r["n_train"] for lb, r in res if lb == label and r["samples_per_class"] == spc)
                assert points[(label, n)] == pytest.approx(np.mean(accs))
    results_table = json.loads((Path(run_dir) / "files" / logged["results.path"]).read_text())
    assert len(results_table["data"]) == 10 and "test_acc" in results_table["columns"]

    # the numbers of efficiency.md and summary.md, as tables
    def read_table(key):
        t = json.loads((Path(run_dir) / "files" / logged[f"{key}.path"]).read_text())
        return [dict(zip(t["columns"], row)) for row in t["data"]]

    acc = read_table("accuracy_ci")
    assert len(acc) == 6  # resnet and vit at 2 sizes, deit and deit_distilled at 1
    for row in acc:
        accs = [r["test_acc"] for lb, r in res if lb == row["label"] and r["n_train"] == row["n_train"]]
        assert row["mean_test_acc"] == pytest.approx(np.mean(accs)) and row["n_seeds"] == len(accs)
        assert row["fitted_acc"] is None  # two sizes: no fit
    needed = read_table("sizes_needed")
    assert {(r["label"], r["target_acc"]) for r in needed} == {
        (lb, t) for lb in ("resnet", "vit", "deit", "deit_distilled") for t in (0.85, 0.9)
    }
    assert {r["status"] for r in needed} == {"no fit"}
    assert {r["label"] for r in read_table("crossovers")} == {"vit", "deit", "deit_distilled"}
    gains = read_table("distillation_gains")
    assert [(g["label"], g["baseline"]) for g in gains] == [("deit_distilled", "deit")]
    versus = read_table("baseline_differences")
    assert {(r["label"], r["baseline"]) for r in versus} == {(lb, "resnet") for lb in ("vit", "deit", "deit_distilled")}
    vit = {r["n_train"]: r for r in versus if r["label"] == "vit"}
    for spc in SIZES:
        row = vit[next(r["n_train"] for lb, r in res if lb == "vit" and r["samples_per_class"] == spc)]
        assert row["paired"] and row["ci_low"] < row["difference_points"] < row["ci_high"]
    assert len(read_table("unconverged_runs")) == sum(1 for _, r in res if not r["converged"])


def test_wandb_report_spec_offline(mini_sweep):
    pytest.importorskip("wandb_workspaces", reason="wandb-workspaces is not installed (pip install wandb-workspaces)")
    import wandb_workspaces.reports.v2 as wr

    from vitbench.report import build_wandb_report_spec, collect_sweep

    sweep = collect_sweep(mini_sweep["dir"])
    spec = build_wandb_report_spec(sweep, entity="test-entity")
    assert isinstance(spec, wr.Report)
    assert spec.entity == "test-entity" and spec.project == "vitbench-test"
    grids = [b for b in spec.blocks if isinstance(b, wr.PanelGrid)]
    headings = [b.text for b in spec.blocks if isinstance(b, wr.H2)]
    assert headings == ["resnet", "vit", "deit"]  # one section per backbone
    overview = grids[0]
    assert [rs.name for rs in overview.runsets] == ["resnet", "vit", "deit", "deit_distilled"]
    for grid in grids:
        plot = grid.panels[0]
        assert isinstance(plot, wr.LinePlot)
        assert plot.x == "n_train" and plot.y == ["test_acc"] and plot.log_x
        assert plot.groupby == "config.backbone"
        for rs in grid.runsets:
            assert rs.groupby == ["config.backbone"] and rs.project == "vitbench-test"
            f = str(rs.filters)
            assert f"Metric(\"Group\") == '{SWEEP_NAME}'" in f and "Metric(\"JobType\") == 'train'" in f
    distilled = str(next(rs for rs in overview.runsets if rs.name == "deit_distilled").filters)
    plain = str(next(rs for rs in overview.runsets if rs.name == "deit").filters)
    distilled_id = mini_sweep["planned"][("deit_distilled", 5, 0)]["wandb_id"]
    plain_id = mini_sweep["planned"][("deit", 5, 0)]["wandb_id"]
    assert distilled_id in distilled and plain_id not in distilled
    assert plain_id in plain and distilled_id not in plain


def test_a_planned_label_without_runs_shows_the_family_its_backbone_declares(mini_sweep, tmp_path):
    """A partial sweep (PiT planned, none of its runs finished yet): summary.md's family column says what
    the backbone class declares, not "other"."""
    from vitbench.cli import main
    from vitbench.report import collect_sweep

    exp = yaml.safe_load((mini_sweep["root"] / f"{SWEEP_NAME}.yaml").read_text())
    exp["name"] = "partial"
    exp["backbones"] = [{"name": "resnet", "preset": "micro"}, {"name": "pit", "preset": "micro"}]
    (tmp_path / "partial.yaml").write_text(yaml.safe_dump(exp))
    sweep_dir = tmp_path / "partial"
    assert main(["sweep", "plan", str(tmp_path / "partial.yaml"), "--sweep-dir", str(sweep_dir)]) == 0
    for task in json.loads((sweep_dir / "sweep.json").read_text())["tasks"]:
        if task["label"] == "resnet":  # the mini sweep's finished ResNet run of the same size and seed
            done = mini_sweep["planned"][("resnet", task["samples_per_class"], task["seed"])]
            shutil.copytree(done["run_dir"], task["run_dir"])
    sweep = collect_sweep(sweep_dir)
    assert {r.label for r in sweep.runs} == {"resnet"} and {t.label for t in sweep.missing} == {"pit"}
    assert (sweep.family, sweep.baseline) == ({"resnet": "cnn", "pit": "pooling"}, {"resnet": True, "pit": False})


def test_a_label_whose_runs_trained_differently_says_so_with_counts(mini_sweep, tmp_path):
    """A study that reuses runs trained under an older config mixes budgets within a label: the summary
    shows every value with its number of runs instead of passing one run's settings off as all of them."""
    from vitbench.report import write_report

    runs = tmp_path / "runs"
    shutil.copytree(mini_sweep["dir"] / "runs", runs)
    label = max(("resnet", "vit", "deit"), key=lambda lb: len(list((runs / lb).glob("*/config.yaml"))))
    configs = sorted((runs / label).glob("*/config.yaml"))
    assert len(configs) > 1
    cfg = yaml.safe_load(configs[0].read_text())
    cfg["budget"].update(cycles=3, min_cycles=2)
    cfg["trainer"]["precision"] = "bf16-mixed"
    configs[0].write_text(yaml.safe_dump(cfg))
    out = write_report(runs, out=tmp_path / "rep", echo=lambda line: None)
    trained = (out / "summary.md").read_text().split("## How each label trained")[1].split("\n## ")[0]
    rows = {ln.split("|")[1].strip(): [c.strip() for c in ln.strip().strip("|").split("|")]
            for ln in trained.splitlines() if ln.startswith("| `")}
    rest = len(configs) - 1
    mixed = rows[f"`{label}`"]
    assert mixed[2].startswith("runs differ: ") and "bf16-mixed (1 run)" in mixed[2], mixed
    assert f"32-true ({rest} run{'' if rest == 1 else 's'})" in mixed[2], mixed
    assert "1 epochs; 2 to 3 cycles (1 run)" in mixed[3] and f"1 epochs ({rest} run" in mixed[3], mixed
    other = next(lb for lb in ("resnet", "vit") if lb != label)
    assert rows[f"`{other}`"][2:4] == ["32-true", "1 epochs"]  # a label whose runs agree: one value, no counts
