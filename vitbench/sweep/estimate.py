"""``vitbench sweep plan EXP --estimate``: what a sweep costs, timed on this machine.

Each backbone entry is built as its runs build it (registry, the resolved config's image
size, channels, batch size and precision; a distilled entry also runs its teacher) and a few
training steps (forward, backward, AdamW) and evaluation batches are timed on random uint8
images of the data's shape, after warm-up steps that are not counted. A run's cost is then

    start-up + steps x step time + (validations x val batches + test batches) x eval batch time

with the steps and validations the training schedule will use and the start-up (a new
interpreter and the training imports) timed once in a subprocess. The data is opened only for
its sizes: labels and one probe, no decoding. Lightning's per-step bookkeeping is not in the
step time: a few milliseconds, which matter only for tiny models on a GPU.

Not timed: per-image RandAugment in DataLoader workers (it can be the bottleneck of a small
model on a GPU) and torch.compile. Runs that share a device or the CPU are timed alone with
the threads they will get; the sweep's wall time divides the total by the runs at a time.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from vitbench.config import TrainConfig, build_config
from vitbench.data.subsets import TrainSize
from vitbench.errors import VitbenchError
from vitbench.sweep.experiment import Experiment
from vitbench.sweep.plan import plan_tasks

WARMUP_STEPS = 2  # first steps pay for allocator growth, kernel selection, lazy init
MIN_TIMED, MAX_TIMED = 2, 10  # timed steps (and eval batches) per backbone entry
TIME_BOX_S = 2.0  # stop timing an entry after this long once MIN_TIMED steps are in
# What a task process does besides its steps: the imports `sweep run-task` pays (through vitbench.training,
# as it does), then the exit every `vitbench` command takes (vitbench.cli.entry, here ending `--version`).
_STARTUP_CODE = ("import sys; from vitbench.training import train; import vitbench.data.datamodule, wandb; "
                 "from vitbench.cli import entry; sys.argv[1:] = ['--version']; entry()")


@dataclass
class RunCost:
    name: str
    n_train: int
    steps: int
    evals: int
    train_s: float
    eval_s: float  # validation
    startup_s: float
    test_s: float = 0.0
    cycles: int = 1  # budget.cycles: train_s and eval_s are one cycle's
    min_cycles: int = 1  # budget.min_cycles

    @property
    def total_s(self) -> float:
        """A run that stops as soon as it may: after its first cycle, or its ``min_cycles``."""
        return self.startup_s + self.min_cycles * (self.train_s + self.eval_s) + self.test_s

    @property
    def max_total_s(self) -> float:
        """A run that takes every cycle of its budget."""
        return self.startup_s + self.cycles * (self.train_s + self.eval_s) + self.test_s


@dataclass
class LabelCost:
    label: str
    backbone: str
    preset: str
    teacher: str | None
    step_s: float
    eval_batch_s: float
    eval_batch: int
    runs: list[RunCost] = field(default_factory=list)


@dataclass
class SweepEstimate:
    name: str
    device: str
    notes: list[str]
    startup_s: float
    concurrency: int
    labels: list[LabelCost]

    @property
    def total_s(self) -> float:
        return sum(r.total_s for lc in self.labels for r in lc.runs)

    @property
    def wall_s(self) -> float:
        return self.total_s / self.concurrency

    @property
    def max_total_s(self) -> float:
        return sum(r.max_total_s for lc in self.labels for r in lc.runs)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _device(exp: Experiment):
    import torch

    from vitbench.training.memory import device_name

    want = exp.resources.accelerator
    if want in ("gpu", "auto") and torch.cuda.is_available():
        return torch.device("cuda", 0), device_name(torch.device("cuda", 0)), []
    notes = []
    if want == "gpu":
        notes.append("the experiment runs on GPUs but this machine has none: "
                     "timed on the CPU, so expect far less on a GPU")
    return torch.device("cpu"), device_name(torch.device("cpu")), notes


def _precision(precision: str):
    """(autocast dtype or None, parameter dtype) for a Lightning precision string."""
    import torch

    p = str(precision)
    dtype = (torch.bfloat16 if "bf16" in p else torch.float16 if p.startswith("16")
             else torch.float64 if p.startswith("64") else None)
    if dtype is None:
        return None, torch.float32
    if p.endswith("-true"):
        return None, dtype
    return dtype, torch.float32


@dataclass
class _Geometry:
    num_classes: int
    image_size: int
    data_chans: int
    data_hw: tuple  # the decoded images' height and width: what a batch holds before resizing
    n_val: int
    n_test: int
    n_train: dict[TrainSize, int]  # training images


def _geometry(cfg: TrainConfig, sizes: list[TrainSize]) -> _Geometry:
    """The data's shape and split sizes, from its labels and one probe: no image is decoded."""
    from vitbench.data import decode
    from vitbench.data.sources import load_source
    from vitbench.data.subsets import split_indices

    d = cfg.data
    source = load_source(d.dataset, train_split=d.train_split, test_split=d.test_split,
                         image_column=d.image_column, label_column=d.label_column)
    labels = decode.labels_of(source.train, source.label_column)
    spec = decode.probe_spec(source.train, source.image_column,
                             decode.split_key(source.identity, d.train_split, source.train, source.image_column))
    n_train, n_val = {}, 0
    for size in sizes:
        # A subset's size depends on the fraction (or images per class), never on the seed.
        split = split_indices(labels, val_fraction=d.val_fraction, fraction=size.fraction,
                              samples_per_class=size.samples_per_class, class_names=source.class_names)
        n_train[size], n_val = len(split.train), len(split.val)
    return _Geometry(source.num_classes, cfg.model.image_size or max(spec.height, spec.width), spec.chans,
                     (spec.height, spec.width), n_val, len(source.test), n_train)


def _timed(fn, device, warmup: int) -> float:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls, within the time box."""
    import torch

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    sync()
    n, t0 = 0, time.perf_counter()
    while n < MAX_TIMED and (n < MIN_TIMED or time.perf_counter() - t0 < TIME_BOX_S):
        fn()
        n += 1
        sync()
    return (time.perf_counter() - t0) / n


def _time_entry(cfg: TrainConfig, teacher_cfg: TrainConfig | None, geo: _Geometry, device) -> tuple[float, float, int]:
    """(seconds per training step, seconds per eval batch, eval batch size) of one backbone entry."""
    import torch
    from timm.optim import create_optimizer_v2
    from torch import nn

    from vitbench.backbones import create_backbone, load_plugins
    from vitbench.data.datamodule import MIN_EVAL_BATCH, NO_FLIP
    from vitbench.data.transforms import BatchTransform
    from vitbench.training.distillation import DistillationLoss

    load_plugins(cfg.plugins)
    spec = create_backbone(cfg.model.backbone, cfg.model.preset, **cfg.model.overrides)
    in_chans = spec.in_chans or geo.data_chans
    autocast, param_dtype = _precision(cfg.trainer.precision)
    model = spec.create(geo.num_classes, geo.image_size, in_chans).to(device=device, dtype=param_dtype)
    if getattr(spec, "channels_last", False) and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    o = cfg.optim
    criterion = nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
    if teacher_cfg is not None:
        t = teacher_cfg.model
        teacher = create_backbone(t.backbone, t.preset, **t.overrides).create(geo.num_classes, geo.image_size, in_chans)
        criterion = DistillationLoss(criterion, teacher.to(device=device, dtype=param_dtype), cfg.distill.kind,
                                     cfg.distill.alpha, cfg.distill.tau)
        model.set_distilled_training(True)
    optimizer = create_optimizer_v2(model, opt="adamw", lr=o.lr, weight_decay=o.weight_decay)
    mean, std = [0.5] * geo.data_chans, [0.25] * geo.data_chans  # timing needs shapes, not statistics
    common = dict(image_size=geo.image_size, in_chans=in_chans, mean=mean, std=std)
    hflip = cfg.data.hflip if cfg.data.hflip is not None else cfg.data.dataset not in NO_FLIP
    train_tf = BatchTransform(**common, train=True, padding=cfg.data.random_crop_padding, hflip=hflip).to(device)
    eval_tf = BatchTransform(**common, train=False).to(device)

    def batch(n):
        images = torch.randint(0, 256, (n, geo.data_chans, *geo.data_hw), dtype=torch.uint8, device=device)
        return images, torch.randint(0, geo.num_classes, (n,), device=device)

    def amp():
        return torch.autocast(device.type, dtype=autocast, enabled=autocast is not None)

    bs = cfg.data.batch_size
    x, y = batch(bs)

    def step():
        images = train_tf(x).to(param_dtype)
        with amp():
            out = model(images)
            loss = criterion(images, out, y) if teacher_cfg is not None else criterion(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    eval_bs = max(bs, MIN_EVAL_BATCH)
    ex, _ = batch(eval_bs)

    def evaluate():
        with torch.inference_mode(), amp():
            model(eval_tf(ex).to(param_dtype))

    model.train()
    step_s = _timed(step, device, WARMUP_STEPS)
    model.eval()
    eval_s = _timed(evaluate, device, 1)
    return step_s, eval_s, eval_bs


def _startup_s() -> float:
    """A task process's start-up on this machine: a new interpreter and the training imports."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _STARTUP_CODE], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["?"])[-1]
        raise VitbenchError(
            f"cannot time a task's start-up ({last}): check that the training dependencies are installed"
        )
    return time.perf_counter() - t0


def estimate_sweep(exp: Experiment, sweep_dir: str | Path, *, out=None) -> SweepEstimate:
    """Time every backbone entry of ``exp`` here and estimate each run's and the sweep's wall time.

    ``out`` (a stream) receives a line per entry while it is timed. Writes nothing.
    """
    import torch

    from vitbench.training.schedule import cycle_schedule

    tasks = plan_tasks(exp, Path(sweep_dir))
    first = {}
    for t in tasks:
        first.setdefault(t.label, t)
    configs = {label: build_config(t.config) for label, t in first.items()}
    sizes = list(dict.fromkeys(t.size for t in tasks))
    geo = _geometry(next(iter(configs.values())), sizes)
    device, device_text, notes = _device(exp)
    r = exp.resources
    world = r.nodes * r.devices
    runs_per_device = r.runs_per_device
    # `sweep run` keeps local.parallel slots busy, each running runs_per_device tasks at once.
    concurrency = exp.local.parallel * runs_per_device
    threads = torch.get_num_threads()
    if device.type == "cpu":
        # ... and gives each of those tasks an equal share of the cores.
        per_run = max(1, _cpus() // concurrency)
        torch.set_num_threads(per_run)
        device_text += f", {per_run} thread(s) per run ({concurrency} at a time)"
        if concurrency > _cpus():
            notes.append(f"{concurrency} runs at a time on {_cpus()} cores slow each other down: "
                         "the wall time is a lower bound")
    elif runs_per_device > 1:
        notes.append(f"{runs_per_device} runs share each GPU; each was timed alone, so the wall time is a lower bound")
    if any(c.data.randaugment for c in configs.values()):
        notes.append("RandAugment runs per image in DataLoader workers and is not timed")
    if any(getattr(c.trainer, "compile", False) for c in configs.values()):
        notes.append("timed without torch.compile: compiled runs pay for compilation first, then step faster")
    try:
        startup = _startup_s()
        labels = []
        for label, cfg in configs.items():
            e = next(b for b in exp.backbones if b.label == label)
            teacher_cfg = configs[e.teacher] if e.teacher else None
            torch.manual_seed(0)
            try:
                step_s, eval_s, eval_bs = _time_entry(cfg, teacher_cfg, geo, device)
            except torch.cuda.OutOfMemoryError:
                raise VitbenchError(f"'{label}' runs out of GPU memory at batch {cfg.data.batch_size} "
                                    "(or its eval batch) on this device: lower data.batch_size") from None
            lc = LabelCost(label, e.name, e.preset, e.teacher, step_s, eval_s, eval_bs)
            labels.append(lc)
            if out is not None:
                print(f"timed {label}: {step_s:.3f} s/step, {eval_s:.3f} s per eval batch of {eval_bs}",
                      file=out, flush=True)
        by_label = {lc.label: lc for lc in labels}
        for t in tasks:
            lc, cfg = by_label[t.label], configs[t.label]
            b = cfg.budget
            n_train = geo.n_train[t.size]
            plan = cycle_schedule(max_steps=b.max_steps, max_epochs=b.max_epochs, min_steps=b.min_steps,
                                  cycles=b.cycles, n_train=n_train, n_val=geo.n_val,
                                  batch_size=cfg.data.batch_size, world_size=world)
            steps, evals = plan.cycle, plan.evaluations
            val_batches = math.ceil(geo.n_val / world / lc.eval_batch)
            test_batches = math.ceil(geo.n_test / world / lc.eval_batch)
            lc.runs.append(RunCost(t.name, n_train, steps, evals, steps * lc.step_s,
                                   evals * val_batches * lc.eval_batch_s, startup,
                                   test_batches * lc.eval_batch_s, b.cycles, b.min_cycles))
    finally:
        torch.set_num_threads(threads)
    return SweepEstimate(exp.name, device_text, notes, startup, concurrency, labels)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def estimate_lines(est: SweepEstimate) -> list[str]:
    """The table ``--estimate`` prints: a row per backbone entry, then the sweep's totals."""
    lines = [f"estimate for sweep '{est.name}', timed on {est.device}; start-up {est.startup_s:.1f} s per run",
             f"{'label':<16} {'preset':<7} {'s/step':>8} {'runs':>5} "
             f"{'min/run (smallest..largest)':>28} {'min total':>10}"]
    for lc in est.labels:
        per_run = sorted(r.total_s / 60 for r in lc.runs)
        span = (f"{per_run[0]:.1f}" if f"{per_run[0]:.1f}" == f"{per_run[-1]:.1f}"
                else f"{per_run[0]:.1f}..{per_run[-1]:.1f}")
        total = sum(per_run)
        lines.append(f"{lc.label:<16} {lc.preset:<7} {lc.step_s:>8.3f} {len(lc.runs):>5} {span:>28} {total:>10.1f}")
    n = sum(len(lc.runs) for lc in est.labels)
    lines.append(f"total: {n} runs, {_duration(est.total_s)} of run time; "
                 f"{_duration(est.wall_s)} wall at {est.concurrency} run(s) at a time")
    if est.max_total_s > est.total_s:
        lines.append("budget.cycles: that is every run stopping as soon as it may (converged after its first cycle, "
                     f"or its budget.min_cycles); if every run took all "
                     f"its cycles, {_duration(est.max_total_s)} of run time, "
                     f"{_duration(est.max_total_s / est.concurrency)} wall")
    lines += [f"note: {note}" for note in est.notes]
    return lines
