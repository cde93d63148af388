"""Experiment files: a strict YAML schema, and the plan (one task per backbone x size x seed).

An experiment names a dataset, the training-set sizes (``fractions`` or
``samples_per_class``), the ``seeds``, one ``budget`` and the ``backbones``;
``train`` holds any other :class:`~vitbench.config.TrainConfig` keys, applied
to every task; a backbone entry's own ``train`` and ``budget`` (its family's
recipe) apply over them to that entry's tasks. Everything is validated before anything is written.

A task's identity is (sweep, label, size, seed), a label naming one backbone
entry (so its backbone and preset): it fixes the run dir
(``runs/<label>/f<fraction>-s<seed>``) and the W&B run id, so re-planning or
resubmitting a sweep never starts a second run of the same task.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from vitbench.config import (BudgetConfig, DataConfig, build_config, check_dataset, check_distillation_head,
                             check_value, from_dict, load_yaml)
from vitbench.errors import VitbenchError

MAIN_GROUP = "main"
_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# What sbatch accepts for --mem (a size, default unit MB) and --time.
_SLURM_MEM = re.compile(r"^[0-9]+[KMGTkmgt]?$")
_SLURM_TIME = re.compile(r"^(?:[0-9]+(?::[0-9]{1,2}){0,2}|[0-9]+-[0-9]{1,2}(?::[0-9]{1,2}){0,2})$")
SLURM_TIME_FORMATS = "MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"


def check_slurm_mem(value: str | None, where: str) -> None:
    """``value`` is a memory size sbatch reads (32G, 4000M, 500K, 1T, or plain MB)."""
    if value is not None and not _SLURM_MEM.fullmatch(value):
        raise VitbenchError(
            f"{where} {value!r} is not a SLURM memory size: write an integer with an optional unit K, M, G or T, "
            f"e.g. {re.split(r'[ .]', where)[-1]}: 32G (no unit means MB)"
        )


def check_slurm_time(value: str | None, where: str) -> None:
    """``value`` is a time limit sbatch reads."""
    if value is not None and not (_SLURM_TIME.fullmatch(value) or value.upper() in ("INFINITE", "UNLIMITED")):
        raise VitbenchError(
            f"{where} {value!r} is not a SLURM time limit: write {SLURM_TIME_FORMATS}, "
            f"e.g. {re.split(r'[ .]', where)[-1]}: \"04:00:00\" (quoted)"
        )


@dataclass
class BackboneEntry:
    name: str = ""
    preset: Optional[str] = None  # None: the backbone's default preset (micro for the built-ins)
    label: Optional[str] = None
    overrides: dict = field(default_factory=dict)
    teacher: Optional[str] = None
    distillation: Optional[Literal["hard", "soft"]] = None
    # A per-family recipe: TrainConfig keys over the experiment's `train`, and a budget instead of its `budget`.
    train: dict = field(default_factory=dict)
    budget: Optional[BudgetConfig] = None


@dataclass
class Resources:
    """Per task: ``nodes`` x ``devices`` processes (one per GPU); feeds sbatch and the Trainer.

    ``runs_per_device`` packs that many single-device tasks into one array
    element (one slot of the local runner), all running at once on its device.
    """

    nodes: int = 1
    devices: int = 1
    runs_per_device: int = 1
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    cpus_per_task: Optional[int] = None
    mem: Optional[str] = None
    time: Optional[str] = None


@dataclass
class WandbSpec:
    project: str = "vitbench"
    mode: Literal["offline", "online", "disabled", "auto"] = "auto"


@dataclass
class LocalSpec:
    parallel: int = 1


@dataclass
class Experiment:
    name: str = ""
    dataset: str = "fashion_mnist"
    fractions: Optional[list] = None
    samples_per_class: Optional[list] = None
    seeds: list = field(default_factory=lambda: [0])
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    backbones: list = field(default_factory=list)
    train: dict = field(default_factory=dict)
    resources: Resources = field(default_factory=Resources)
    wandb: WandbSpec = field(default_factory=WandbSpec)
    local: LocalSpec = field(default_factory=LocalSpec)
    plugins: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# Keys of TrainConfig the sweep sets per task: the experiment's `train` may not set them too.
SWEEP_OWNED = {
    "out": "the sweep dir (--sweep-dir)", "label": "`backbones[].label`", "seed": "`seeds`", "sweep": "`name`", "plugins": "`plugins`",
    "model.backbone": "`backbones[].name`", "model.preset": "`backbones[].preset`",
    "model.overrides": "`backbones[].overrides`", "data.dataset": "`dataset`",
    "data.fraction": "`fractions`", "data.samples_per_class": "`samples_per_class`",
    "budget": "`budget`", "distill.teacher": "`backbones[].teacher`",
    "distill.teacher_backbone": "`backbones[].teacher`", "distill.teacher_preset": "`backbones[].teacher`",
    "distill.teacher_checkpoint": "`backbones[].teacher`", "distill.kind": "`backbones[].distillation`",
    "trainer.accelerator": "`resources.accelerator`", "trainer.devices": "`resources.devices`",
    "trainer.num_nodes": "`resources.nodes`", "wandb.id": "the task identity", "wandb.group": "`name`",
    "wandb.project": "`wandb.project`", "wandb.mode": "`wandb.mode`",
}


def _number_list(values, key: str, kind: type) -> list:
    if not isinstance(values, list) or not values:
        raise VitbenchError(f"{key} must be a non-empty list, e.g. {key}: [0.1, 0.5, 1.0]" if kind is float
                            else f"{key} must be a non-empty list of integers, e.g. {key}: [10, 100]")
    out = []
    for v in values:
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              and (kind is float or float(v).is_integer()))
        if not ok:
            raise VitbenchError(f"{key}: {v!r} is not a number: write e.g. {key}: [0.1, 0.5, 1.0]")
        out.append(float(v) if kind is float else int(v))
    if len(set(out)) != len(out):
        raise VitbenchError(f"{key} {values} lists a value twice: keep each once")
    return out


def parse_experiment(data: dict, source: str = "experiment") -> Experiment:
    """Validate ``data`` (a parsed experiment file) into an :class:`Experiment`."""
    exp = from_dict(Experiment, data)
    if not exp.name or not _LABEL_RE.fullmatch(exp.name):
        raise VitbenchError(f"{source}: `name` must be set to a short name of letters, digits, '-', '_' or '.', got {exp.name!r}")
    if (exp.fractions is None) == (exp.samples_per_class is None):
        raise VitbenchError(f"{source}: set exactly one of `fractions` (e.g. [0.1, 1.0]) or `samples_per_class` (e.g. [10, 100])")
    if exp.fractions is not None:
        fractions = _number_list(exp.fractions, "fractions", float)
        exp.fractions = [check_value(DataConfig, "fraction", f, "fractions") for f in fractions]
    else:
        sizes = _number_list(exp.samples_per_class, "samples_per_class", int)
        exp.samples_per_class = [check_value(DataConfig, "samples_per_class", n, "samples_per_class") for n in sizes]
    exp.seeds = _number_list(exp.seeds, "seeds", int)
    check_dataset(exp.dataset, "dataset")
    if exp.local.parallel < 1:
        raise VitbenchError("local.parallel must be >= 1")
    r = exp.resources
    if r.nodes < 1 or r.devices < 1:
        raise VitbenchError("resources.nodes and resources.devices must be >= 1")
    if r.cpus_per_task is not None and r.cpus_per_task < 1:
        raise VitbenchError("resources.cpus_per_task must be >= 1")
    check_slurm_mem(r.mem, "resources.mem")
    check_slurm_time(r.time, "resources.time")
    if r.runs_per_device < 1:
        raise VitbenchError(f"resources.runs_per_device must be >= 1, got {r.runs_per_device}: the runs that share one device, e.g. 2")
    if r.runs_per_device > 1 and r.nodes * r.devices > 1:
        raise VitbenchError(
            f"resources.runs_per_device {r.runs_per_device} packs single-device runs, but each run here spans "
            f"{r.nodes * r.devices} devices (resources.nodes x devices): set runs_per_device: 1, or devices: 1 and nodes: 1"
        )
    _check_train(exp.train, "train")
    _parse_backbones(exp)
    return exp


def _parse_backbones(exp: Experiment) -> None:
    from vitbench.backbones import create_backbone, load_plugins

    if not isinstance(exp.backbones, list) or not exp.backbones:
        raise VitbenchError("backbones must be a non-empty list, e.g. backbones: [{name: resnet}, {name: vit}]")
    load_plugins(exp.plugins)
    entries = []
    for i, item in enumerate(exp.backbones):
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict):
            raise VitbenchError(f"backbones[{i}] must be a mapping like {{name: vit, preset: micro}}, got {item!r}")
        e = from_dict(BackboneEntry, item, f"backbones[{i}]")
        if not e.name:
            raise VitbenchError(f"backbones[{i}] has no `name`: one of the registered backbones (vitbench backbones)")
        if not isinstance(e.overrides, dict) or not all(isinstance(k, str) for k in e.overrides):
            raise VitbenchError(f"backbones[{i}].overrides must map constructor arguments to values, e.g. overrides: {{depth: 6}}")
        try:  # unknown backbone, preset or override -> VitbenchError, now rather than on a compute node
            e.preset = create_backbone(e.name, e.preset, **e.overrides).preset
        except VitbenchError as err:
            raise VitbenchError(f"backbones[{i}] ({e.name}): {err}") from None
        e.label = e.label or e.name
        _check_train(e.train, f"backbones[{i}].train")
        if not _LABEL_RE.fullmatch(e.label) or e.label == MAIN_GROUP:
            raise VitbenchError(f"backbones[{i}]: label {e.label!r} must be letters, digits, '-', '_' or '.' and not '{MAIN_GROUP}'")
        entries.append(e)
    labels = [e.label for e in entries]
    for label in labels:
        if labels.count(label) > 1:
            raise VitbenchError(f"backbone label '{label}' is used twice: give one entry another `label`, e.g. label: {label}_distilled")
    by_label = {e.label: e for e in entries}
    for e in entries:
        if e.distillation is not None and e.teacher is None:
            raise VitbenchError(
                f"backbone '{e.label}' sets distillation: {e.distillation} but no teacher: add teacher: LABEL "
                f"(one of {', '.join(l for l in labels if l != e.label)})"
            )
        if e.teacher is None:
            continue
        if e.teacher not in by_label or e.teacher == e.label:
            import difflib

            close = difflib.get_close_matches(e.teacher, [l for l in labels if l != e.label], n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"labels are {', '.join(labels)}"
            raise VitbenchError(f"backbone '{e.label}' has teacher '{e.teacher}', which is not a label of this sweep: {hint}")
        if by_label[e.teacher].teacher is not None:
            raise VitbenchError(f"teacher '{e.teacher}' of '{e.label}' is itself distilled: a teacher must be trained without a teacher")
        check_distillation_head(e.name)
        e.distillation = e.distillation or "hard"
    exp.backbones = entries


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    keys = []
    for k, v in d.items():
        path = f"{prefix}{k}"
        keys.append(path)
        if isinstance(v, dict) and path != "model.overrides":
            keys += _flat_keys(v, path + ".")
    return keys


def _check_train(train: dict, where: str) -> None:
    if not isinstance(train, dict):
        raise VitbenchError(f"{where} must be a mapping of TrainConfig keys, e.g. {where}: {{optim: {{lr: 0.001}}}}")
    try:
        build_config(train)  # unknown keys -> error with did-you-mean
    except VitbenchError as err:
        raise VitbenchError(f"{where}: {err}") from None
    for key in _flat_keys(train):
        if key in SWEEP_OWNED:
            raise VitbenchError(f"{where}.{key} is set by the sweep from {SWEEP_OWNED[key]}: remove it from `{where}`")


def load_experiment(path: str | Path) -> tuple[Experiment, str]:
    """Parse and validate an experiment file; returns it and its text."""
    path = Path(path)
    data = load_yaml(path)
    return parse_experiment(data, str(path)), path.read_text()


# ------------------------------------------------------------------- planning

def size_tag(fraction: float | None, samples_per_class: int | None) -> str:
    return f"spc{samples_per_class}" if samples_per_class is not None else f"f{fraction:g}"


def task_uid(sweep: str, label: str, preset: str, size: str, seed: int) -> str:
    return hashlib.sha1(f"{sweep}/{label}/{preset}/{size}/{seed}".encode()).hexdigest()[:16]


def plan_tasks(exp: Experiment, sweep_dir: Path) -> list[dict]:
    """One task dict per (backbone entry, size, seed); teachers' tasks come first.

    Undistilled tasks get ids 0..M-1; a student gets a later id. With
    ``resources.runs_per_device`` K, main task *i* runs in element ``i // K``
    of the main job array, at slot ``i % K``; a student runs at its teacher's
    element and slot of its own array (see :func:`assign_packs`).
    """
    sweep_dir = Path(sweep_dir).resolve()
    sizes = [(f, None) for f in exp.fractions] if exp.fractions is not None else [(None, n) for n in exp.samples_per_class]
    tags = [size_tag(f, n) for f, n in sizes]
    if len(set(tags)) < len(tags):
        raise VitbenchError(f"fractions {exp.fractions} name the same run dirs ({', '.join(tags)}): use fractions that differ in 6 significant digits")
    teachers = [e for e in exp.backbones if e.teacher is None]
    students = [e for e in exp.backbones if e.teacher is not None]
    tasks: list[dict] = []
    index: dict[tuple, int] = {}
    for entries in (teachers, students):
        for e in entries:
            for fraction, spc in sizes:
                for seed in exp.seeds:
                    tag = size_tag(fraction, spc)
                    tid = len(tasks)
                    index[(e.label, tag, seed)] = tid
                    teacher_id = index[(e.teacher, tag, seed)] if e.teacher else None
                    run_dir = sweep_dir / "runs" / e.label / f"{tag}-s{seed}"
                    task = {
                        "id": tid, "name": f"{e.label}/{tag}-s{seed}", "label": e.label, "backbone": e.name,
                        "preset": e.preset, "fraction": fraction, "samples_per_class": spc, "seed": seed,
                        "teacher": teacher_id, "distillation": e.distillation,
                        "group": e.label if e.teacher else MAIN_GROUP,
                        "run_dir": str(run_dir), "wandb_id": task_uid(exp.name, e.label, e.preset, tag, seed),
                    }
                    teacher_dir = tasks[teacher_id]["run_dir"] if teacher_id is not None else None
                    task["config"] = task_config(exp, e, task, teacher_dir).to_dict()
                    tasks.append(task)
    return assign_packs(tasks, exp.resources.runs_per_device)


def assign_packs(tasks: list[dict], runs_per_device: int) -> list[dict]:
    """Set each task's ``array_index`` (its pack) and ``slot`` in the pack, in place.

    Student pack *i* holds exactly the students of main pack *i*'s teachers, at
    their teachers' slots, so ``--dependency=aftercorr`` on the main array
    starts it when those teachers have finished.
    """
    for t in tasks:
        if t["teacher"] is None:
            t["array_index"], t["slot"] = divmod(t["id"], runs_per_device)
        else:
            teacher = tasks[t["teacher"]]  # teachers come first, so already placed
            t["array_index"], t["slot"] = teacher["array_index"], teacher["slot"]
    return tasks


def task_config(exp: Experiment, entry: BackboneEntry, task: dict, teacher_dir: str | None):
    """The resolved TrainConfig of one task: the sweep sets each of these keys, nothing else does."""
    r = exp.resources
    world = r.nodes * r.devices
    trainer = {"accelerator": r.accelerator, "devices": r.devices, "num_nodes": r.nodes}
    if world > 1 and "strategy" not in exp.train.get("trainer", {}):
        trainer["strategy"] = "ddp"
    data = {"dataset": exp.dataset}
    if task["samples_per_class"] is not None:
        data["samples_per_class"] = task["samples_per_class"]
    else:
        data["fraction"] = task["fraction"]
    layer = {
        "out": task["run_dir"], "label": entry.label, "seed": task["seed"], "sweep": exp.name, "plugins": list(exp.plugins),
        "model": {"backbone": entry.name, "preset": entry.preset, "overrides": dict(entry.overrides)},
        "data": data, "budget": dataclasses.asdict(entry.budget or exp.budget),
        "trainer": trainer,
        "wandb": {"id": task["wandb_id"], "group": exp.name, "project": exp.wandb.project, "mode": exp.wandb.mode,
                  "name": f"{entry.label}-{task['name'].split('/', 1)[1]}"},
    }
    if teacher_dir is not None:
        layer["distill"] = {"teacher": teacher_dir, "kind": entry.distillation}
    return build_config(exp.train, entry.train, layer)
