"""How close does vitbench's training loop get to a bare PyTorch loop?

Trains the same backbone on the same in-memory Fashion-MNIST subset for the same number of
steps, once with a hand-written loop (uint8 batches -> BatchTransform -> forward/backward/
AdamW) and once through ``vitbench.train`` (Lightning, metrics, checkpoints; W&B disabled),
and prints training images/s for both and their ratio, measured in one run.

    python benchmarks/loop_overhead.py --backbone vit --steps 200 [--device cuda]

The roadmap target: ratio >= 0.9 on a GPU with GPU-resident data, bf16 and compile.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def bare_loop(backbone: str, steps: int, batch_size: int, device: str) -> float:
    from vitbench.backbones import create_backbone
    from vitbench.data import ImageClassificationDataModule

    data = ImageClassificationDataModule(fraction=0.1, batch_size=batch_size)
    data.setup()
    model = create_backbone(backbone, "micro").create(data.num_classes, data.image_size, data.in_chans).to(device)
    transform = data.train_transform.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    done, images, start = 0, 0, None
    while done < steps:
        for x, y in data.train_dataloader():
            if done == 5:  # warm-up steps are not timed
                start, images = time.perf_counter(), 0
            x, y = transform(x.to(device, non_blocking=True)), y.to(device, non_blocking=True)
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done, images = done + 1, images + len(x)
            if done == steps:
                break
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return images / (time.perf_counter() - start)


def vitbench_loop(backbone: str, steps: int, batch_size: int, device: str) -> float:
    from vitbench.config import build_config
    from vitbench.training import train

    with tempfile.TemporaryDirectory() as out:
        cfg = build_config({
            "out": f"{out}/run", "model": {"backbone": backbone, "preset": "micro"},
            "data": {"fraction": 0.1, "batch_size": batch_size}, "budget": {"max_steps": steps},
            "trainer": {"accelerator": "gpu" if device.startswith("cuda") else "cpu", "progress": False},
            "wandb": {"mode": "disabled"},
        })
        return train(cfg)["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="vit")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    bare = bare_loop(a.backbone, a.steps, a.batch_size, a.device)
    ours = vitbench_loop(a.backbone, a.steps, a.batch_size, a.device)
    print(f"{a.backbone} micro, batch {a.batch_size}, {a.steps} steps on {a.device}")
    print(f"bare PyTorch loop   {bare:10,.0f} images/s")
    print(f"vitbench.train      {ours:10,.0f} images/s")
    print(f"ratio               {ours / bare:10.2f}")


if __name__ == "__main__":
    main()
