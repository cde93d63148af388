"""The plan of a sweep: its tasks (one per backbone entry x training-set size x seed) and the config each trains with.

:class:`Task` (with its :class:`~vitbench.data.subsets.TrainSize`) is the one spelling of a task for the whole
sweep (``sweep.json``, the local runner, SLURM, ``status``) and for the report. A task's identity
is (sweep, label, size, seed): it fixes the run dir (``runs/<label>/<size tag>-s<seed>``) and the
W&B run id, so re-planning or resubmitting a sweep never starts a second run of the same task.

What the sweep sets in a task's config is one table (:data:`_SWEEP_KEYS`); the keys an experiment's
``train`` may not set (:data:`SWEEP_OWNED`) are read off it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Optional

from vitbench.config import DistillConfig, build_config
from vitbench.data.subsets import TrainSize
from vitbench.errors import VitbenchError

if TYPE_CHECKING:
    from vitbench.sweep.experiment import BackboneEntry, Experiment

MAIN_GROUP = "main"  # the job array of the undistilled tasks; each distilled label has its own


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Task:
    """One run of a sweep: a backbone entry (its label) trained at one size with one seed.

    A planned task (sweep.json) has every field. A run the report finds in a plain folder of run
    dirs has no plan, so no ``id``, ``config`` or place in a job array, and a point of the grid
    such a folder implies but lacks has no ``run_dir`` either.
    """

    label: str
    backbone: str
    preset: Optional[str]
    size: TrainSize
    seed: int
    run_dir: Optional[Path] = None
    id: Optional[int] = None
    teacher: Optional[int] = None  # the teacher's task id
    distillation: Optional[str] = None
    wandb_id: Optional[str] = None
    config: dict = field(default_factory=dict)  # the resolved TrainConfig
    # With resources.runs_per_device K, the element (pack) of its group's job array and its slot in it.
    array_index: int = 0
    slot: int = 0

    @property
    def name(self) -> str:
        return f"{self.label}/{self.size.tag}-s{self.seed}"

    @property
    def group(self) -> str:
        """The job array the task runs in."""
        return self.label if self.teacher is not None else MAIN_GROUP

    def to_dict(self) -> dict:
        """The task as sweep.json holds it."""
        return {"id": self.id, "name": self.name, "label": self.label, "backbone": self.backbone, "preset": self.preset,
                **self.size.to_dict(), "seed": self.seed, "teacher": self.teacher, "distillation": self.distillation,
                "group": self.group, "run_dir": str(self.run_dir), "wandb_id": self.wandb_id, "config": self.config,
                "array_index": self.array_index, "slot": self.slot}

    @classmethod
    def from_dict(cls, d: dict) -> Task:
        """A sweep.json task, checked field by field; ValueError says what is wrong.

        The checks that need the other tasks or the sweep dir are :func:`vitbench.sweep.sweepdir.load_sweep`'s.
        """
        for key, kind in (("name", str), ("label", str), ("backbone", str), ("preset", str), ("group", str),
                          ("run_dir", str), ("config", dict)):
            if not isinstance(d.get(key), kind):
                raise ValueError(f"'{key}' is missing or not a {'string' if kind is str else 'mapping'}")
        for key in ("id", "seed", "array_index", "slot"):
            value = d.get(key, 0 if key == "slot" else None)  # slot: absent in a plan from before packing existed
            if not _is_int(value) or value < 0:
                raise ValueError(f"'{key}' is {json.dumps(d.get(key))}, not an integer >= 0")
        teacher = d.get("teacher")
        if teacher is not None and not _is_int(teacher):
            raise ValueError(f"teacher {json.dumps(teacher)} is not an earlier task's id")
        if d.get("distillation") not in (None, "hard", "soft"):
            raise ValueError(f"'distillation' is {json.dumps(d.get('distillation'))}, not hard, soft or null")
        if not Path(d["run_dir"]).is_absolute():
            raise ValueError(f"its run dir {d['run_dir']} is not an absolute path")
        if d["config"].get("out") != d["run_dir"]:
            raise ValueError(f"config.out is not its run dir {d['run_dir']}")
        task = cls(d["label"], d["backbone"], d["preset"], TrainSize.from_dict(d), d["seed"], Path(d["run_dir"]),
                   d["id"], teacher, d.get("distillation"), d.get("wandb_id"), d["config"], d["array_index"],
                   d.get("slot", 0))
        # Both follow from the task; a file that disagrees was edited.
        for key, source in (("name", "label, size and seed"), ("group", "label and teacher")):
            if d[key] != getattr(task, key):
                expected = json.dumps(getattr(task, key))
                raise ValueError(f"'{key}' is {json.dumps(d[key])}, but its {source} make it {expected}")
        return task


def task_uid(sweep: str, label: str, preset: str, size: TrainSize, seed: int) -> str:
    return hashlib.sha1(f"{sweep}/{label}/{preset}/{size.tag}/{seed}".encode()).hexdigest()[:16]


def plan_tasks(exp: Experiment, sweep_dir: Path) -> list[Task]:
    """One task per (backbone entry, size, seed); teachers' tasks come first.

    Undistilled tasks get ids 0..M-1; a student gets a later id. With ``resources.runs_per_device``
    K, main task *i* runs in element ``i // K`` of the main job array, at slot ``i % K``; a student
    runs at its teacher's element and slot of its own array, so that student pack *i* holds exactly
    the students of main pack *i*'s teachers and ``--dependency=aftercorr`` on the main array starts
    it when those teachers have finished.
    """
    sweep_dir = Path(sweep_dir).resolve()
    sizes = ([TrainSize(fraction=f) for f in exp.fractions] if exp.fractions is not None
             else [TrainSize(samples_per_class=n) for n in exp.samples_per_class])
    tags = [s.tag for s in sizes]
    if len(set(tags)) < len(tags):
        raise VitbenchError(f"fractions {exp.fractions} name the same run dirs ({', '.join(tags)}): "
                            "use fractions that differ in 6 significant digits")
    k = exp.resources.runs_per_device
    teachers = [e for e in exp.backbones if e.teacher is None]
    students = [e for e in exp.backbones if e.teacher is not None]
    tasks: list[Task] = []
    index: dict[tuple, Task] = {}
    for e in teachers + students:
        for size in sizes:
            for seed in exp.seeds:
                teacher = index[(e.teacher, size, seed)] if e.teacher else None
                array_index, slot = divmod(len(tasks), k) if teacher is None else (teacher.array_index, teacher.slot)
                task = Task(e.label, e.name, e.preset, size, seed, sweep_dir / "runs" / e.label / f"{size.tag}-s{seed}",
                            len(tasks), teacher.id if teacher else None, e.distillation,
                            task_uid(exp.name, e.label, e.preset, size, seed), array_index=array_index, slot=slot)
                config = task_config(exp, e, task, str(teacher.run_dir) if teacher else None).to_dict()
                task = dataclasses.replace(task, config=config)
                index[(e.label, size, seed)] = task
                tasks.append(task)
    return tasks


class _Layer(NamedTuple):
    """What one task's sweep-set keys are computed from."""

    exp: Experiment
    entry: BackboneEntry
    task: Task
    teacher_dir: Optional[str]


# Every TrainConfig key the sweep sets on a task: (key, the experiment field it comes from, its value).
_SWEEP_KEYS: tuple[tuple[str, str, Callable[[_Layer], Any]], ...] = (
    ("out", "the sweep dir (--sweep-dir)", lambda x: str(x.task.run_dir)),
    ("label", "`backbones[].label`", lambda x: x.entry.label),
    ("seed", "`seeds`", lambda x: x.task.seed),
    ("sweep", "`name`", lambda x: x.exp.name),
    ("plugins", "`plugins`", lambda x: list(x.exp.plugins)),
    ("model.backbone", "`backbones[].name`", lambda x: x.entry.name),
    ("model.preset", "`backbones[].preset`", lambda x: x.entry.preset),
    ("model.overrides", "`backbones[].overrides`", lambda x: dict(x.entry.overrides)),
    ("data.dataset", "`dataset`", lambda x: x.exp.dataset),
    # Images per class are drawn from the whole training split.
    ("data.fraction", "`fractions`", lambda x: 1.0 if x.task.size.fraction is None else x.task.size.fraction),
    ("data.samples_per_class", "`samples_per_class`", lambda x: x.task.size.samples_per_class),
    ("budget", "`budget` and `backbones[].budget`", lambda x: dataclasses.asdict(x.entry.budget or x.exp.budget)),
    # A teacher is another entry's run of the same size and seed, never a backbone and checkpoint of its own.
    ("distill.teacher", "`backbones[].teacher`", lambda x: x.teacher_dir),
    ("distill.teacher_backbone", "`backbones[].teacher`", lambda x: None),
    ("distill.teacher_preset", "`backbones[].teacher`", lambda x: None),
    ("distill.teacher_checkpoint", "`backbones[].teacher`", lambda x: None),
    ("distill.kind", "`backbones[].distillation`", lambda x: x.entry.distillation or DistillConfig.kind),
    ("trainer.accelerator", "`resources.accelerator`", lambda x: x.exp.resources.accelerator),
    ("trainer.devices", "`resources.devices`", lambda x: x.exp.resources.devices),
    ("trainer.num_nodes", "`resources.nodes`", lambda x: x.exp.resources.nodes),
    ("wandb.id", "the task identity", lambda x: x.task.wandb_id),
    ("wandb.name", "the task identity", lambda x: f"{x.task.label}-{x.task.size.tag}-s{x.task.seed}"),
    ("wandb.group", "`name`", lambda x: x.exp.name),
    ("wandb.project", "`wandb.project`", lambda x: x.exp.wandb.project),
    ("wandb.mode", "`wandb.mode`", lambda x: x.exp.wandb.mode),
)
# The keys `train` and `backbones[].train` may not set, each with the experiment field that sets it.
SWEEP_OWNED = {key: source for key, source, _ in _SWEEP_KEYS}


def task_config(exp: Experiment, entry: BackboneEntry, task: Task, teacher_dir: str | None):
    """The resolved TrainConfig of one task: the experiment's `train`, the entry's, then what the sweep sets."""
    layer: dict = {}
    for key, _, value in _SWEEP_KEYS:
        *parents, leaf = key.split(".")
        section = layer
        for p in parents:
            section = section.setdefault(p, {})
        section[leaf] = value(_Layer(exp, entry, task, teacher_dir))
    r = exp.resources
    # A multi-process run needs DDP, unless the experiment chose its own strategy.
    if r.nodes * r.devices > 1 and not any("strategy" in t.get("trainer", {}) for t in (exp.train, entry.train)):
        layer["trainer"]["strategy"] = "ddp"
    return build_config(exp.train, entry.train, layer)
