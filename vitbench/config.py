"""Strict, typed configuration: dataclasses in, one resolved YAML file out.

A run's whole configuration is one :class:`TrainConfig`. Each key is declared once, below:
its type, default, bounds and one-line help (:func:`setting`). Everything else derives from
that declaration: the checks (:func:`check`), the flags and ``--help`` of ``vitbench train``
and ``vitbench data`` (:func:`add_config_argument`), and the defaults of the DataModule's and
the LightningModule's parameters.

A config is built from defaults, then a YAML file, then ``section.key=value`` overrides, and
every key is checked: a misspelt key is an error that suggests the right one, never a silently
ignored global; a missing key takes its default. ``to_dict`` gives the resolved file written
next to every run (``config.yaml``).
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
from typing import Any, Callable, Literal, Optional, TypeVar

import yaml

from vitbench.errors import VitbenchError
from vitbench.wandb_mode import Mode as WandbMode

C = TypeVar("C")
MAX_SEED = 2**32 - 1  # numpy's and Lightning's seed range
DEFAULT_EPOCHS = 10
MAX_CYCLES = 8  # budget.cycles: a run still gaining after 8 full cycles needs another recipe, not more steps


def setting(default: Any = None, help: str = "", *, factory: Callable | None = None, flag: str | None = None,
            metavar: str | None = None, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, check: Callable[[Any, str], None] | None = None) -> Any:
    """A config key: its default (or ``factory``), one-line ``help``, the bounds of a number (``ge`` >=,
    ``gt`` >, ``le`` <=, ``lt`` <), a ``check(value, where)`` of what bounds cannot say (a format),
    and its command-line ``flag`` and ``metavar`` where they are not derived from the key's own name."""
    bounds = {"ge": ge, "gt": gt, "le": le, "lt": lt}
    meta = {"help": help, "flag": flag, "metavar": metavar, "check": check,
            **{k: v for k, v in bounds.items() if v is not None}}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def keys_of(cls, *names: str, name: str, doc: str) -> type:
    """A dataclass ``name`` of keys ``names`` of dataclass ``cls``, declared there once (type, default,
    bounds, help): an experiment file's ``wandb`` section is these keys of :class:`WandbConfig`."""
    hints, fields = _fields(cls)
    keys = [(key, hints[key], field(default=fields[key].default, default_factory=fields[key].default_factory,
                                    metadata=fields[key].metadata))
            for key in names]
    made = dataclasses.make_dataclass(name, keys)
    made.__doc__ = doc
    return made


@dataclass
class DataConfig:
    """What to train on: the parameters of :class:`vitbench.data.ImageClassificationDataModule`."""

    dataset: str = setting("fashion_mnist", "a built-in (fashion_mnist), a save_to_disk folder, an imagefolder, "
                           "a parquet file or folder, or a Hub id owner/name")
    image_column: Optional[str] = setting(None, "the image column (default: the one Image column)")
    label_column: Optional[str] = setting(None, "the label column (default: the ClassLabel column, 'label' first)")
    train_split: str = setting("train", "the split the training and validation images come from")
    test_split: str = setting("test", "the split test accuracy is measured on")
    val_fraction: float = setting(0.1, "share of each class's train-split images held out for validation "
                                  "(the same images for every seed and size)", ge=0, lt=1)
    fraction: float = setting(1.0, "stratified share of each class's training images outside validation", gt=0, le=1)
    samples_per_class: Optional[int] = setting(None, "exactly this many training images per class (instead of a "
                                               "fraction)", ge=1)
    batch_size: int = setting(128, "training batch size per device", ge=1)
    num_workers: int = setting(0, "DataLoader worker processes (0: load in the main process)", ge=0)
    random_crop_padding: int = setting(2, "padding in px of the random crops (0: no random crops)", ge=0)
    hflip: Optional[bool] = setting(None, "random horizontal flips (default: on, except for digits)")
    randaugment: Optional[str] = setting(None, "RandAugment in timm's notation, e.g. rand-m9-n2 (default: off)")
    in_memory_limit_gb: float = setting(4.0, "decode a dataset up to this size into memory, stream a larger one "
                                        "(0: stream every dataset)", ge=0)


@dataclass
class ModelConfig:
    backbone: str = setting("resnet", "a registered backbone (vitbench backbones lists them)")
    preset: Optional[str] = setting(None, "micro (CPU tests), tiny or small (the papers' sizes) "
                                    "(default: the backbone's default, micro for the built-ins)")
    image_size: Optional[int] = setting(None, "input size in px (default: the dataset's)", ge=1)
    overrides: dict = setting(help="backbone constructor arguments, e.g. model.overrides.depth=6", factory=dict)


@dataclass
class OptimConfig:
    lr: float = setting(1e-3, "peak learning rate (AdamW; linear warm-up, then cosine decay)", gt=0)
    weight_decay: float = setting(0.05, "AdamW weight decay (none on norms, biases and tokens)", ge=0)
    warmup_fraction: float = setting(0.1, "share of the steps that warm the learning rate up", ge=0, lt=1)
    label_smoothing: float = setting(0.1, "label smoothing of the cross-entropy", ge=0, lt=1)
    mixup_alpha: float = setting(0.0, "mixup's Beta(alpha, alpha) (0: off)", ge=0)
    cutmix_alpha: float = setting(0.0, "cutmix's Beta(alpha, alpha) (0: off)", ge=0)
    ema_decay: Optional[float] = setting(None, "decay of a model EMA (timm ModelEmaV3), e.g. 0.9998, which validation "
                                         "and test then measure (default: off)", gt=0, lt=1)


@dataclass
class BudgetConfig:
    """Train for ``max_epochs`` or, compute-matched across fractions, ``max_steps``.

    ``min_steps`` (with epochs only): at least that many optimizer steps, so that a small
    subset gets more epochs; a converged learning curve needs both a few epochs of the
    largest subset and enough steps on the smallest.

    ``cycles``: the budget is one cycle (warm-up, then cosine decay); a run whose convergence check
    fails at the end of a cycle trains another one from the weights it reached, up to ``cycles``,
    so that the runs that need more steps get them and the others stop at the first plateau.
    ``min_cycles``: no run stops before this many cycles (why: the CPU study's Swin runs on 750 images
    passed the check after one cycle at 0.78 test accuracy in one pass, and reached 0.81 in another
    whose first cycle had just failed it and which trained a second).
    """

    max_epochs: Optional[int] = setting(None, f"epochs (default: {DEFAULT_EPOCHS}, unless max_steps is set)", ge=1)
    max_steps: Optional[int] = setting(None, "optimizer steps (compute-matched across fractions)", ge=1)
    min_steps: Optional[int] = setting(None, "with an epoch budget: at least this many optimizer steps "
                                       "(small subsets get more epochs)", ge=1)
    cycles: int = setting(1, "at most this many cycles of the budget: while the convergence check fails at a "
                          "cycle's end, another warm-up and cosine of the same length starts from its weights",
                          ge=1, le=MAX_CYCLES)
    min_cycles: int = setting(1, "at least this many cycles, even where the check passes sooner: one cosine's "
                              "anneal can look flat while a further cycle still gains, and from the second cycle "
                              "on the check weighs a whole further cycle", ge=1, le=MAX_CYCLES)


@dataclass
class DistillConfig:
    teacher: Optional[str] = setting(None, "a finished run whose best checkpoint teaches", metavar="RUN_DIR")
    teacher_backbone: Optional[str] = setting(None, "the teacher's backbone, with teacher_checkpoint "
                                              "(instead of a teacher run)")
    teacher_preset: Optional[str] = setting(None, "the teacher's preset (default: its backbone's default)")
    teacher_checkpoint: Optional[str] = setting(None, "the teacher's checkpoint file, with teacher_backbone")
    kind: Literal["hard", "soft"] = setting("hard", "hard (the teacher's top class) or soft (its distribution at "
                                            "temperature tau) targets", flag="distillation")
    alpha: float = setting(0.5, "weight of the distillation loss (the labels' loss gets 1 - alpha)", ge=0, le=1)
    tau: float = setting(1.0, "temperature of soft distillation", gt=0)


# Lightning accepts more (bf16-true, 16-true, 64-true, aliases), but the model's input comes from
# the DataModule in float32: a model converted to another dtype would fail at its first step.
Precision = Literal["32-true", "bf16-mixed", "16-mixed"]


@dataclass
class TrainerConfig:
    accelerator: str = setting("auto", "Lightning's accelerator: auto, cpu, gpu, ...")
    devices: int = setting(1, "devices per node", ge=1)
    num_nodes: int = setting(1, "nodes", ge=1)
    precision: Precision = setting("32-true", "32-true, bf16-mixed (CPU and GPU) or 16-mixed (GPU)")
    compile: bool = setting(False, "run the model under torch.compile (the first steps pay for compilation)")
    strategy: str = setting("auto", "Lightning's strategy: auto, ddp, ...")
    deterministic: bool = setting(False, "deterministic algorithms only (slower; no cuDNN benchmarking)")
    progress: Optional[bool] = setting(None, "a progress bar (default: when stderr is a terminal)")


@dataclass
class WandbConfig:
    mode: WandbMode = setting(
        "auto", "W&B mode (auto: WANDB_MODE if set, else online when logged in, offline otherwise)", flag="wandb")
    project: str = setting("vitbench", "W&B project", flag="wandb-project")
    group: Optional[str] = setting(None, "W&B group (default: the sweep)")
    tags: list = setting(help="W&B tags", factory=list)
    id: Optional[str] = setting(None, "W&B run id (default: derived from the run directory, so that a requeued "
                                "run continues its W&B run)")
    name: Optional[str] = setting(None, "W&B run name (default: the run directory's name)")


@dataclass
class TrainConfig:
    out: Optional[str] = setting(None, "run directory (default: runs/BACKBONE-PRESET-fFRACTION-sSEED)")
    label: Optional[str] = setting(None, "the run's name in reports (default: the backbone, + _distilled with "
                                   "a teacher)")
    seed: int = setting(0, "seed of the training subset, the initial weights and the data order "
                        "(validation never depends on it)", ge=0, le=MAX_SEED)
    sweep: Optional[str] = setting(None, "the sweep the run belongs to (vitbench sweep sets it)")
    plugins: list = setting(help="backbone plugins to import: modules or .py files", factory=list, flag="plugin",
                            metavar="MODULE")
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
        digits = isinstance(value, str) and value.lstrip("-").isdigit()
        if isinstance(value, bool) or not (isinstance(value, int) or digits):
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
            raise VitbenchError(f"{where}: expected a finite number, got {value!r}: "
                                "NaN and infinity are never valid settings")
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
def _fields(cls) -> tuple[dict, dict]:
    # get_type_hints re-evaluates every string annotation on each call: a 1,000-task sweep
    # builds ~6,000 dataclasses, and this was most of its planning time.
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _bounds(meta) -> str | None:
    """A key's bounds as people write them (``in (0, 1]``, ``>= 1``); None if it has none."""
    low = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    high = ("]", meta["le"]) if "le" in meta else (")", meta["lt"]) if "lt" in meta else None
    if low and high:
        return f"in {low[0]}{low[1]}, {high[1]}{high[0]}"
    if low:
        return f"{'>=' if low[0] == '[' else '>'} {low[1]}"
    if high:
        return f"{'<=' if high[0] == ']' else '<'} {high[1]}"
    return None


def _within(value: Any, meta) -> bool:
    return not (("ge" in meta and value < meta["ge"]) or ("gt" in meta and value <= meta["gt"])
                or ("le" in meta and value > meta["le"]) or ("lt" in meta and value >= meta["lt"]))


def check_value(cls, name: str, value: Any, where: str = "") -> Any:
    """``value`` for key ``name`` of dataclass ``cls``, coerced to the key's type and within its bounds;
    else a one-line error naming ``where`` (default: ``name``)."""
    hints, fields = _fields(cls)
    where = where or name
    value = _coerce(value, hints[name], where)
    meta = fields[name].metadata
    if value is not None and not _within(value, meta):
        raise VitbenchError(f"{where} must be {_bounds(meta)}, got {value}: {meta['help']}")
    if value is not None and meta.get("check"):
        meta["check"](value, where)
    return value


def from_dict(cls, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``: unknown keys are errors, missing keys take their defaults."""
    _, fields = _fields(cls)
    kwargs = {}
    for key, value in (data or {}).items():
        path = f"{where}.{key}" if where else key
        if not isinstance(key, str):  # YAML reads `1:` and `null:` as a number and None, not names
            raise VitbenchError(f"config key {key!r} in {where or 'the top level'} is not a name: "
                                f"{_suggest(str(key), fields)}")
        if key not in fields:
            raise VitbenchError(f"unknown config key '{path}': {_suggest(key, fields)}")
        kwargs[key] = check_value(cls, key, value, path)
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


def nest(key: str, value: Any) -> dict:
    """``("optim.lr", 3e-4)`` -> ``{"optim": {"lr": 3e-4}}``."""
    for part in reversed(key.strip().split(".")):
        value = {part: value}
    return value


# What YAML 1.1 leaves a string but people (and YAML 1.2, and Python) read as a number: an exponent
# without a decimal point or without its sign, 1e-3, 5e3, 2.5E4.
_EXPONENT = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)[eE][-+]?[0-9]+")


class _Number:
    """A YAML number resolver that leaves values with a colon alone, and (``exponent``) also
    matches :data:`_EXPONENT`."""

    def __init__(self, regexp, exponent: bool = False):
        self.regexp = regexp
        self.exponent = exponent

    def match(self, value: str):
        if ":" in value:
            return None
        return self.regexp.match(value) or (self.exponent and _EXPONENT.fullmatch(value)) or None


class _Loader(yaml.SafeLoader):
    """YAML 1.1 without base-60 numbers, with exponents written as people write them.

    ``time: 30:00`` stays the string SLURM reads as 30 minutes, where safe_load would turn it
    into the integer 1800 (1800 minutes); ``lr: 1e-3`` and ``fractions: [5e-3]`` are numbers,
    where safe_load would keep the strings '1e-3' and '5e-3'.
    """


_FLOAT, _INT = "tag:yaml.org,2002:float", "tag:yaml.org,2002:int"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, _Number(rx, exponent=tag == _FLOAT) if tag in (_INT, _FLOAT) else rx) for tag, rx in resolvers]
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
        raise VitbenchError(f"override '{text}': the value is not valid YAML: "
                            "quote it, e.g. --set 'key=\"value\"'") from None
    return nest(key, value)


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
    """Merge ``layers`` (lowest priority first) over the defaults and :func:`check` the result."""
    merged: dict = {}
    for layer in layers:
        merged = merge(merged, layer or {})
    return _check_rules(from_dict(TrainConfig, merged), check_paths)


def check(cfg: C, check_paths: bool = True) -> C:
    """The one check of a config (:class:`TrainConfig`, or a :class:`DataConfig` alone).

    Returns a new config: every value of its key's type and within the key's bounds, keys that
    depend on each other in agreement, and a budget left unset made ``DEFAULT_EPOCHS`` epochs.
    Raises a one-line VitbenchError otherwise. ``cfg`` itself is never changed.
    ``check_paths=False`` checks a config that was run elsewhere (a teacher's, an analysed
    run's): its dataset path need not exist on this machine.
    """
    return _check_rules(from_dict(type(cfg), dataclasses.asdict(cfg)), check_paths)


def _check_rules(cfg: C, check_paths: bool) -> C:
    """What bounds alone cannot say, on a config :func:`from_dict` has just built."""
    if isinstance(cfg, DataConfig):
        _check_data(cfg, "", check_paths)
        return cfg
    if not isinstance(cfg, TrainConfig):
        return cfg
    _check_data(cfg.data, "data.", check_paths)
    for key in cfg.model.overrides:
        if not isinstance(key, str) or not key:
            raise VitbenchError(f"model.overrides: key {key!r} is not a constructor argument name: "
                                "e.g. model.overrides.depth=6")
    _check_finite(cfg.model.overrides, "model.overrides")
    _check_strings(cfg.plugins, "plugins", "plugins: [my_backbones.py]")
    _check_strings(cfg.wandb.tags, "wandb.tags", "wandb.tags: [baseline]")
    b = check_budget(cfg.budget)
    if b.max_epochs is None and b.max_steps is None:
        cfg = dataclasses.replace(cfg, budget=dataclasses.replace(b, max_epochs=DEFAULT_EPOCHS))
    return cfg


def check_budget(b: BudgetConfig, where: str = "budget") -> BudgetConfig:
    """What a budget's bounds cannot say, for a run's ``budget`` and an experiment's (``where``:
    ``budget``, ``backbones[2].budget``); returns ``b``."""
    if b.max_epochs is not None and b.max_steps is not None:
        raise VitbenchError(f"both {where}.max_epochs and {where}.max_steps are set: "
                            "keep one (epochs, or steps for a compute-matched budget)")
    if b.min_steps is not None and b.max_steps is not None:
        raise VitbenchError(f"{where}.min_steps is set with {where}.max_steps: min_steps extends an epoch budget; "
                            f"use {where}.max_epochs with it, or max_steps alone")
    if b.min_cycles > b.cycles:
        raise VitbenchError(f"{where}.min_cycles {b.min_cycles} is above {where}.cycles {b.cycles}: "
                            f"set {where}.cycles to at least {b.min_cycles}, or lower min_cycles")
    return b


def _check_data(d: DataConfig, where: str, check_paths: bool) -> None:
    if check_paths:
        check_dataset(d.dataset, f"{where}dataset")
    if d.samples_per_class is not None and d.fraction < 1.0:
        raise VitbenchError(f"both {where}fraction and {where}samples_per_class are set: "
                            "keep one (--fraction or --samples-per-class)")


def check_distillation_head(backbone: str) -> None:
    """A student must have a distillation head: the one check, for a sweep's plan, a run and the module."""
    from vitbench.backbones import get_backbone, list_backbones

    if not get_backbone(backbone).distillation_head:
        heads = [name for name in list_backbones() if get_backbone(name).distillation_head]
        raise VitbenchError(f"backbone '{backbone}' has no distillation head: distil into {' or '.join(heads)}, "
                            "or train it without a teacher")


def config_key(key: str) -> tuple[dataclasses.Field, Any]:
    """The field and type of dotted ``key`` (``data.fraction``) of :class:`TrainConfig`."""
    *sections, name = key.split(".")
    cls = TrainConfig
    for section in sections:
        cls = _fields(cls)[0][section]
    hints, fields = _fields(cls)
    return fields[name], hints[name]


def add_config_argument(parser, key: str, positional: bool = False, help: str | None = None) -> str:
    """Add config ``key``'s command-line argument to ``parser`` (an argparse parser or group) and return its dest.

    Its name, type, help, bounds and default come from the key's :func:`setting`; ``help`` replaces
    the key's own where a command reads it more narrowly (``analyze``: the plugins a run was trained
    with). A flag's own default is None, so only a flag that is given sets its key (over a config
    file's value). Commands that are not runs take keys as flags too: ``--plugin`` is ``plugins``
    for ``train``, ``backbones`` and ``analyze``.
    """
    f, tp = config_key(key)
    meta = {**f.metadata, "help": help or f.metadata["help"]}
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    default = f.default if f.default is not dataclasses.MISSING and not positional and tp is not bool else None
    notes = [note for note in (_bounds(meta), default is not None and f"default: {default}",
                               tp is list and "repeatable")
             if note]
    help = (meta["help"] + (f" ({'; '.join(notes)})" if notes else "")).replace("%", "%%")
    kwargs: dict = {"help": help, "metavar": meta["metavar"] or (f.name.upper() if positional else None)}
    if typing.get_origin(tp) is Literal:
        # Not argparse's choices: a value off the list is the config's one-line error, as from a file.
        kwargs["metavar"] = "{" + ",".join(typing.get_args(tp)) + "}"
    elif tp is bool:
        kwargs = {"help": help, "action": "store_true", "default": None}
    elif tp is list:
        kwargs["action"] = "append"
    elif tp in (int, float):
        kwargs["type"] = tp
    name = f.name if positional else f"--{meta['flag'] or f.name.replace('_', '-')}"
    return parser.add_argument(name, **kwargs).dest


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
        hint = ("no such file or folder: pass an existing save_to_disk folder, imagefolder or parquet path, "
                "or a Hub id owner/name")
    elif close:
        hint = f"did you mean '{ALIASES.get(close[0], close[0])}'?"
    else:
        hint = (f"use a built-in ({', '.join(builtins)}), an existing save_to_disk folder, imagefolder or "
                "parquet path, "
                "or a Hugging Face Hub id written owner/name (e.g. uoft-cs/cifar10)")
    raise VitbenchError(f"{where}: unknown dataset '{name}': {hint}")


def _check_finite(value: Any, where: str) -> None:
    """Every number nested in ``value`` (backbone overrides) is finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise VitbenchError(f"{where}: expected a finite number, got {value!r}: "
                            "NaN and infinity are never valid settings")
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
