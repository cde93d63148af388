"""Model FLOP utilisation of ViT-S/16 at 224 px: what fraction of the chip's bf16 peak training reaches.

Measured in one run on the current GPU:

* the peak: a large bf16 matrix product (8192^3), against the datasheet figure given with ``--peak-tflops``;
* a bare training step (forward, backward, AdamW) of vitbench's ``vit``/``small`` model under
  bf16 autocast, eager and under ``torch.compile``, on random 224-px RGB batches;
* ``vitbench.train`` itself on Fashion-MNIST resized to 224 px (bf16-mixed, and compiled).

FLOPs per image are counted by torch's FLOP counter on the forward pass (``count_flops``);
a training step costs 3x that (the backward pass is twice the forward). MFU = images/s x
FLOPs per training image / peak.

    python benchmarks/mfu.py [--batch-size 256] [--steps 50] [--peak-tflops 989]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time

import torch

from vitbench.training import memory


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, n: int = 8192, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t) / 1e12


def bare_steps(model: torch.nn.Module, batch_size: int, steps: int, image_size: int, device: str) -> float:
    """Training images/s of ``model`` under bf16 autocast; 5 warm-up steps untimed."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device == "cuda")
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    for i in range(steps + 5):
        if i == 5:
            _sync(device)
            t = time.perf_counter()
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return batch_size * steps / (time.perf_counter() - t)


def vitbench_run(a, compile: bool) -> dict:
    from vitbench.config import build_config
    from vitbench.training import train

    with tempfile.TemporaryDirectory() as out:
        cfg = build_config({
            "out": f"{out}/run", "model": {"backbone": "vit", "preset": a.preset, "image_size": a.image_size},
            "data": {"fraction": 0.2, "batch_size": a.batch_size}, "budget": {"max_steps": a.vitbench_steps},
            "trainer": {"accelerator": "gpu" if a.device == "cuda" else "cpu", "precision": "bf16-mixed",
                        "compile": compile, "progress": False},
            "wandb": {"mode": "disabled"},
        })
        return train(cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--vitbench-steps", type=int, default=150)
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="the datasheet's dense bf16 peak (H100/H200 SXM: 989)")
    p.add_argument("--preset", default="small")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default="cuda", help="cuda; cpu only to check the script with --preset micro")
    p.add_argument("--out")
    a = p.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("mfu.py needs a CUDA GPU (or --device cpu to check the script)")
    from vitbench.backbones import count_flops, create_backbone

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    measured_peak = matmul_peak(a.device, n=8192 if a.device == "cuda" else 1024)
    model = create_backbone("vit", a.preset).create(num_classes=10, image_size=a.image_size, in_chans=3).to(a.device)
    flops = count_flops(model, a.image_size, 3)
    train_flops = 3 * flops

    def mfu(images_per_s: float, per_image: float = train_flops) -> dict:
        achieved = images_per_s * per_image / 1e12
        return {"images_per_s": round(images_per_s), "tflops": round(achieved, 1),
                "mfu_datasheet": round(achieved / a.peak_tflops, 3),
                "mfu_measured_peak": round(achieved / measured_peak, 3)}

    rows = {"bare_eager": mfu(bare_steps(model, a.batch_size, a.steps, a.image_size, a.device))}
    model.compile()
    rows["bare_compiled"] = mfu(bare_steps(model, a.batch_size, a.steps, a.image_size, a.device))
    del model
    if a.device == "cuda":
        torch.cuda.empty_cache()
    for name, comp in (("vitbench", False), ("vitbench_compiled", True)):
        r = vitbench_run(a, comp)
        rows[name] = {**mfu(r["images_per_s"], 3 * r["gflops"] * 1e9), "in_chans": r["in_chans"],
                      "wall_s": round(r["wall_time_s"], 1)}
    result = {
        "benchmark": "mfu", "model": f"vit/{a.preset} at {a.image_size} px",
        "device": memory.device_name(torch.device(a.device)),
        "torch": torch.__version__, "command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"),
        "batch_size": a.batch_size, "precision": "bf16 autocast", "gflops_per_image_forward": round(flops / 1e9, 3),
        "peak_tflops_datasheet": a.peak_tflops, "peak_tflops_measured_matmul": round(measured_peak, 1),
        "rows": rows,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
