"""What each backbone costs as images grow: parameters, FLOPs, peak memory, training throughput.

* **FLOPs**: forward FLOPs per image from :func:`vitbench.backbones.count_flops` (torch's
  FLOP counter, with attention counted on the CPU kernel too; a multiply-add is 2 FLOPs;
  element-wise ops are not counted).
* **Patch size**: with ``patch_size=16`` (the default) the backbones whose patch size is free
  (``Backbone.free_patch_size``: ViT, DeiT and PiT) use 16 px patches at every size, so their
  token count grows with the image, which is what the plot is about (quadratic global
  attention). ``patch_size=None`` ("auto") uses each backbone's own default for that size
  instead, i.e. what ``vitbench train`` would build. The others always use their own stems
  (Swin: 2 px patches up to 32 px, 4 px above).
* **x axis**: "tokens at 16 px patches" = pixels / 256, the same for every family, so the
  curves compare cost against image area.
* **Peak memory**: on CUDA, ``max_memory_allocated`` growth over the training steps. On the
  CPU there is no allocator counter, so we report the growth of the process's peak resident
  set (``VmHWM`` in ``/proc/self/status``, reset through ``/proc/self/clear_refs`` after a
  ``malloc_trim``) over the same steps: activations, gradients, AdamW state and allocator
  slack, *approximate* (memory the allocator kept from earlier measurements is not counted).
  Where the peak cannot be reset, memory is reported as null.
* **Throughput**: images/s of full training steps (forward, cross-entropy, backward, AdamW
  step) on random data: one warm-up step, then the median of up to ``steps`` timed steps
  (within ``max_seconds``); expect ±10-20%. On the CPU, :func:`measure_all` uses **one
  thread** by default: on a shared 2-core machine two threads stalled by another process
  made single steps 10-30x slower at random (measured), which says nothing about the model.
"""

from __future__ import annotations

import ctypes
import gc
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from vitbench.errors import VitbenchError

CPU_MEMORY = "peak RSS growth (CPU, approximate)"
CUDA_MEMORY = "CUDA max_memory_allocated growth"


# -- peak memory ---------------------------------------------------------------------------

def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory growth (bytes) over a ``with`` block; ``method`` says how it was measured."""

    def __init__(self, device: torch.device):
        self.device, self.bytes, self.method = device, None, None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            self.method = CUDA_MEMORY
        else:
            ok = _reset_cpu_peak()
            self._base = _status_kib("VmRSS") if ok else None
            self.method = CPU_MEMORY if self._base is not None else None
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        elif self._base is not None:
            peak = _status_kib("VmHWM")
            self.bytes = max(0, peak - self._base) * 1024 if peak is not None else None
        return False


# -- one measurement -----------------------------------------------------------------------

def first_stage_tokens(model: nn.Module) -> int | None:
    """Tokens entering the first attention (patches only), or None for a CNN."""
    pe = getattr(model, "pos_embed", None)
    if isinstance(pe, torch.Tensor) and pe.dim() == 4:  # PiT: [1, C, H, W]
        return int(pe.shape[-2] * pe.shape[-1])
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    if grid is not None:
        return int(grid[0] * grid[1])
    return None


def measure(
    backbone: str, preset: str, image_size: int, *, batch_size: int = 8, in_chans: int = 3, num_classes: int = 10,
    patch_size: int | None = 16, steps: int = 3, max_seconds: float = 1.0, device: str | torch.device = "cpu",
) -> dict:
    """One row of the cost table; ``error`` is set (and the numbers None) if the size does not fit."""
    from vitbench.backbones import count_flops, count_params, get_backbone

    device = torch.device(device)
    cls = get_backbone(backbone)
    overrides = {"patch_size": patch_size} if patch_size and cls.free_patch_size else {}
    row = dict(backbone=backbone, family=cls.family, preset=preset, image_size=image_size,
               patch_size=overrides.get("patch_size"), tokens16=image_size * image_size / 256.0, tokens=None,
               params=None, gflops=None, peak_mem_mib=None, mem_method=None,
               train_images_per_s=None, train_ms_per_image=None, timed_steps=0, error=None)
    try:
        model = cls(preset, **overrides).create(num_classes=num_classes, image_size=image_size, in_chans=in_chans)
    except VitbenchError as e:
        row["error"] = str(e)
        return row
    except Exception as e:  # noqa: BLE001 - a model timm cannot build at this size is a note, not a crash
        row["error"] = f"cannot build at {image_size} px ({type(e).__name__}: {e})"
        return row
    model.to(device)
    row.update(params=count_params(model), tokens=first_stage_tokens(model))
    try:
        row["gflops"] = count_flops(model, image_size, in_chans) / 1e9
    except Exception as e:  # noqa: BLE001
        row["error"] = f"forward fails at {image_size} px ({type(e).__name__}: {e})"
        return row
    if hasattr(model, "set_distilled_training"):
        model.set_distilled_training(False)  # one head's logits in train mode: a plain training step
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch_size, in_chans, image_size, image_size, device=device)
    y = torch.randint(0, num_classes, (batch_size,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        nn.functional.cross_entropy(out, y).backward()
        opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with PeakMemory(device) as mem:
        step()  # warm-up: allocator, AdamW state, kernels
        sync()
        start, times = time.perf_counter(), []
        while len(times) < steps and (not times or time.perf_counter() - start < max_seconds):
            t0 = time.perf_counter()
            step()
            sync()
            times.append(time.perf_counter() - t0)
    per_step = statistics.median(times)  # the median resists a step slowed by another process
    row.update(timed_steps=len(times), train_images_per_s=batch_size / per_step,
               train_ms_per_image=1000 * per_step / batch_size, mem_method=mem.method,
               peak_mem_mib=mem.bytes / 2**20 if mem.bytes is not None else None)
    return row


def measure_all(backbones, presets, image_sizes, threads: int | None = 1, progress=None, **kwargs) -> list[dict]:
    """Rows for every (backbone, preset, size); ``presets`` None: each backbone's default preset.
    ``threads``: CPU threads while measuring (None keeps torch's setting); 1 by default because on
    a shared few-core machine multi-threaded steps stall on busy cores and the timings stop meaning anything."""
    from vitbench.backbones import get_backbone

    rows = []
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for backbone in backbones:
            for preset in presets or [get_backbone(backbone).default_preset()]:
                for size in image_sizes:
                    rows.append(measure(backbone, preset, size, **kwargs))
                    gc.collect()  # the last model and its optimizer state, before the next one is measured
                    if progress:
                        progress(rows[-1])
    finally:
        torch.set_num_threads(old)
    return rows


# -- output --------------------------------------------------------------------------------

def table(rows: list[dict]) -> str:
    def f(v, fmt):
        return "-" if v is None else format(v, fmt)

    mem = next((r["mem_method"] for r in rows if r["mem_method"]), "peak memory")
    head = (f"{'backbone':<14} {'preset':<6} {'px':>4} {'patch':>5} {'tokens':>6} {'params':>10} {'GFLOPs':>8} "
            f"{'peak MiB':>9} {'img/s':>8} {'ms/img':>7}")
    lines = [f"peak MiB = {mem}; img/s = training steps (fwd+bwd+AdamW)", head, "-" * len(head)]
    for r in rows:
        if r["error"] and r["gflops"] is None:
            lines.append(f"{r['backbone']:<14} {r['preset']:<6} {r['image_size']:>4}  skipped: {r['error']}")
            continue
        lines.append(
            f"{r['backbone']:<14} {r['preset']:<6} {r['image_size']:>4} "
            f"{f(r['patch_size'], 'd'):>5} {f(r['tokens'], 'd'):>6} "
            f"{f(r['params'], ',d'):>10} {f(r['gflops'], '.4f'):>8} {f(r['peak_mem_mib'], '.1f'):>9} "
            f"{f(r['train_images_per_s'], '.1f'):>8} {f(r['train_ms_per_image'], '.2f'):>7}"
        )
    return "\n".join(lines)


def plot(path, rows: list[dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitbench.utils import atomic_path

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.4))
    keys = sorted({(r["backbone"], r["preset"]) for r in rows}, key=lambda k: (k[0], k[1]))
    multi = len({p for _, p in keys}) > 1
    for backbone, preset in keys:
        ok = [r for r in rows if (r["backbone"], r["preset"]) == (backbone, preset) and r["gflops"]]
        ok.sort(key=lambda r: r["tokens16"])
        if not ok:
            continue
        label = f"{backbone}-{preset}" if multi else backbone
        xs = [r["tokens16"] for r in ok]
        ax1.plot(xs, [r["gflops"] for r in ok], "o-", label=label)
        timed = [r for r in ok if r["train_ms_per_image"]]
        ax2.plot([r["tokens16"] for r in timed], [r["train_ms_per_image"] for r in timed], "o-", label=label)
    flops = [r for r in rows if r["gflops"]]
    if flops:  # slope guides through the smallest measured point
        x0 = min(r["tokens16"] for r in flops)
        y0 = min(r["gflops"] for r in flops if r["tokens16"] == x0)
        x1 = max(r["tokens16"] for r in flops)
        if x1 > x0:
            for slope, style in ((1, ":"), (2, "--")):
                ax1.plot([x0, x1], [y0, y0 * (x1 / x0) ** slope], color="gray", linestyle=style, linewidth=0.8,
                         label="linear" if slope == 1 else "quadratic")
    for ax, ylabel in ((ax1, "forward GFLOPs per image"), (ax2, "training time per image (ms, this machine)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tokens at 16 px patches (pixels / 256)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    if ax1.get_legend_handles_labels()[0]:  # no lines when every row was skipped: matplotlib would warn
        ax1.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)

