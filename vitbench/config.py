"""Strict, typed configuration: dataclasses in, one resolved YAML file out.

A run's whole configuration is one :class:`TrainConfig`. It is built from
defaults, then a YAML file, then ``section.key=value`` overrides, and every key
is checked: a misspelt key is an error that suggests the right one, never a
silently ignored global. ``to_dict`` gives the resolved file written next to
every run (``config.yaml``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import yaml

from vitbench.errors import VitbenchError


@dataclass
class DataConfig:
    """What to train on: mirrors :class:`vitbench.data.ImageClassificationDataModule`."""

    dataset: str = "fashion_mnist"
    image_column: Optional[str] = None
    label_column: Optional[str] = None
    train_split: str = "train"
    test_split: str = "test"
    val_fraction: float = 0.1
    fraction: float = 1.0
    samples_per_class: Optional[int] = None
    batch_size: int = 128
    num_workers: int = 0
    random_crop_padding: int = 2
    hflip: Optional[bool] = None
    randaugment: Optional[str] = None
    in_memory_limit_gb: float = 4.0


@dataclass
class ModelConfig:
    backbone: str = "resnet"
    preset: Optional[str] = None  # None: the backbone's default (micro for the built-ins); resolved before a run
    image_size: Optional[int] = None
    overrides: dict = field(default_factory=dict)


@dataclass
class OptimConfig:
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    label_smoothing: float = 0.1
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    ema_decay: Optional[float] = None  # model EMA (timm ModelEmaV3), e.g. 0.9998; None: off


DEFAULT_EPOCHS = 10


@dataclass
class BudgetConfig:
    """Train for ``max_epochs`` or, compute-matched across fractions, ``max_steps``.

    ``min_steps`` (with epochs only): at least that many optimizer steps, so that a small
    subset gets more epochs; a converged learning curve needs both a few epochs of the
    largest subset and enough steps on the smallest.
    """

    max_epochs: Optional[int] = None
    max_steps: Optional[int] = None
    min_steps: Optional[int] = None


@dataclass
class DistillConfig:
    teacher: Optional[str] = None
    teacher_backbone: Optional[str] = None
    teacher_preset: Optional[str] = None
    teacher_checkpoint: Optional[str] = None
    kind: Literal["hard", "soft"] = "hard"
    alpha: float = 0.5
    tau: float = 1.0


@dataclass
class TrainerConfig:
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "32-true"
    compile: bool = False  # torch.compile the model (the first steps pay for compilation)
    strategy: str = "auto"
    deterministic: bool = False
    progress: Optional[bool] = None


@dataclass
class WandbConfig:
    mode: Literal["offline", "online", "disabled", "auto"] = "auto"
    project: str = "vitbench"
    group: Optional[str] = None
    tags: list = field(default_factory=list)
    id: Optional[str] = None
    name: Optional[str] = None


@dataclass
class TrainConfig:
    out: Optional[str] = None
    label: Optional[str] = None  # the run's name in reports (default: backbone, + "_distilled" with a teacher)
    seed: int = 0
    sweep: Optional[str] = None
    plugins: list = field(default_factory=list)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)

    @property
    def distilled(self) -> bool:
        return bool(self.distill.teacher or self.distill.teacher_backbone)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def _suggest(key: str, options) -> str:
    close = difflib.get_close_matches(key, list(options), n=1)
    return f"did you mean '{close[0]}'?" if close else f"valid keys: {', '.join(options)}"


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except VitbenchError as e:
                errors.append(str(e))
        raise VitbenchError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise VitbenchError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise VitbenchError(f"{where}: expected a mapping of {tp.__name__} keys, got {value!r}")
        return from_dict(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise VitbenchError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.lstrip("-").isdigit())):
            raise VitbenchError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is float:
        try:
            if isinstance(value, bool):
                raise ValueError
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise VitbenchError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(number):
            raise VitbenchError(f"{where}: expected a finite number, got {value!r}: NaN and infinity are never valid settings")
        return number
    if tp is str:
        if isinstance(value, (dict, list)):
            raise VitbenchError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp in (list, dict) or origin in (list, dict):
        base = origin or tp
        if base is list and isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, base):
            raise VitbenchError(f"{where}: expected a {base.__name__}, got {value!r}")
        return value
    return value


@functools.lru_cache(maxsize=None)
def _fields(cls) -> tuple[dict, list]:
    # get_type_hints re-evaluates every string annotation on each call: a 1,000-task sweep
    # builds ~6,000 dataclasses, and this was most of its planning time.
    return typing.get_type_hints(cls), [f.name for f in dataclasses.fields(cls)]


def from_dict(cls, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys are errors."""
    hints, names = _fields(cls)
    kwargs = {}
    for key, value in (data or {}).items():
        path = f"{where}.{key}" if where else key
        if key not in names:
            raise VitbenchError(f"unknown config key '{path}': {_suggest(key, names)}")
        kwargs[key] = _coerce(value, hints[key], path)
    return cls(**kwargs)


def merge(base: dict, update: dict) -> dict:
    """Recursive dict merge: ``update`` wins, nested mappings merge."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "overrides":
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


class _NoSexagesimal:
    """A YAML number resolver that leaves values with a colon alone."""

    def __init__(self, regexp):
        self.regexp = regexp

    def match(self, value: str):
        return None if ":" in value else self.regexp.match(value)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 without base-60 numbers: ``time: 30:00`` stays the string SLURM reads as 30 minutes,
    where safe_load would turn it into the integer 1800 (1800 minutes)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, _NoSexagesimal(rx) if tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") else rx)
            for tag, rx in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def parse_override(text: str) -> dict:
    """``optim.lr=3e-4`` -> ``{"optim": {"lr": 3e-4}}`` (value parsed as YAML)."""
    if "=" not in text:
        raise VitbenchError(f"override '{text}' is not KEY=VALUE: write e.g. --set optim.lr=3e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml_load(raw) if raw != "" else None
    except yaml.YAMLError:
        raise VitbenchError(f"override '{text}': the value is not valid YAML: quote it, e.g. --set 'key=\"value\"'") from None
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise VitbenchError(f"config file {path} not found: pass an existing YAML file")
    try:
        data = yaml_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        line = getattr(getattr(e, "problem_mark", None), "line", None)
        at = f" at line {line + 1}" if line is not None else ""
        raise VitbenchError(f"config file {path} is not valid YAML{at}: fix the syntax") from None
    except UnicodeDecodeError:  # binary junk, or a file in another encoding
        raise VitbenchError(f"config file {path} is not a text file (not UTF-8): pass a YAML file") from None
    if not isinstance(data, dict):
        raise VitbenchError(f"config file {path} must be a mapping of keys, not {type(data).__name__}")
    return data


def build_config(*layers: dict, check_paths: bool = True) -> TrainConfig:
    """Merge ``layers`` (lowest priority first) over the defaults and validate.

    ``check_paths=False`` checks a config that was run elsewhere (a teacher's, an analysed
    run's): its dataset path need not exist on this machine.
    """
    merged: dict = {}
    for layer in layers:
        merged = merge(merged, layer or {})
    cfg = from_dict(TrainConfig, merged)
    validate(cfg, check_paths=check_paths)
    return cfg


MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range
# A Hub id as the Hub itself spells them: owner/name, each part starting with a letter or digit.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", re.ASCII)


def check_dataset(name: str, where: str = "data.dataset") -> None:
    """A built-in name, an existing file or folder, or a Hub id ``owner/name``; else a one-line error."""
    from vitbench.data.sources import ALIASES, BUILTINS

    if name in BUILTINS or name in ALIASES:
        return
    if name and Path(name).expanduser().exists():
        return
    if _HUB_ID.fullmatch(name) and ".." not in name:
        return
    builtins = sorted(BUILTINS)
    close = difflib.get_close_matches(name.lower(), builtins + sorted(ALIASES), n=1, cutoff=0.6)
    if "/" in name or name.startswith((".", "~")):
        hint = "no such file or folder: pass an existing save_to_disk folder, imagefolder or parquet path, or a Hub id owner/name"
    elif close:
        hint = f"did you mean '{ALIASES.get(close[0], close[0])}'?"
    else:
        hint = (f"use a built-in ({', '.join(builtins)}), an existing save_to_disk folder, imagefolder or parquet path, "
                "or a Hugging Face Hub id written owner/name (e.g. uoft-cs/cifar10)")
    raise VitbenchError(f"{where}: unknown dataset '{name}': {hint}")


def _check_finite(value: Any, where: str) -> None:
    """Every number nested in ``value`` (backbone overrides) is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise VitbenchError(f"{where}: expected a finite number, got {value!r}: NaN and infinity are never valid settings")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}[{i}]")


def _check_strings(values: list, where: str, example: str) -> None:
    bad = [v for v in values if not isinstance(v, str) or not v]
    if bad:
        raise VitbenchError(f"{where} must be a list of non-empty strings, got {bad[0]!r}: e.g. {example}")


def validate(cfg: TrainConfig, check_paths: bool = True) -> None:
    d, b = cfg.data, cfg.budget
    if check_paths:
        check_dataset(d.dataset)
    if not 0 <= cfg.seed <= MAX_SEED:
        raise VitbenchError(f"seed must be in [0, {MAX_SEED}], got {cfg.seed}")
    for key in cfg.model.overrides:
        if not isinstance(key, str) or not key:
            raise VitbenchError(f"model.overrides: key {key!r} is not a constructor argument name: e.g. model.overrides.depth=6")
    _check_finite(cfg.model.overrides, "model.overrides")
    _check_strings(cfg.plugins, "plugins", "plugins: [my_backbones.py]")
    _check_strings(cfg.wandb.tags, "wandb.tags", "wandb.tags: [baseline]")
    if d.in_memory_limit_gb < 0:
        raise VitbenchError(f"data.in_memory_limit_gb must be >= 0, got {d.in_memory_limit_gb}: 0 streams every dataset")
    if d.random_crop_padding < 0:
        raise VitbenchError(f"data.random_crop_padding must be >= 0, got {d.random_crop_padding}: 0 turns random crops off")
    if not 0.0 < d.fraction <= 1.0:
        raise VitbenchError(f"data.fraction must be in (0, 1], got {d.fraction}: e.g. --fraction 0.05 for 5%")
    if d.samples_per_class is not None and d.samples_per_class < 1:
        raise VitbenchError(f"data.samples_per_class must be >= 1, got {d.samples_per_class}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise VitbenchError(f"data.val_fraction must be in [0, 1), got {d.val_fraction}: e.g. 0.1 for 10% of the train split")
    if d.num_workers < 0:
        raise VitbenchError(f"data.num_workers must be >= 0, got {d.num_workers}")
    if cfg.model.image_size is not None and cfg.model.image_size < 1:
        raise VitbenchError(f"model.image_size must be >= 1 px, got {cfg.model.image_size}: e.g. --image-size 32")
    o = cfg.optim
    if o.lr <= 0 or o.weight_decay < 0:
        raise VitbenchError(f"optim.lr must be > 0 and optim.weight_decay >= 0, got {o.lr} and {o.weight_decay}")
    for name in ("warmup_fraction", "label_smoothing"):
        if not 0.0 <= getattr(o, name) < 1.0:
            raise VitbenchError(f"optim.{name} must be in [0, 1), got {getattr(o, name)}")
    if o.mixup_alpha < 0 or o.cutmix_alpha < 0:
        raise VitbenchError("optim.mixup_alpha and optim.cutmix_alpha must be >= 0 (0 turns them off)")
    if o.ema_decay is not None and not 0.0 < o.ema_decay < 1.0:
        raise VitbenchError(f"optim.ema_decay must be in (0, 1), got {o.ema_decay}: e.g. optim.ema_decay=0.9998 (null turns EMA off)")
    if d.batch_size < 1:
        raise VitbenchError(f"data.batch_size must be >= 1, got {d.batch_size}")
    if b.max_epochs is not None and b.max_steps is not None:
        raise VitbenchError("both budget.max_epochs and budget.max_steps are set: keep one (epochs, or steps for a compute-matched budget)")
    if b.min_steps is not None and b.max_steps is not None:
        raise VitbenchError("budget.min_steps is set with budget.max_steps: min_steps extends an epoch budget; "
                            "use budget.max_epochs with it, or max_steps alone")
    if b.max_epochs is None and b.max_steps is None:
        b.max_epochs = DEFAULT_EPOCHS
    for name in ("max_epochs", "max_steps", "min_steps"):
        v = getattr(b, name)
        if v is not None and v < 1:
            raise VitbenchError(f"budget.{name} must be >= 1, got {v}")
    if not 0.0 <= cfg.distill.alpha <= 1.0:
        raise VitbenchError(f"distill.alpha must be in [0, 1], got {cfg.distill.alpha}")
    if cfg.distill.tau <= 0:
        raise VitbenchError(f"distill.tau must be > 0, got {cfg.distill.tau}")
    if cfg.trainer.devices < 1 or cfg.trainer.num_nodes < 1:
        raise VitbenchError("trainer.devices and trainer.num_nodes must be >= 1")
