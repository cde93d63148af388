"""Packed vs unpacked sweep throughput: K runs at once on one device, against one at a time.

Writes one small experiment (one backbone per family at ``--preset``, 32 px, ``--seeds``
seeds, a ``--steps`` step budget, W&B off) and runs it with ``vitbench sweep run`` twice,
into fresh sweep dirs: ``resources.runs_per_device: 1``, then ``K``. Prints a JSON line
with each wall time, the sweep's tasks per hour and training images per second, and the
speed-up, measured in one run.

    python benchmarks/packing.py [--preset tiny] [--runs-per-device 4] [--steps 1000] [--accelerator gpu]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

FAMILIES = ["resnet", "vit", "swin", "pit"]


def experiment(name: str, a, runs_per_device: int) -> dict:
    return {
        "name": name,
        "dataset": "fashion_mnist",
        "fractions": [0.1],
        "seeds": list(range(a.seeds)),
        "budget": {"max_steps": a.steps},
        "backbones": [{"name": b, "preset": a.preset} for b in a.backbones.split(",")],
        "train": {"model": {"image_size": 32}, "data": {"batch_size": a.batch_size},
                  "trainer": {"precision": a.precision}},
        "resources": {"accelerator": a.accelerator, "devices": 1, "nodes": 1, "runs_per_device": runs_per_device},
        "wandb": {"mode": "disabled"},
        "local": {"parallel": 1},
    }


def run_sweep(root: Path, a, runs_per_device: int) -> dict:
    name = f"pack{runs_per_device}"
    exp = root / f"{name}.yaml"
    exp.write_text(yaml.safe_dump(experiment(name, a, runs_per_device), sort_keys=False))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "vitbench", "sweep", "run", str(exp), "--sweep-dir", str(root / name)],
                       capture_output=True, text=True)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        sys.exit(f"sweep with runs_per_device {runs_per_device} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    results = [json.loads(p.read_text()) for p in (root / name).rglob("results.json")]
    images = sum(res["steps"] * a.batch_size for res in results)
    return {"runs_per_device": runs_per_device, "tasks": len(results), "wall_s": round(wall, 1),
            "tasks_per_hour": round(3600 * len(results) / wall, 1), "train_images_per_s": round(images / wall),
            "per_run_images_per_s": round(sum(res["images_per_s"] for res in results) / len(results))}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--backbones", default=",".join(FAMILIES))
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--runs-per-device", type=int, default=4)
    p.add_argument("--accelerator", default="gpu")
    p.add_argument("--precision", default="bf16-mixed")
    p.add_argument("--out")
    a = p.parse_args()
    import torch

    from vitbench.training import memory

    device = memory.device_name(torch.device("cuda", 0) if a.accelerator == "gpu" else torch.device("cpu"))
    result = {
        "benchmark": "packing", "device": device, "command": "python " + " ".join(sys.argv),
        "date": time.strftime("%Y-%m-%d"), "preset": a.preset, "image_size": 32, "steps_per_run": a.steps,
        "batch_size": a.batch_size, "precision": a.precision, "complete": False,
    }

    def save() -> None:
        # After each sweep, so that a run cut short by a time limit still leaves what it measured.
        if a.out:
            Path(a.out).write_text(json.dumps(result, indent=1) + "\n")

    with tempfile.TemporaryDirectory() as tmp:
        for key, k in (("unpacked", 1), ("packed", a.runs_per_device)):
            print(f"{time.strftime('%T')} {key}: runs_per_device {k} ...", file=sys.stderr, flush=True)
            result[key] = run_sweep(Path(tmp), a, k)
            print(f"{time.strftime('%T')} {key}: {result[key]}", file=sys.stderr, flush=True)
            save()
    result["speedup"] = round(result["unpacked"]["wall_s"] / result["packed"]["wall_s"], 2)
    result["complete"] = True
    save()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
