"""``vitbench analyze``: attention maps, position-embedding similarity, and cost per image size."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vitbench.config import add_config_argument
from vitbench.errors import VitbenchError
from vitbench.wandb_mode import CHOICES as WANDB_MODES

# attention draws one grid: past a few dozen images it is unreadable, and the images, their rollout and
# the figure all grow with the count (a typo of 1000000000 would run for minutes before failing).
MAX_IMAGES = 64
PLUGIN_HELP = "a backbone plugin the run was trained with: imported only when named here (it runs its code)"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="attention maps, position embeddings and cost of the backbones")
    asub = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)

    a = asub.add_parser("attention", help="attention rollout (ViT/DeiT/PiT) or Grad-CAM (Swin/ResNet) on test images")
    a.add_argument("run_dir", metavar="RUN_DIR", help="a finished run (results.json, checkpoints/best.ckpt)")
    a.add_argument("--images", type=int, default=8,
                   help=f"test images to draw, 1 to {MAX_IMAGES} (one grid a person can read; default 8)")
    a.add_argument("--token", choices=("cls", "dist"), default="cls",
                   help="roll out from the class token (default) or DeiT's distillation token")
    a.add_argument("--out", help="output folder (default RUN_DIR/analysis)")
    a.add_argument("--wandb", choices=WANDB_MODES, help="W&B mode (default: the run's own wandb.mode)")
    add_config_argument(a, "plugins", help=PLUGIN_HELP)
    a.set_defaults(func=run_attention)

    e = asub.add_parser("posembed", help="cosine similarity of learned position embeddings (ViT paper Fig. 7)")
    e.add_argument("run_dir", metavar="RUN_DIR")
    e.add_argument("--out", help="output folder (default RUN_DIR/analysis)")
    e.add_argument("--wandb", choices=WANDB_MODES, help="W&B mode (default: the run's own wandb.mode)")
    add_config_argument(e, "plugins", help=PLUGIN_HELP)
    e.set_defaults(func=run_posembed)

    c = asub.add_parser("cost", help="params, FLOPs, peak memory and training throughput per backbone and image size")
    c.add_argument("--backbones", default=None, help="comma-separated (default: every registered backbone)")
    c.add_argument("--presets", default=None,
                   help="comma-separated presets (default: each backbone's own, micro for the built-ins)")
    c.add_argument("--image-sizes", default="32,64,128,224", help="comma-separated sizes in px (default 32,64,128,224)")
    c.add_argument("--batch-size", type=int, default=8, help="training batch for throughput and memory (default 8)")
    c.add_argument("--patch-size", default="16",
                   help="patch size at every image size for the backbones whose patch size is free "
                        "(vit, deit, pit; default 16), or 'auto' for each backbone's own")
    c.add_argument("--in-chans", type=int, default=3, help="input channels (default 3)")
    c.add_argument("--steps", type=int, default=3, help="timed training steps after one warm-up (default 3)")
    c.add_argument("--threads", type=int, default=1, help="CPU threads while timing (default 1; 0 = torch's default)")
    c.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    add_config_argument(c, "plugins")
    c.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    c.add_argument("--out", default="runs/cost", help="folder for cost.json and cost.png (default runs/cost)")
    c.set_defaults(func=run_cost)


def _out_dir(args, run_dir: Path) -> Path:
    out = Path(args.out) if args.out else run_dir / "analysis"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VitbenchError(f"cannot create output folder {out} ({e.strerror}): pass a writable --out") from None
    return out


def _title(run) -> str:
    r = run.results
    n = r.get("n_train")
    acc = r.get("test_acc")
    bits = [f"{run.run_dir.resolve().name}: {r['backbone']}-{r['preset']}", f"{r['image_size']} px"]
    if n is not None:
        bits.append(f"n_train={n}")
    if acc is not None:
        bits.append(f"test acc {acc:.3f}")
    return ", ".join(bits)


def run_attention(args: argparse.Namespace) -> int:
    from vitbench.analysis import attention, runs, wandb_log

    if not 1 <= args.images <= MAX_IMAGES:
        raise VitbenchError(f"--images {args.images}: not between 1 and {MAX_IMAGES} (one grid of test images); "
                            f"pass e.g. --images 8")
    run = runs.load_run(args.run_dir, args.plugin)  # fails before any output is written
    images, labels, transform = runs.test_images(run, args.images)
    out = _out_dir(args, run.run_dir)  # only now: a run whose data cannot load leaves no empty analysis/
    exp = attention.explain(run.backbone, run.model, images, token_index=0 if args.token == "cls" else 1)
    path = out / "attention.png"
    info = attention.plot_grid(path, runs.displayable(images, transform), exp, labels, run.class_names, _title(run))
    print(f"{exp.method}: {len(images)} test images -> {path}")
    logged = wandb_log.log_images(run.run_dir, run.config, run.results, {
        "analysis/attention_grid": wandb_log.image(path, caption=exp.method),
        "analysis/attention": [wandb_log.image(i["overlay"], caption=f"{i['pred']} / {i['label']}") for i in info],
    }, args.wandb)
    if logged:
        print(f"logged to W&B run {logged} (job_type analysis)")
    return 0


def run_posembed(args: argparse.Namespace) -> int:
    from vitbench.analysis import posembed, runs, wandb_log

    run = runs.load_run(args.run_dir, args.plugin)
    emb, grid = posembed.position_embeddings(run.backbone, run.model)  # VitbenchError without one
    out = _out_dir(args, run.run_dir)
    sim = posembed.similarity(emb)
    path = out / "posembed.png"
    posembed.plot_similarity(path, sim, grid,
                             f"{_title(run)}\nposition embedding similarity, {grid[0]}x{grid[1]} patches")
    print(f"position-embedding similarity of {grid[0]}x{grid[1]} patches -> {path}")
    logged = wandb_log.log_images(run.run_dir, run.config, run.results,
                                  {"analysis/posembed": wandb_log.image(path, caption="position embedding similarity")},
                                  args.wandb)
    if logged:
        print(f"logged to W&B run {logged} (job_type analysis)")
    return 0


def _int_list(text: str, option: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise VitbenchError(f"{option} takes comma-separated integers, e.g. {option} 32,64,128, got '{text}'") from None
    if not values or min(values) < 1:
        raise VitbenchError(f"{option} needs positive integers, got '{text}'")
    return values


def run_cost(args: argparse.Namespace) -> int:
    import torch

    from vitbench.analysis import cost
    from vitbench.backbones import get_backbone, list_backbones, load_plugins
    from vitbench.utils import write_json

    load_plugins(args.plugin)
    backbones = [b for b in args.backbones.split(",") if b] if args.backbones else list_backbones()
    presets = [p for p in args.presets.split(",") if p] if args.presets else None
    sizes = _int_list(args.image_sizes, "--image-sizes")
    if args.batch_size < 1 or args.steps < 1 or args.in_chans not in (1, 3) or args.threads < 0:
        raise VitbenchError("--batch-size and --steps must be >= 1, --in-chans 1 or 3, --threads >= 0")
    patch = None if args.patch_size == "auto" else _int_list(args.patch_size, "--patch-size")[0]
    for b in backbones:
        cls = get_backbone(b)  # unknown names fail before measuring anything
        for p in presets or ():
            if p not in cls.presets:
                raise VitbenchError(f"backbone '{b}' has no preset '{p}': choose from {', '.join(cls.presets)}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VitbenchError("--device cuda but no CUDA device is available: use --device cpu")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VitbenchError(f"cannot create output folder {out} ({e.strerror}): pass a writable --out") from None

    def progress(row):
        if not args.json:
            print(f"  measured {row['backbone']}-{row['preset']} at {row['image_size']} px", file=sys.stderr)

    rows = cost.measure_all(backbones, presets, sizes, threads=args.threads or None, progress=progress,
                            batch_size=args.batch_size, in_chans=args.in_chans, patch_size=patch,
                            steps=args.steps, device=device)
    threads = args.threads or torch.get_num_threads()
    meta = {"device": device if device != "cpu" else f"cpu ({threads} thread{'s' if threads > 1 else ''})",
            "batch_size": args.batch_size, "in_chans": args.in_chans, "patch_size": patch or "auto",
            "memory": next((r["mem_method"] for r in rows if r["mem_method"]), None),
            "throughput": "training steps (forward, cross-entropy, backward, AdamW), median step after one warm-up",
            "flops": "forward FLOPs per image (torch FlopCounterMode, multiply-add = 2)"}
    write_json(out / "cost.json", {"meta": meta, "rows": rows})
    fixed = sorted({r["backbone"] for r in rows if r["patch_size"]})
    title = (f"cost per image on {meta['device']}, batch {args.batch_size}, "
             + (f"{patch} px patches for {'/'.join(fixed)}" if fixed else "each backbone's own patch size"))
    cost.plot(out / "cost.png", rows, title)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(cost.table(rows))
        print(f"wrote {out / 'cost.json'} and {out / 'cost.png'}")
    return 0
