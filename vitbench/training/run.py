"""``train(config)``: one run from a resolved config to ``results.json``.

Everything a user can get wrong is checked before anything is written; the run
directory then holds ``config.yaml`` (the resolved config), ``metrics.jsonl``,
``checkpoints/`` (best and last), the W&B run, and finally ``results.json``,
written atomically and last, so its presence means "finished".
"""

from __future__ import annotations

import dataclasses
import gc
import math
import os
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.utilities import rank_zero_only

from vitbench import rundir
from vitbench.backbones import Backbone, count_flops, count_params
from vitbench.config import TrainConfig, check, check_distillation_head
from vitbench.errors import VitbenchError
from vitbench.rundir import CONFIG, METRICS, RESULTS
from vitbench.training import allocator, convergence
from vitbench.training.callbacks import ConvergenceCycles, EpochMetrics, RNGState
from vitbench.training.classifier import ClassifierModule
from vitbench.training.distillation import DistillationModule
from vitbench.training.resolve import resolve
from vitbench.training.schedule import Schedule, cycle_schedule
from vitbench.training.teacher import TeacherSpec, check_compatible, teacher_from_run
from vitbench.training.wandb_logger import make_wandb_logger
from vitbench.utils import write_json, write_text


def _resolve_teacher(cfg: TrainConfig) -> TeacherSpec | None:
    d = cfg.distill
    if d.teacher:
        return teacher_from_run(d.teacher, cfg.plugins)
    if d.teacher_backbone:
        if not d.teacher_checkpoint:
            raise VitbenchError("--teacher-backbone needs --teacher-checkpoint (or pass --teacher RUN_DIR)")
        from vitbench.backbones import get_backbone

        preset = d.teacher_preset or get_backbone(d.teacher_backbone).default_preset()
        return TeacherSpec(d.teacher_backbone, preset, {}, d.teacher_checkpoint)
    return None


def _check_out_dir(out: Path, cfg: TrainConfig) -> str | None:
    """Return a checkpoint to resume from, or None; refuse to clobber another run."""
    if file := next((p for p in (out, *out.parents) if p.exists() and not p.is_dir()), None):
        raise VitbenchError(f"--out {out}: {file} is a file, not a folder: choose another --out")
    if (out / RESULTS).exists():
        raise VitbenchError(f"{out} already holds a finished run ({RESULTS}): choose another --out or delete it")
    if (out / CONFIG).exists():
        # Compared as configs, not as text: a run dir that an older vitbench wrote lacks the keys added
        # since, which take their defaults, as they do for --config.
        saved, now = rundir.read_config(out, fix="choose another --out or delete it"), cfg.to_dict()
        # The same folder spelled otherwise (./r1, r1/, its absolute path) is the same run dir.
        if isinstance(saved.get("out"), str) and Path(saved["out"]).resolve() == out.resolve():
            saved = {**saved, "out": now["out"]}
        if saved != now:
            raise VitbenchError(f"{out} holds an unfinished run with another config ({_differences(saved, now)}): "
                                "choose another --out, delete it, or resume with the run dir's values")
        hpc = rundir.hpc_checkpoints(out)
        last = rundir.last_checkpoint(out)
        # The newest: a requeue checkpoint (a requeue or an interrupt saved it), or last.ckpt of a run that
        # went on after resuming from one (resuming the older one would redo finished epochs).
        found = [*hpc, last] if last.exists() else hpc
        if not found:
            return None
        newest = max(found, key=lambda p: p.stat().st_mtime_ns)
        # Lightning loads it itself: first check that it holds weights and plain values only (not a pickle
        # that runs code, not one a kill truncated mid-save), so a bad one is a one-line error naming it.
        rundir.load_checkpoint(newest, fix="delete it to resume from an older checkpoint, or choose another --out")
        return str(newest)
    # Another DDP rank may be writing config.yaml right now (a hidden temp file first).
    if out.exists() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise VitbenchError(f"{out} exists and is not a vitbench run dir: choose another --out")
    return None


def _differences(saved: dict, now: dict, shown: int = 3) -> str:
    """The keys whose values differ, ``optim.lr: 0.002 in the run dir, 0.001 now``; the first ``shown`` of them."""
    def leaves(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            out.update(leaves(v, key + ".") if isinstance(v, dict) else {key: v})
        return out

    missing = object()
    old, new = leaves(saved), leaves(now)
    keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k, missing) != new.get(k, missing)]

    def show(value) -> str:
        if value is missing:
            return "not set"
        return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...")

    parts = [f"{k}: {show(old.get(k, missing))} in the run dir, {show(new.get(k, missing))} now" for k in keys[:shown]]
    return "; ".join(parts) + (f"; and {len(keys) - shown} more" if len(keys) > shown else "")


def build(cfg: TrainConfig, backbone: Backbone):
    """(datamodule, module, teacher) of a checked, resolved ``cfg``; writes nothing."""
    from vitbench.data import ImageClassificationDataModule

    teacher = _resolve_teacher(cfg)
    if teacher is not None:
        check_distillation_head(cfg.model.backbone)
    data = ImageClassificationDataModule(**vars(cfg.data), seed=cfg.seed, image_size=cfg.model.image_size,
                                         in_chans=backbone.in_chans, drop_last=cfg.trainer.compile)
    data.setup("fit")
    image_size, in_chans = data.image_size, data.in_chans
    backbone.check_image_size(image_size)
    from vitbench.training import memory

    device = memory.run_device(cfg.trainer.accelerator, cfg.trainer.strategy)
    # The input alone, before a model of that size exists.
    memory.check_input_fits(image_size, in_chans, min(cfg.data.batch_size, data.n_train), device)
    common = dict(
        backbone=cfg.model.backbone, num_classes=data.num_classes, image_size=image_size, in_chans=in_chans,
        preset=cfg.model.preset, backbone_overrides=cfg.model.overrides, plugins=cfg.plugins,
        compile_model=cfg.trainer.compile, lr_cycles=cfg.budget.cycles, **vars(cfg.optim),
    )
    if teacher is None:
        module = ClassifierModule(**common)
    else:
        check_compatible(teacher, data.class_names, image_size, in_chans)
        module = DistillationModule(
            **common, teacher_backbone=teacher.backbone, teacher_checkpoint=teacher.checkpoint,
            teacher_preset=teacher.preset, teacher_overrides=teacher.overrides,
            distillation=cfg.distill.kind, alpha=cfg.distill.alpha, tau=cfg.distill.tau,
        )
    processes = cfg.trainer.devices if device is not None and device.type == "cpu" else 1
    batch = min(cfg.data.batch_size, data.n_train)
    memory.check_training_fits(module, module.model, image_size, in_chans, batch, device, processes)
    return data, module, teacher


def train(cfg: TrainConfig) -> dict:
    """Train, test the best-val checkpoint, write ``results.json``; return it.

    ``cfg`` is checked here and never changed: the run's resolved config (written to config.yaml) is a copy.
    """
    started = time.time()
    # Before anything is allocated: each CPU training step then reuses its activations' memory.
    allocator.keep_freed_memory()
    cfg, backbone = resolve(check(cfg))
    _check_precision(cfg)
    out = Path(cfg.out)
    # Seeded before the model is built too: its initial weights are part of what the seed fixes.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    data, module, teacher = build(cfg, backbone)
    if cfg.budget.cycles > 1 and data.n_val == 0:
        raise VitbenchError(f"budget.cycles {cfg.budget.cycles} needs validation data to judge each cycle, and "
                            "data.val_fraction is 0: set data.val_fraction above 0, or budget.cycles to 1")
    if cfg.model.image_size is None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, image_size=data.image_size))
    resume = _check_out_dir(out, cfg)

    progress = cfg.trainer.progress if cfg.trainer.progress is not None else sys.stderr.isatty()
    metrics = EpochMetrics(out / METRICS, echo=not progress)
    best = ModelCheckpoint(dirpath=out / rundir.CHECKPOINTS, filename=rundir.BEST, monitor="val_acc", mode="max",
                           enable_version_counter=False)
    # At every validation, not only at an improving one (Lightning's save_last waits for a new best): a run on
    # a plateau, as every converging cycle ends, must not lose its steps since its best to a kill.
    last = ModelCheckpoint(dirpath=out / rundir.CHECKPOINTS, filename=rundir.LAST, enable_version_counter=False)
    callbacks = [metrics, best, last, RNGState()] + ([TQDMProgressBar()] if progress else [])
    sched = schedule(cfg, data, cfg.trainer.devices * cfg.trainer.num_nodes)
    if sched.cycles > 1:
        callbacks.append(ConvergenceCycles(metrics, sched.cycle, sched.cycles, cfg.budget.min_cycles,
                                           echo=not progress))
    info = run_info(cfg, data, module, teacher)
    logger = make_wandb_logger(cfg, out, info)
    if logger is not None:
        # Not self.log(lr): a Python float logged each step is a host-to-device copy, and a GPU sync.
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    # _make_trainer rejects bad trainer settings before any write
    trainer = _make_trainer(cfg, out, callbacks, logger, progress, sched)
    if rank_zero_only.rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_text(out / CONFIG, cfg.to_yaml())

    if trainer.strategy.root_device.type == "cuda":
        # TF32 tensor cores for float32 matmuls (Lightning suggests it; ~1e-3 relative error).
        torch.set_float32_matmul_precision("high")
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # Everything alive now (modules, data, model) lives for the whole run: keep the cyclic GC
    # from rescanning it at every collection of the per-step garbage.
    gc.collect()
    gc.freeze()
    from vitbench.training import requeue

    # SIGTERM/SIGINT: a checkpoint at the next batch boundary, then exit; rerunning resumes.
    try:
        with requeue.stop_on_signal(requeue.stop_enabled(trainer.world_size, trainer.strategy), trainer):
            # weights_only: explicit, so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD cannot turn unpickling back on.
            trainer.fit(module, datamodule=data, ckpt_path=resume, weights_only=True)
            test = trainer.test(module, datamodule=data, ckpt_path=best.best_model_path or None, verbose=False,
                                weights_only=True)[0]
    finally:
        gc.unfreeze()  # a process that trains again (benchmarks, notebooks) must be able to collect this run

    cycles_run = max(1, math.ceil(trainer.global_step / sched.cycle))
    results = {
        **info,
        "epochs": len(metrics.rows),  # not trainer.current_epoch: a run resumed at its end does not count its last
        "steps": trainer.global_step,
        "cycles": cycles_run,
        **convergence.verdict(metrics.validations, cycles_run * sched.cycle, cycle=sched.cycle),
        "val_history": [[s, round(a, convergence.HISTORY_DIGITS)] for s, a in metrics.validations],
        "test_acc": float(test["test_acc"]),
        "test_acc5": float(test["test_acc5"]),
        "best_val_acc": float(best.best_model_score) if best.best_model_score is not None else None,
        "images_per_s": metrics.images_per_s,
        # This process's wall time: a resumed run's covers its last part only. train_time_s is the clock
        # images_per_s runs on, over every part (the checkpoints carry it): training steps, without each
        # part's first WARMUP_STEPS (compilation, allocator warm-up) and without validation.
        "wall_time_s": time.time() - started,
        "train_time_s": metrics.train_time,
        "world_size": trainer.world_size,
        "wandb_run_id": logger.version if logger else None,
    }
    if trainer.is_global_zero:
        if logger is not None:
            logger.experiment.log({"n_train": info["n_train"], "data_fraction": info["fraction"],
                                   "test_acc": results["test_acc"], "test_acc5": results["test_acc5"]})
            logger.experiment.summary.update(
                {k: results[k] for k in ("test_acc", "test_acc5", "best_val_acc", "n_train", "images_per_s")}
            )
        write_json(out / RESULTS, results)
        for path in rundir.hpc_checkpoints(out):  # finished: a requeue must not resume this run again
            path.unlink()
    if logger is not None and trainer.is_global_zero:
        logger.experiment.finish()
    return results


def _check_precision(cfg: TrainConfig) -> None:
    """Refuse a precision the run's device cannot train in: Lightning would swap in another one, and
    the run's config.yaml and results would name a precision it never used."""
    from vitbench.training import memory

    t = cfg.trainer
    device = memory.run_device(t.accelerator, t.strategy)
    if t.precision == "16-mixed" and device is not None and device.type == "cpu":
        raise VitbenchError("trainer.precision 16-mixed: float16 mixed precision needs a GPU, and this run trains "
                            "on the CPU (Lightning would silently use bf16-mixed): pass --precision bf16-mixed "
                            "(or 32-true)")


def schedule(cfg: TrainConfig, data, world_size: int) -> Schedule:
    """The run's cycles and validations: see :func:`vitbench.training.schedule.cycle_schedule`."""
    b = cfg.budget
    return cycle_schedule(max_steps=b.max_steps, max_epochs=b.max_epochs, min_steps=b.min_steps, cycles=b.cycles,
                          n_train=data.n_train, n_val=data.n_val, batch_size=cfg.data.batch_size,
                          world_size=world_size)


def _make_trainer(cfg: TrainConfig, out: Path, callbacks: list, logger, progress: bool,
                  sched: Schedule) -> L.Trainer:
    b, t = cfg.budget, cfg.trainer
    # Lightning's hint that srun exists but was not used: a local run on a SLURM login node or
    # workstation is meant to run here, and the hint would turn one-line errors into three.
    warnings.filterwarnings("ignore", message=r"The `srun` command is available")
    world = t.devices * t.num_nodes
    # Counted in steps for both budgets, so a budget shorter than an epoch still validates; each cycle
    # of budget.cycles validates as a run of one cycle does.
    val_schedule = dict(check_val_every_n_epoch=None, val_check_interval=sched.every)
    counted_in_steps = bool(b.min_steps) or b.cycles > 1
    from vitbench.training import requeue

    try:
        return L.Trainer(
            default_root_dir=out, accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes,
            strategy=t.strategy, precision=t.precision,
            # min_steps and cycles: the run is counted in steps (the epochs it takes follow from them)
            max_epochs=b.max_epochs if b.max_epochs is not None and not counted_in_steps else -1,
            max_steps=sched.max_steps if counted_in_steps else b.max_steps or -1,
            logger=logger or False, enable_progress_bar=progress,
            enable_model_summary=False, deterministic=t.deterministic, benchmark=not t.deterministic,
            log_every_n_steps=10,
            num_sanity_val_steps=0, **val_schedule,
            # in a packed SLURM job, the batch script requeues; SIGTERM/SIGINT checkpoint and stop
            **requeue.trainer_kwargs(callbacks, stop=requeue.stop_enabled(world)),
        )
    except (MisconfigurationException, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise VitbenchError(
            f"trainer settings rejected ({first}): check trainer.accelerator, precision, strategy and devices"
        ) from None


def run_info(cfg: TrainConfig, data, module, teacher: TeacherSpec | None) -> dict:
    """What identifies the run: goes into results.json and the W&B config."""
    from vitbench import __version__

    backbone = module.backbone
    return {
        "label": cfg.label or (f"{cfg.model.backbone}_distilled" if teacher else cfg.model.backbone),
        "backbone": cfg.model.backbone,
        "family": backbone.family,
        "baseline": bool(backbone.baseline),
        "preset": cfg.model.preset,
        "dataset": cfg.data.dataset,
        # With samples_per_class the fraction is derived, so data size is comparable either way.
        "fraction": cfg.data.fraction if cfg.data.samples_per_class is None
        else data.n_train / (data.n_source_train - data.n_val),
        "samples_per_class": cfg.data.samples_per_class,
        "n_train": data.n_train,
        "n_val": data.n_val,
        "n_test": data.n_test,
        "seed": cfg.seed,
        "sweep": cfg.sweep,
        "image_size": data.image_size,
        "in_chans": data.in_chans,
        "num_classes": data.num_classes,
        "class_names": list(data.class_names),
        "params": count_params(module.model),
        "gflops": count_flops(module.model, data.image_size, data.in_chans) / 1e9,
        "teacher": (teacher.run_dir or teacher.checkpoint) if teacher else None,
        "distillation": cfg.distill.kind if teacher else None,
        "vitbench_version": __version__,
        "hostname": os.uname().nodename,
        **environment(cfg),
    }


def environment(cfg: TrainConfig) -> dict:
    """The software and the device the numbers came from. A study resumed across sessions, machines or
    fresh installs can mix them (constraints.txt pins the dependencies for ./install.sh only, and not
    torch): the report lists every combination its runs used."""
    import platform
    from importlib import metadata

    from vitbench.training import memory

    software = [f"python {platform.python_version()}", f"torch {torch.__version__}"]  # with its CUDA build
    for dist in ("lightning", "timm"):
        try:
            software.append(f"{dist} {metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            software.append(f"{dist} unknown")
    device = memory.device_name(memory.run_device(cfg.trainer.accelerator, cfg.trainer.strategy))
    return {"software": ", ".join(software), "device": device}
