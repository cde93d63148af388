"""How close does vitbench's training get to a bare PyTorch loop? One JSON row per family.

For each built-in family (its first backbone at ``micro``) on the same in-memory
Fashion-MNIST subset, batch and device, measured in one run, interleaved:

* ``bare``: a hand-written loop: uint8 batches drawn by index from tensors on the device,
  ``BatchTransform``, forward/backward/AdamW (timm's parameter groups, as ``vitbench train``: no
  weight decay on norms and biases); then the same validation schedule
  (``vitbench.training.schedule``) and a test pass, so its wall time is "the same work";
* ``step`` / ``epoch``: ``vitbench.train`` (Lightning, metrics, checkpoints, best-checkpoint
  test; W&B off) with a step budget and with an epoch budget;
* ``bf16``, ``compile``: ``vitbench.train`` (step budget) with ``trainer.precision:
  bf16-mixed`` and with ``trainer.compile: true``.

Training images/s excludes the first 5 steps of a run of at least 50 (warm-up, compilation), in
both loops. Each family first runs an untimed warm-up (one epoch, so every batch shape, the last
partial one included, has its kernels set up), then ``--repeats`` interleaved bare/vitbench pairs per
budget; a ratio is the median of the pairs' ratios (single runs on a 2-core VM vary by 10-30 %).
Both loops run with the process-wide settings ``vitbench train`` makes, set once at the start:
the allocator's (:mod:`vitbench.training.allocator`; otherwise the process's first bare run would
page-fault its activations in at every step while the runs after the first ``vitbench train`` would
not) and, on a GPU, cuDNN autotuning and TF32 matmuls; the bare loop also puts a ``channels_last``
backbone (resnet) in NHWC on a GPU, as ``vitbench train`` does.
The targets: ``train_ratio`` (vitbench / bare images/s) >= 0.9 and ``run_ratio`` (vitbench
wall / bare wall for the whole run) <= 1.15 for both budgets.

    python benchmarks/loop_overhead.py [--device cuda] [--steps 100] [--out results.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time

import torch

from vitbench.training import memory

WARMUP = 5
FRACTION = 0.1


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bare_run(backbone: str, *, steps: int | None, epochs: int | None, batch_size: int, device: str,
             preset: str = "micro") -> dict:
    """The bare loop's training images/s and its whole-run wall time (data, train, validation, test)."""
    from timm.optim import create_optimizer_v2

    from vitbench.backbones import create_backbone
    from vitbench.data import ImageClassificationDataModule
    from vitbench.training.schedule import total_steps, validation_interval

    start = time.perf_counter()
    data = ImageClassificationDataModule(fraction=FRACTION, batch_size=batch_size)
    data.setup()
    train_x, train_y, test_x, test_y = (t.to(device) for t in data.arrays())
    train_rows = torch.as_tensor(data.train_indices, device=device)
    val_rows = torch.as_tensor(data.val_indices, device=device)
    spec = create_backbone(backbone, preset)
    model = spec.create(data.num_classes, data.image_size, data.in_chans).to(device)
    if spec.channels_last and device.startswith("cuda"):  # as ClassifierModule.configure_model does
        model.to(memory_format=torch.channels_last)
    train_tf, eval_tf = data.train_transform.to(device), data.eval_transform.to(device)
    opt = create_optimizer_v2(model, opt="adamw", lr=1e-3, weight_decay=0.05)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    n_steps = total_steps(max_steps=steps, max_epochs=epochs, n_train=len(train_rows), batch_size=batch_size)
    every = validation_interval(n_steps, n_val=len(val_rows), batch_size=batch_size)
    eval_batch = data.eval_batch_size

    on_cpu = device == "cpu"

    def gather(x, y, idx):
        if on_cpu:  # numpy's fancy indexing beats torch's on CPU tensors (no thread-pool dispatch)
            i = idx.numpy()
            return torch.from_numpy(x.numpy()[i]), torch.from_numpy(y.numpy()[i])
        return x[idx], y[idx]

    @torch.inference_mode()
    def accuracy(x, y, rows) -> float:
        model.eval()
        correct = 0
        for i in range(0, len(rows), eval_batch):
            xb, yb = gather(x, y, rows[i:i + eval_batch])
            correct += (model(eval_tf(xb)).argmax(1) == yb).sum()
        model.train()
        return float(correct) / len(rows)

    # As EpochMetrics does: warm-up steps are left out only of a run of at least ten times as many.
    warmup = WARMUP if n_steps >= 10 * WARMUP else 0
    done, images, train_s, t0 = 0, 0, 0.0, None
    epoch = 0
    while done < n_steps:
        g = torch.Generator().manual_seed(epoch)
        order = train_rows[torch.randperm(len(train_rows), generator=g).to(device)]
        epoch += 1
        for i in range(0, len(order), batch_size):
            if done == warmup:
                _sync(device)
                t0, images = time.perf_counter(), 0
            xb, y = gather(train_x, train_y, order[i:i + batch_size])
            loss = criterion(model(train_tf(xb)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done, images = done + 1, images + len(y)
            if done % every == 0:
                _sync(device)
                if t0 is not None:  # a validation inside the warm-up: nothing timed yet
                    train_s += time.perf_counter() - t0
                accuracy(train_x, train_y, val_rows)
                t0 = time.perf_counter() if done >= warmup else None
            if done == n_steps:
                break
    _sync(device)
    train_s += time.perf_counter() - t0
    accuracy(test_x, test_y, torch.arange(len(test_y), device=device))
    return {"images_per_s": images / train_s, "wall_s": time.perf_counter() - start, "steps": n_steps}


def vitbench_run(backbone: str, *, steps: int | None, epochs: int | None, batch_size: int, device: str,
                 precision: str = "32-true", compile: bool = False, preset: str = "micro") -> dict:
    from vitbench.config import build_config
    from vitbench.training import train

    with tempfile.TemporaryDirectory() as out:
        cfg = build_config({
            "out": f"{out}/run", "model": {"backbone": backbone, "preset": preset},
            "data": {"fraction": FRACTION, "batch_size": batch_size},
            "budget": {"max_steps": steps, "max_epochs": epochs},
            "trainer": {"accelerator": "gpu" if device.startswith("cuda") else "cpu", "progress": False,
                        "precision": precision, "compile": compile},
            "wandb": {"mode": "disabled"},
        })
        with contextlib.redirect_stdout(sys.stderr):  # its epoch lines: stdout is this script's JSON
            r = train(cfg)
    return {"images_per_s": r["images_per_s"], "wall_s": r["wall_time_s"], "steps": r["steps"]}


def _median(values: list[float]) -> float:
    return statistics.median(values)


def family_row(backbone: str, family: str, a) -> dict:
    step = dict(steps=a.steps, epochs=None, batch_size=a.batch_size, device=a.device)
    epoch = dict(steps=None, epochs=a.epochs, batch_size=a.batch_size, device=a.device)
    # Untimed: a process's first pass creates its kernels' primitives for each shape (oneDNN,
    # cuDNN), which would count against whichever loop ran first. A whole epoch, so that the
    # shape of its last, partial batch is set up too (a few steps would leave it to the first pair).
    bare_run(backbone, steps=None, epochs=1, batch_size=a.batch_size, device=a.device)
    pairs: dict[str, list[tuple[dict, dict]]] = {"step": [], "epoch": []}
    for _ in range(a.repeats):  # interleaved, so a drift in machine speed hits both loops alike
        for budget, kw in (("step", step), ("epoch", epoch)):
            pairs[budget].append((bare_run(backbone, **kw), vitbench_run(backbone, **kw)))

    def med(budget: str, key: str, which: int) -> float:
        return _median([p[which][key] for p in pairs[budget]])

    def ratio(budget: str, key: str) -> float:
        return round(_median([p[1][key] / p[0][key] for p in pairs[budget]]), 3)

    row = {
        "family": family, "backbone": backbone, "preset": "micro", "repeats": a.repeats,
        "bare_images_per_s": round(med("step", "images_per_s", 0)),
        "step_images_per_s": round(med("step", "images_per_s", 1)),
        "epoch_images_per_s": round(med("epoch", "images_per_s", 1)),
        "train_ratio_step": ratio("step", "images_per_s"),
        "train_ratio_epoch": ratio("epoch", "images_per_s"),
        "run_ratio_step": ratio("step", "wall_s"),
        "run_ratio_epoch": ratio("epoch", "wall_s"),
        "train_ratios_each": {b: [round(p[1]["images_per_s"] / p[0]["images_per_s"], 3) for p in pairs[b]]
                              for b in pairs},
        "run_ratios_each": {b: [round(p[1]["wall_s"] / p[0]["wall_s"], 3) for p in pairs[b]] for b in pairs},
        "bare_wall_s": [round(med("step", "wall_s", 0), 2), round(med("epoch", "wall_s", 0), 2)],
        "vitbench_wall_s": [round(med("step", "wall_s", 1), 2), round(med("epoch", "wall_s", 1), 2)],
        "steps": [pairs["step"][0][0]["steps"], pairs["epoch"][0][0]["steps"]],
    }
    fp32 = row["step_images_per_s"]
    if not a.skip_bf16:
        bf16 = vitbench_run(backbone, **step, precision="bf16-mixed")
        row["bf16_images_per_s"] = round(bf16["images_per_s"])
        row["bf16_gain"] = round(bf16["images_per_s"] / fp32, 3)
    if not a.skip_compile:
        comp = vitbench_run(backbone, **step, compile=True)
        row["compile_images_per_s"] = round(comp["images_per_s"])
        row["compile_gain"] = round(comp["images_per_s"] / fp32, 3)
        row["compile_wall_s"] = round(comp["wall_s"], 2)
    row["ok"] = (min(row["train_ratio_step"], row["train_ratio_epoch"]) >= 0.9
                 and max(row["run_ratio_step"], row["run_ratio_epoch"]) <= 1.15)
    return row


def device_name(device: str) -> str:
    name = memory.device_name(torch.device(device))
    return name if device.startswith("cuda") else f"{name}, {torch.get_num_threads()} torch threads"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=100, help="the step budget")
    p.add_argument("--epochs", type=int, default=2,
                   help=f"the epoch budget (epochs of {FRACTION * 100:.0f} %% of the data)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3,
                   help="interleaved bare/vitbench pairs per budget; ratios are medians")
    p.add_argument("--backbones", help="comma-separated (default: one backbone per family, without distillation head)")
    p.add_argument("--skip-bf16", action="store_true")
    p.add_argument("--skip-compile", action="store_true")
    p.add_argument("--out", help="also write the JSON here")
    a = p.parse_args()
    from vitbench.training import allocator

    allocator.keep_freed_memory()
    if a.device.startswith("cuda"):
        # What a CUDA `vitbench train` sets for the whole process: set before the first bare run too.
        torch.backends.cudnn.benchmark = True
        torch.set_float32_matmul_precision("high")

    from vitbench.backbones import get_backbone, list_backbones

    names = a.backbones.split(",") if a.backbones else None
    if names is None:
        firsts: dict[str, str] = {}
        plain_first = sorted(list_backbones(), key=lambda n: get_backbone(n).distillation_head)
        for name in plain_first:  # a family's plain member (vit, not deit)
            firsts.setdefault(get_backbone(name).family, name)
        names = list(firsts.values())
    rows = []

    def result() -> dict:
        return {
            "benchmark": "loop_overhead", "device": device_name(a.device), "torch": torch.__version__,
            "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
            "batch_size": a.batch_size, "step_budget": a.steps, "epoch_budget": a.epochs, "fraction": FRACTION,
            "repeats": a.repeats,
            "targets": {"train_ratio": ">= 0.9", "run_ratio": "<= 1.15"},
            "all_ok": all(r["ok"] for r in rows), "complete": len(rows) == len(names), "rows": rows,
        }

    for name in names:
        rows.append(family_row(name, get_backbone(name).family, a))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if a.out:  # after every row: a benchmark cut short still leaves what it measured
            with open(a.out, "w") as f:
                f.write(json.dumps(result(), indent=1) + "\n")
    print(json.dumps(result(), indent=1))


if __name__ == "__main__":
    main()
