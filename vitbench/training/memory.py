"""Whether one training batch fits in memory: a run that cannot is refused before it writes anything.

An image size or batch size too large for the machine otherwise swaps or crawls for many
minutes before the kernel kills it. The estimate of one step's memory is the weights, their
gradients and AdamW's two moments (16 bytes per trainable parameter, 4 per frozen one), plus
``batch_size`` times the activations autograd keeps per image for backward, measured by a
forward pass on fake tensors (:func:`vitbench.backbones.profile.activation_bytes`), plus the
input batch. It is compared with the memory free on the device the run will use: the GPU's
(``torch.cuda.mem_get_info``) or the RAM the kernel and the process's cgroup (a SLURM job's
limit) still allow.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch
from torch import nn

from vitbench.errors import VitbenchError
from vitbench.rundir import UNKNOWN_DEVICE

GiB = 2**30
# Decoded uint8 batch -> float32, resized, augmented and normalised copies alive at once.
INPUT_COPIES = 3


def run_device(accelerator: str, strategy: str = "auto") -> torch.device | None:
    """The device a run with these trainer settings will train on; None when it cannot be told
    (or asking would start CUDA in a process that a fork-based strategy must fork first)."""
    if accelerator == "cpu":
        return torch.device("cpu")
    if "fork" in strategy or "notebook" in strategy:
        return None
    if accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available():
        local = os.environ.get("LOCAL_RANK", os.environ.get("SLURM_LOCALID", "0"))
        return torch.device("cuda", int(local) % torch.cuda.device_count() if local.isdigit() else 0)
    if accelerator == "auto" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        return torch.device("cpu")
    return None


def device_name(device: torch.device | None) -> str:
    """How results.json, ``sweep estimate`` and the benchmarks name a device: "cuda: NVIDIA H200" or
    "cpu: AMD EPYC 7B13" (the model, not the cores or threads: those are set per task and change the
    speed, not the numbers); ``UNKNOWN_DEVICE`` when it cannot be told without side effects."""
    if device is None or device.type not in ("cuda", "cpu"):  # mps, or a fork-based strategy
        return UNKNOWN_DEVICE
    if device.type == "cuda":
        try:
            return f"cuda: {torch.cuda.get_device_name(device)}"
        except RuntimeError:  # a busy or exclusive GPU: the run may still start, and says so then
            return UNKNOWN_DEVICE
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"cpu: {line.split(':', 1)[1].strip()}"
    except OSError:
        pass
    return f"cpu: {platform.processor() or platform.machine() or 'unknown'}"


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_available() -> int | None:
    """What the process's cgroup v2 memory limit still allows (a SLURM job's --mem), if it has one."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        rel = next(line.split(":", 2)[2] for line in lines if line.startswith("0::"))
        group = Path("/sys/fs/cgroup") / rel.lstrip("/")
        limit = (group / "memory.max").read_text().strip()
        if limit == "max":
            return None
        return int(limit) - int((group / "memory.current").read_text().strip())
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def available_bytes(device: torch.device) -> tuple[int, str] | None:
    """(bytes free for this run, where) or None when unknown."""
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
        except RuntimeError:
            return None
        return int(free), f"is free on GPU {device.index or 0}"
    if device.type == "cpu":
        known = [b for b in (_meminfo_available(), _cgroup_available()) if b is not None]
        return (max(0, min(known)), "of RAM is available") if known else None
    return None


def _gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= 0.1 * GiB else f"{n / 2**20:.0f} MiB"


def _refuse(what: str, need: float, free: int, where: str, fix: str) -> None:
    raise VitbenchError(f"{what} needs about {_gib(need)} but only {_gib(free)} {where}: {fix}")


def check_input_fits(image_size: int, in_chans: int, batch_size: int, device: torch.device | None) -> None:
    """The input batch alone: checked before a model is built at that size."""
    free = available_bytes(device) if device is not None else None
    if free is None:
        return
    per_image = INPUT_COPIES * in_chans * image_size**2 * 4
    if batch_size * per_image > free[0]:
        _refuse(f"a batch of {batch_size} images of {image_size} px (the input alone)", batch_size * per_image,
                free[0], free[1], "use a smaller --image-size (model.image_size)")


def check_training_fits(module: nn.Module, model: nn.Module, image_size: int, in_chans: int, batch_size: int,
                        device: torch.device | None, processes: int = 1) -> None:
    """One training step of ``model`` (the trained network inside ``module``, whose parameters
    all count) with ``batch_size`` images (the batches the run will draw: at most the training
    set); ``processes`` runs share the device's memory (DDP on CPU)."""
    from vitbench.backbones.profile import activation_bytes

    free = available_bytes(device) if device is not None else None
    if free is None:
        return
    measured = activation_bytes(model, image_size, in_chans)
    if measured is None:
        return
    per_image = measured + INPUT_COPIES * in_chans * image_size**2 * 4
    params = list(module.parameters())
    fixed = sum(p.numel() * (16 if p.requires_grad else 4) for p in {id(p): p for p in params}.values())
    need = fixed + batch_size * per_image
    budget = free[0] // max(1, processes)
    if need > budget:
        fits = int((budget - fixed) // per_image) if budget > fixed else 0
        if fits >= 1:
            fix = f"use a --batch-size of at most {fits} (data.batch_size) or a smaller --image-size"
        else:
            fix = "use a smaller --image-size (model.image_size) or a smaller preset: not even one image fits"
        shared = f" (shared by {processes} processes)" if processes > 1 else ""
        _refuse(f"one training step at {image_size} px with batches of {batch_size} (activations "
                f"{_gib(batch_size * per_image)}, weights and optimizer state {_gib(fixed)})",
                need, budget, free[1] + shared, fix)
