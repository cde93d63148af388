"""Read a sweep dir: what was planned (``sweep.json``), what finished (``results.json``), what is missing.

A sweep dir is what ``vitbench sweep run`` writes: ``sweep.json`` (read by :func:`vitbench.sweep.sweepdir.load_sweep`)
and the run dirs it plans. A plain folder of run dirs also works: its runs are found by globbing
``**/results.json``, labelled ``backbone`` or ``backbone_distilled``, and the grid is the one those runs imply.

Every run also gets a convergence verdict (:mod:`vitbench.training.convergence`): the one its
results.json holds, or, for a run that predates it, one computed from its ``metrics.jsonl``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from vitbench import rundir
from vitbench.data.sources import Reference, references
from vitbench.data.subsets import TrainSize
from vitbench.errors import VitbenchError
from vitbench.rundir import RESULTS
from vitbench.sweep.plan import Task
from vitbench.sweep.sweepdir import SWEEP_JSON, load_sweep
from vitbench.training import convergence

# What the report needs of every results.json: checked for all runs before anything is written.
REPORT_KEYS = rundir.DONE_KEYS
# A results.json from before its "baseline" key: the CNN family was the baseline then (ResNet, the only CNN).
LEGACY_BASELINE_FAMILY = "cnn"


def default_label(backbone: str, teacher: Any) -> str:
    return f"{backbone}_distilled" if teacher else backbone


@dataclass
class Run:
    """A finished run: its task, its results.json and its convergence verdict (:func:`convergence.run_verdict`)."""

    task: Task
    results: dict
    verdict: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return bool(self.verdict.get("converged"))

    @property
    def baseline(self) -> bool:
        """Whether its backbone is a comparison baseline (``Backbone.baseline``, which training writes to
        results.json); the one place that reads a results.json older than that key."""
        value = self.results.get("baseline")
        return value if isinstance(value, bool) else self.results.get("family") == LEGACY_BASELINE_FAMILY

    @property
    def label(self) -> str:
        return self.task.label

    @property
    def size(self) -> TrainSize:
        return self.task.size


@dataclass
class Sweep:
    dir: Path
    name: str
    dataset: str
    project: str
    runs: list[Run]
    missing: list[Task]
    labels: list[str]  # display order: baselines first, then as planned
    family: dict[str, str]  # label -> family
    baseline: dict[str, bool]  # label -> whether its backbone is a comparison baseline (Run.baseline)
    backbone: dict[str, str]  # label -> backbone
    preset: dict[str, Optional[str]]
    distilled: dict[str, bool]
    sizes: list[TrainSize]  # ascending training-set size
    n_train: dict[TrainSize, Optional[int]]
    expected_seeds: dict[tuple, int] = field(default_factory=dict)  # (label, size) -> planned seeds
    has_sweep_json: bool = True
    references: tuple[Reference, ...] = ()  # published results on the dataset (other models, full training set)

    def size_header(self, size: TrainSize) -> str:
        n = self.n_train.get(size)
        return f"{n if n is not None else '?'} ({size})"

    def wandb_ids(self, label: str) -> list[str]:
        ids = [r.task.wandb_id or r.results.get("wandb_run_id") for r in self.runs if r.label == label]
        return [i for i in ids if i]


def _results_fix(path: Path) -> str:
    return f"restore {path}, or delete it and rerun that run (`vitbench sweep resume`), then rerun vitbench report"


def _read_results(path: Path) -> dict:
    return rundir.read_results(path.parent, REPORT_KEYS, _results_fix(path))


def _dataset_name(dataset) -> str:
    """A Hub id or built-in name as is; a local dataset path by its folder name."""
    text = str(dataset or "?")
    return Path(text).name if text.startswith(("/", ".", "~")) else text


def _registered(backbone: str):
    """Backbone class ``backbone`` where it is registered here (no model is built; a plugin is registered
    only if it is installed or loaded), else None."""
    from vitbench.backbones.registry import get_backbone

    try:
        return get_backbone(backbone)
    except VitbenchError:
        return None


def collect_sweep(sweep_dir: str | Path, report_dir: str | Path | None = None) -> Sweep:
    """Everything the report needs from ``sweep_dir``; raises VitbenchError if it is not a sweep."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise VitbenchError(f"{sweep_dir} is not a directory: pass the sweep dir that `vitbench sweep run` created")
    report_dir = Path(report_dir) if report_dir else sweep_dir / "report"
    has_plan = (sweep_dir / SWEEP_JSON).exists()
    runs: list[Run] = []
    name, project = None, "vitbench"
    if has_plan:
        plan = load_sweep(sweep_dir)
        name, planned = plan.name, list(plan.tasks)
        wandb = plan.experiment.get("wandb")
        if isinstance(wandb, dict) and isinstance(wandb.get("project"), str):
            project = wandb["project"]
        for task in planned:
            res = task.run_dir / RESULTS
            if res.exists():
                results = _read_results(res)
                runs.append(Run(task, results, convergence.run_verdict(task.run_dir, results)))
    else:
        planned = []
        for res in sorted(sweep_dir.rglob(RESULTS)):
            if report_dir in res.parents:
                continue
            r = rundir.load_results(res.parent, _results_fix(res))
            if not isinstance(r, dict) or "test_acc" not in r or "backbone" not in r:
                continue  # not a vitbench run's file
            rundir.check_results(r, res, REPORT_KEYS, _results_fix(res))
            task = Task(label=r.get("label") or default_label(r["backbone"], r.get("teacher")), backbone=r["backbone"],
                        preset=r.get("preset"), size=TrainSize.of_run(r.get("fraction"), r.get("samples_per_class")),
                        seed=int(r.get("seed", 0)), run_dir=res.parent, wandb_id=r.get("wandb_run_id"))
            runs.append(Run(task, r, convergence.run_verdict(res.parent, r)))
        if not runs:
            raise VitbenchError(
                f"{sweep_dir} is not a sweep: it has no {SWEEP_JSON} and no run dirs with {RESULTS}; "
                "pass the dir `vitbench sweep run` created, or a folder of finished `vitbench train` runs"
            )
        # The implied grid: every label at every size and seed seen anywhere.
        seen_labels = list(dict.fromkeys(r.label for r in runs))
        seen_sizes = list(dict.fromkeys(r.size for r in runs))
        seen_seeds = sorted({r.task.seed for r in runs})
        first = {r.label: r.task for r in runs}
        for label in seen_labels:
            for size in seen_sizes:
                for seed in seen_seeds:
                    planned.append(Task(label, first[label].backbone, first[label].preset, size, seed))
    if not runs:
        raise VitbenchError(
            f"no run of sweep {sweep_dir} has finished (no {RESULTS} yet): run `vitbench sweep run` or wait for it, "
            "then rerun vitbench report"
        )

    done = {(r.label, r.size, r.task.seed) for r in runs}
    missing = [t for t in planned if (t.label, t.size, t.seed) not in done]

    # labels: baselines first, then in planned order
    family: dict[str, str] = {}
    baseline: dict[str, bool] = {}
    backbone: dict[str, str] = {}
    preset: dict[str, Optional[str]] = {}
    distilled: dict[str, bool] = {}
    for t in planned + [r.task for r in runs]:
        backbone.setdefault(t.label, t.backbone)
        preset.setdefault(t.label, t.preset)
        distilled.setdefault(t.label, t.teacher is not None)
    for r in runs:
        family.setdefault(r.label, r.results.get("family") or "other")
        baseline.setdefault(r.label, r.baseline)
        preset[r.label] = preset[r.label] or r.results.get("preset")
        distilled[r.label] = distilled[r.label] or bool(r.results.get("teacher"))
    order = list(dict.fromkeys([t.label for t in planned] + [r.label for r in runs]))
    for label in order:
        if label not in family:  # planned, no finished run yet: what its backbone class declares
            cls = _registered(backbone[label])
            family[label], baseline[label] = (cls.family, cls.baseline) if cls else ("other", False)
    labels = sorted(order, key=lambda lb: (not baseline[lb], order.index(lb)))

    n_by_size: dict[TrainSize, list[int]] = {}
    for r in runs:
        if r.results.get("n_train") is not None:
            n_by_size.setdefault(r.size, []).append(int(r.results["n_train"]))
    all_sizes = set(t.size for t in planned) | set(r.size for r in runs)
    n_train = {s: (int(sorted(n_by_size[s])[len(n_by_size[s]) // 2]) if s in n_by_size else None) for s in all_sizes}
    sizes = sorted(all_sizes, key=lambda s: (n_train[s] if n_train[s] is not None else math.inf, s))

    expected: dict[tuple, int] = {}
    for t in planned:
        expected[(t.label, t.size)] = expected.get((t.label, t.size), 0) + 1

    first_results = runs[0].results
    return Sweep(
        dir=sweep_dir, name=name or first_results.get("sweep") or sweep_dir.resolve().name,
        dataset=_dataset_name(first_results.get("dataset")), project=project,
        runs=runs, missing=missing, labels=labels, family=family, baseline=baseline, backbone=backbone, preset=preset,
        distilled=distilled, sizes=sizes, n_train=n_train, expected_seeds=expected,
        has_sweep_json=has_plan, references=references(str(first_results.get("dataset") or "")),
    )
