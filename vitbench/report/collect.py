"""Read a sweep dir: what was planned (``sweep.json``), what finished (``results.json``), what is missing.

A sweep dir is what ``vitbench sweep run`` writes (``sweep.json`` + ``runs/<label>/f<fraction>-s<seed>/``);
a plain folder of run dirs also works: its runs are found by globbing ``**/results.json``, labelled
``backbone`` or ``backbone_distilled``, and the grid is the one those runs imply.

Every run also gets a convergence verdict (:mod:`vitbench.training.convergence`): the one its
results.json holds, or, for a run that predates it, one computed from its ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from vitbench import rundir
from vitbench.data.sources import Reference, references
from vitbench.errors import VitbenchError
from vitbench.rundir import RESULTS

SWEEP_JSON, EXPERIMENT_YAML = "sweep.json", "experiment.yaml"
# What the report needs of every results.json: checked for all runs before anything is written.
REPORT_KEYS = rundir.DONE_KEYS

SizeKey = tuple  # ("spc", 5) or ("fraction", 0.1)


def size_key(fraction: Any, samples_per_class: Any) -> SizeKey:
    if samples_per_class is not None:
        return ("spc", int(samples_per_class))
    return ("fraction", float(fraction if fraction is not None else 1.0))


def size_text(key: SizeKey) -> str:
    return f"{key[1]}/class" if key[0] == "spc" else f"f={key[1]:g}"


def default_label(backbone: str, teacher: Any) -> str:
    return f"{backbone}_distilled" if teacher else backbone


@dataclass
class Task:
    """One planned run (a sweep.json task, or a point of the implied grid)."""

    label: str
    backbone: str
    preset: Optional[str]
    size: SizeKey
    seed: int
    run_dir: Optional[Path] = None
    id: Optional[str] = None
    teacher: Optional[str] = None
    wandb_id: Optional[str] = None


@dataclass
class Run:
    """A finished run: its task, its results.json and its convergence verdict (see :func:`verdict_of`)."""

    task: Task
    results: dict
    verdict: dict = field(default_factory=dict)

    @property
    def converged(self) -> bool:
        return bool(self.verdict.get("converged"))

    @property
    def label(self) -> str:
        return self.task.label

    @property
    def size(self) -> SizeKey:
        return self.task.size


@dataclass
class Sweep:
    dir: Path
    name: str
    dataset: str
    project: str
    runs: list[Run]
    missing: list[Task]
    labels: list[str]  # display order: CNN baselines first, then as planned
    family: dict[str, str]  # label -> family
    backbone: dict[str, str]  # label -> backbone
    preset: dict[str, Optional[str]]
    distilled: dict[str, bool]
    sizes: list[SizeKey]  # ascending training-set size
    n_train: dict[SizeKey, Optional[int]]
    expected_seeds: dict[tuple, int] = field(default_factory=dict)  # (label, size) -> planned seeds
    has_sweep_json: bool = True
    references: tuple[Reference, ...] = ()  # published results on the dataset (other models, full training set)

    def size_header(self, key: SizeKey) -> str:
        n = self.n_train.get(key)
        return f"{n if n is not None else '?'} ({size_text(key)})"

    def wandb_ids(self, label: str) -> list[str]:
        ids = [r.task.wandb_id or r.results.get("wandb_run_id") for r in self.runs if r.label == label]
        return [i for i in ids if i]


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise VitbenchError(f"cannot read {what} {path} ({e}): fix or delete it, then rerun vitbench report")


def verdict_of(results: dict, run_dir: Optional[Path]) -> dict:
    """The run's convergence verdict (``converged``, ``gain``, ``rule``, ``validations``, ``source``),
    read as ``vitbench sweep status`` reads it: :func:`vitbench.rundir.convergence_verdict`."""
    return rundir.convergence_verdict(run_dir, results)


def _results_fix(path: Path) -> str:
    return f"restore {path}, or delete it and rerun that run (`vitbench sweep resume`), then rerun vitbench report"


def _read_results(path: Path) -> dict:
    return rundir.read_results(path.parent, REPORT_KEYS, _results_fix(path))


def _task_from_json(t: dict, sweep_dir: Path) -> Task:
    run_dir = t.get("run_dir")
    if run_dir is not None:
        run_dir = Path(run_dir)
        run_dir = run_dir if run_dir.is_absolute() else sweep_dir / run_dir
    teacher = t.get("teacher")
    backbone = t.get("backbone") or (t.get("config") or {}).get("model", {}).get("backbone") or "?"
    return Task(
        label=t.get("label") or default_label(backbone, teacher),
        backbone=backbone, preset=t.get("preset"),
        size=size_key(t.get("fraction"), t.get("samples_per_class")), seed=int(t.get("seed", 0)),
        run_dir=run_dir, id=t.get("id"), teacher=teacher, wandb_id=t.get("wandb_id"),
    )


def _project(sweep_dir: Path, tasks: list[dict]) -> str:
    exp_path = sweep_dir / EXPERIMENT_YAML
    candidates: list = []
    if exp_path.exists():
        try:
            exp = yaml.safe_load(exp_path.read_text()) or {}
        except yaml.YAMLError:
            exp = {}
        if isinstance(exp, dict):
            for section in (exp, exp.get("train"), exp.get("defaults"), exp.get("base"), exp.get("config")):
                if isinstance(section, dict) and isinstance(section.get("wandb"), dict):
                    candidates.append(section["wandb"].get("project"))
    for t in tasks:
        candidates.append(((t.get("config") or {}).get("wandb") or {}).get("project"))
    return next((c for c in candidates if c), "vitbench")


def _dataset_name(dataset) -> str:
    """A Hub id or built-in name as is; a local dataset path by its folder name."""
    text = str(dataset or "?")
    return Path(text).name if text.startswith(("/", ".", "~")) else text


def load_sweep(sweep_dir: str | Path, report_dir: str | Path | None = None) -> Sweep:
    """Everything the report needs from ``sweep_dir``; raises VitbenchError if it is not a sweep."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise VitbenchError(f"{sweep_dir} is not a directory: pass the sweep dir that `vitbench sweep run` created")
    report_dir = Path(report_dir) if report_dir else sweep_dir / "report"
    spec_path = sweep_dir / SWEEP_JSON
    runs: list[Run] = []
    planned: list[Task] = []
    name = None
    raw_tasks: list[dict] = []
    if spec_path.exists():
        spec = _read_json(spec_path, "sweep file")
        if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list):
            raise VitbenchError(f"{spec_path} has no 'tasks' list: it is not a vitbench sweep file; rerun `vitbench sweep run`")
        name = spec.get("name")
        raw_tasks = [t for t in spec["tasks"] if isinstance(t, dict)]
        for i, t in enumerate(raw_tasks):
            try:
                task = _task_from_json(t, sweep_dir)
            except (TypeError, ValueError, AttributeError) as e:
                raise VitbenchError(f"{spec_path}: task {i} is not a task vitbench wrote ({type(e).__name__}: {e}): "
                                    "restore the file, then rerun vitbench report") from None
            planned.append(task)
            res = task.run_dir / RESULTS if task.run_dir else None
            if res is not None and res.exists():
                results = _read_results(res)
                runs.append(Run(task, results, verdict_of(results, task.run_dir)))
    else:
        for res in sorted(sweep_dir.rglob(RESULTS)):
            if report_dir in res.parents:
                continue
            r = _read_json(res, "results file")
            if not isinstance(r, dict) or "test_acc" not in r or "backbone" not in r:
                continue  # not a vitbench run's file
            rundir.check_results(r, res, REPORT_KEYS, _results_fix(res))
            task = Task(label=r.get("label") or default_label(r["backbone"], r.get("teacher")), backbone=r["backbone"],
                        preset=r.get("preset"), size=size_key(r.get("fraction"), r.get("samples_per_class")),
                        seed=int(r.get("seed", 0)), run_dir=res.parent, teacher=r.get("teacher"),
                        wandb_id=r.get("wandb_run_id"))
            runs.append(Run(task, r, verdict_of(r, res.parent)))
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
                    t = first[label]
                    planned.append(Task(label, t.backbone, t.preset, size, seed, teacher=t.teacher))
    if not runs:
        raise VitbenchError(
            f"no run of sweep {sweep_dir} has finished (no {RESULTS} yet): run `vitbench sweep run` or wait for it, then rerun vitbench report"
        )

    done = {(r.label, r.size, r.task.seed) for r in runs}
    missing = [t for t in planned if (t.label, t.size, t.seed) not in done]

    # labels: CNN baselines first, then in planned order
    family: dict[str, str] = {}
    backbone: dict[str, str] = {}
    preset: dict[str, Optional[str]] = {}
    distilled: dict[str, bool] = {}
    for t in planned + [r.task for r in runs]:
        backbone.setdefault(t.label, t.backbone)
        preset.setdefault(t.label, t.preset)
        distilled.setdefault(t.label, bool(t.teacher))
    for r in runs:
        family.setdefault(r.label, r.results.get("family") or "other")
        preset[r.label] = preset[r.label] or r.results.get("preset")
        distilled[r.label] = distilled[r.label] or bool(r.results.get("teacher"))
    order = list(dict.fromkeys([t.label for t in planned] + [r.label for r in runs]))
    for label in order:
        family.setdefault(label, "other")
    labels = sorted(order, key=lambda lb: (family[lb] != "cnn", order.index(lb)))

    n_by_size: dict[SizeKey, list[int]] = {}
    for r in runs:
        if r.results.get("n_train") is not None:
            n_by_size.setdefault(r.size, []).append(int(r.results["n_train"]))
    all_sizes = set(t.size for t in planned) | set(r.size for r in runs)
    n_train = {s: (int(sorted(n_by_size[s])[len(n_by_size[s]) // 2]) if s in n_by_size else None) for s in all_sizes}
    sizes = sorted(all_sizes, key=lambda s: (n_train[s] if n_train[s] is not None else math.inf, s[0], s[1]))

    expected: dict[tuple, int] = {}
    for t in planned:
        expected[(t.label, t.size)] = expected.get((t.label, t.size), 0) + 1

    first_results = runs[0].results
    return Sweep(
        dir=sweep_dir, name=name or first_results.get("sweep") or sweep_dir.resolve().name,
        dataset=_dataset_name(first_results.get("dataset")), project=_project(sweep_dir, raw_tasks),
        runs=runs, missing=missing, labels=labels, family=family, backbone=backbone, preset=preset,
        distilled=distilled, sizes=sizes, n_train=n_train, expected_seeds=expected,
        has_sweep_json=spec_path.exists(), references=references(str(first_results.get("dataset") or "")),
    )
