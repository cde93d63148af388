"""Experiment files: a strict YAML schema (the plan it makes is :mod:`vitbench.sweep.plan`).

An experiment names a dataset, the training-set sizes (``fractions`` or
``samples_per_class``), the ``seeds``, one ``budget`` and the ``backbones``;
``train`` holds any other :class:`~vitbench.config.TrainConfig` keys, applied
to every task; a backbone entry's own ``train`` and ``budget`` (its family's
recipe) apply over them to that entry's tasks. Everything is validated before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from vitbench.config import (
    BudgetConfig,
    DataConfig,
    TrainConfig,
    WandbConfig,
    build_config,
    check_budget,
    check_dataset,
    check_distillation_head,
    check_value,
    from_dict,
    keys_of,
    load_yaml,
    setting,
)
from vitbench.errors import VitbenchError
from vitbench.sweep.plan import MAIN_GROUP, SWEEP_OWNED

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

    nodes: int = setting(1, "nodes per task (sbatch --nodes, the Trainer's num_nodes)", ge=1)
    devices: int = setting(1, "devices per node, one process each (the Trainer's devices)", ge=1)
    runs_per_device: int = setting(1, "the runs that share one device, e.g. 2", ge=1)
    accelerator: Literal["auto", "cpu", "gpu"] = setting("auto", "the Trainer's accelerator (cpu: no GPUs are "
                                                         "asked of SLURM)")
    cpus_per_task: Optional[int] = setting(None, "sbatch --cpus-per-task (default: the profile's)", ge=1)
    mem: Optional[str] = setting(None, "sbatch --mem, memory per node (default: the profile's mem_per_cpu)",
                                 check=check_slurm_mem)
    time: Optional[str] = setting(None, "sbatch --time, per array element (default: the profile's)",
                                  check=check_slurm_time)


# The keys a sweep sets for all its runs: declared once, in WandbConfig.
WandbSpec = keys_of(WandbConfig, "project", "mode", name="WandbSpec",
                    doc="The W&B project and mode of every run of the sweep (the keys of WandbConfig).")


@dataclass
class LocalSpec:
    parallel: int = setting(1, "slots the local runner keeps busy, each running resources.runs_per_device "
                            "tasks at once", ge=1)


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


def _number_list(values, key: str, kind: type, example: str) -> list:
    what = "numbers" if kind is float else "integers"
    if not isinstance(values, list) or not values:
        raise VitbenchError(f"{key} must be a non-empty list of {what}, e.g. {key}: {example}")
    out = []
    for v in values:
        ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
              and (kind is float or float(v).is_integer()))
        if not ok:
            raise VitbenchError(f"{key}: {v!r} is not {'a number' if kind is float else 'an integer'}: "
                                f"write e.g. {key}: {example}")
        out.append(float(v) if kind is float else int(v))
    if len(set(out)) != len(out):
        raise VitbenchError(f"{key} {values} lists a value twice: keep each once")
    return out


def parse_experiment(data: dict, source: str = "experiment") -> Experiment:
    """Validate ``data`` (a parsed experiment file) into an :class:`Experiment`."""
    exp = from_dict(Experiment, data)
    if not exp.name or not _LABEL_RE.fullmatch(exp.name):
        raise VitbenchError(
            f"{source}: `name` must be set to a short name of letters, digits, '-', '_' or '.', got {exp.name!r}"
        )
    if (exp.fractions is None) == (exp.samples_per_class is None):
        raise VitbenchError(
            f"{source}: set exactly one of `fractions` (e.g. [0.1, 1.0]) or `samples_per_class` (e.g. [10, 100])"
        )
    # Each list's values are the keys they become in a run's config: their bounds are declared there.
    if exp.fractions is not None:
        fractions = _number_list(exp.fractions, "fractions", float, "[0.1, 0.5, 1.0]")
        exp.fractions = [check_value(DataConfig, "fraction", f, "fractions") for f in fractions]
    else:
        sizes = _number_list(exp.samples_per_class, "samples_per_class", int, "[10, 100]")
        exp.samples_per_class = [check_value(DataConfig, "samples_per_class", n, "samples_per_class") for n in sizes]
    seeds = _number_list(exp.seeds, "seeds", int, "[0, 1, 2]")
    exp.seeds = [check_value(TrainConfig, "seed", s, "seeds") for s in seeds]
    check_dataset(exp.dataset, "dataset")
    check_budget(exp.budget)
    r = exp.resources  # each key's bounds and format were checked by from_dict, from its setting()
    if r.runs_per_device > 1 and r.nodes * r.devices > 1:
        raise VitbenchError(
            f"resources.runs_per_device {r.runs_per_device} packs single-device runs, but each run here spans "
            f"{r.nodes * r.devices} devices (resources.nodes x devices): "
            "set runs_per_device: 1, or devices: 1 and nodes: 1"
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
            raise VitbenchError(
                f"backbones[{i}].overrides must map constructor arguments to values, e.g. overrides: {{depth: 6}}"
            )
        try:  # unknown backbone, preset or override -> VitbenchError, now rather than on a compute node
            e.preset = create_backbone(e.name, e.preset, **e.overrides).preset
        except VitbenchError as err:
            raise VitbenchError(f"backbones[{i}] ({e.name}): {err}") from None
        e.label = e.label or e.name
        _check_train(e.train, f"backbones[{i}].train")
        if e.budget is not None:
            check_budget(e.budget, f"backbones[{i}].budget")
        if not _LABEL_RE.fullmatch(e.label) or e.label == MAIN_GROUP:
            raise VitbenchError(
                f"backbones[{i}]: label {e.label!r} must be letters, digits, '-', '_' or '.' and not '{MAIN_GROUP}'"
            )
        entries.append(e)
    labels = [e.label for e in entries]
    for label in labels:
        if labels.count(label) > 1:
            raise VitbenchError(
                f"backbone label '{label}' is used twice: give one entry another `label`, e.g. label: {label}_distilled"
            )
    by_label = {e.label: e for e in entries}
    for e in entries:
        if e.distillation is not None and e.teacher is None:
            raise VitbenchError(
                f"backbone '{e.label}' sets distillation: {e.distillation} but no teacher: add teacher: LABEL "
                f"(one of {', '.join(other for other in labels if other != e.label)})"
            )
        if e.teacher is None:
            continue
        if e.teacher not in by_label or e.teacher == e.label:
            import difflib

            close = difflib.get_close_matches(e.teacher, [other for other in labels if other != e.label], n=1)
            hint = f"did you mean '{close[0]}'?" if close else f"labels are {', '.join(labels)}"
            raise VitbenchError(
                f"backbone '{e.label}' has teacher '{e.teacher}', which is not a label of this sweep: {hint}"
            )
        if by_label[e.teacher].teacher is not None:
            raise VitbenchError(
                f"teacher '{e.teacher}' of '{e.label}' is itself distilled: a teacher must be trained without a teacher"
            )
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
