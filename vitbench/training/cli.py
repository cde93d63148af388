"""``vitbench train``: flags or ``--config FILE`` (plus ``--set key=value``) -> one run."""

from __future__ import annotations

import argparse
import json

# flag -> config key; only flags the user actually gave become overrides.
FLAGS = {
    "backbone": "model.backbone", "preset": "model.preset", "image_size": "model.image_size",
    "dataset": "data.dataset", "image_column": "data.image_column", "label_column": "data.label_column",
    "fraction": "data.fraction", "samples_per_class": "data.samples_per_class", "batch_size": "data.batch_size",
    "num_workers": "data.num_workers", "max_epochs": "budget.max_epochs", "max_steps": "budget.max_steps", "min_steps": "budget.min_steps",
    "lr": "optim.lr", "teacher": "distill.teacher", "teacher_backbone": "distill.teacher_backbone",
    "teacher_preset": "distill.teacher_preset", "teacher_checkpoint": "distill.teacher_checkpoint",
    "distillation": "distill.kind", "alpha": "distill.alpha", "tau": "distill.tau",
    "devices": "trainer.devices", "accelerator": "trainer.accelerator", "precision": "trainer.precision",
    "compile": "trainer.compile",
    "wandb": "wandb.mode", "wandb_project": "wandb.project", "seed": "seed", "out": "out",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one backbone on one data fraction",
                       description="Train one backbone; writes config.yaml, metrics.jsonl, results.json and checkpoints/ to --out.")
    p.add_argument("--config", help="YAML config file (flags and --set override it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config key, e.g. optim.lr=3e-4")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--plugin", action="append", default=None, metavar="MODULE", help="import a backbone plugin (module or .py file)")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", help="registered backbone (vitbench backbones lists them)")
    m.add_argument("--preset", help="micro (CPU tests), tiny or small (the papers' sizes)")
    m.add_argument("--image-size", type=int, help="input size in px (default: the dataset's)")
    d = p.add_argument_group("data")
    d.add_argument("--dataset", help="fashion_mnist, a save_to_disk folder, an imagefolder, parquet, or a Hub id")
    d.add_argument("--image-column")
    d.add_argument("--label-column")
    size = d.add_mutually_exclusive_group()
    size.add_argument("--fraction", type=float, help="stratified fraction of the training images, 0 < F <= 1")
    size.add_argument("--samples-per-class", type=int)
    d.add_argument("--batch-size", type=int)
    d.add_argument("--num-workers", type=int)
    t = p.add_argument_group("training")
    t.add_argument("--seed", type=int)
    budget = t.add_mutually_exclusive_group()
    budget.add_argument("--max-epochs", type=int)
    budget.add_argument("--max-steps", type=int, help="optimizer steps (compute-matched across fractions)")
    t.add_argument("--min-steps", type=int, help="with an epoch budget: at least this many optimizer steps (small subsets get more epochs)")
    t.add_argument("--lr", type=float)
    t.add_argument("--devices", type=int)
    t.add_argument("--accelerator")
    t.add_argument("--precision", help="32-true (default), bf16-mixed (CPU and GPU), 16-mixed (GPU)")
    t.add_argument("--compile", action="store_true", default=None, help="run the model under torch.compile")
    t.add_argument("--out", help="run directory (default runs/BACKBONE-PRESET-fFRACTION-sSEED)")
    k = p.add_argument_group("distillation (DeiT)")
    k.add_argument("--teacher", metavar="RUN_DIR", help="a finished run whose best checkpoint teaches")
    k.add_argument("--teacher-backbone")
    k.add_argument("--teacher-preset")
    k.add_argument("--teacher-checkpoint")
    k.add_argument("--distillation", choices=["hard", "soft"])
    k.add_argument("--alpha", type=float)
    k.add_argument("--tau", type=float)
    w = p.add_argument_group("logging")
    w.add_argument("--wandb", choices=["auto", "offline", "online", "disabled"], help="W&B mode (auto: online if logged in)")
    w.add_argument("--wandb-project")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace):
    from vitbench.config import build_config, load_yaml, merge, parse_override

    layers = [load_yaml(args.config)] if args.config else []
    flags: dict = {}
    for flag, key in FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            flags = merge(flags, parse_override(f"{key}={json.dumps(value)}"))
    # A budget flag replaces the config file's budget rather than adding a second one.
    if args.max_steps is not None:
        flags = merge(flags, {"budget": {"max_epochs": None, **({} if args.min_steps is not None else {"min_steps": None})}})
    if args.max_epochs is not None:
        flags = merge(flags, {"budget": {"max_steps": None}})
    if args.plugin is not None:
        flags["plugins"] = args.plugin
    layers.append(flags)
    layers += [parse_override(s) for s in args.set]
    return build_config(*layers)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.print_config:
        from vitbench.training.run import resolve_backbone

        resolve_backbone(cfg)  # a config that names no real backbone is not a resolved config
        print(cfg.to_yaml(), end="")
        return 0
    from vitbench.training import train

    results = train(cfg)
    print(f"done: test_acc {results['test_acc']:.4f}  best_val_acc {results['best_val_acc'] or 0:.4f}  "
          f"n_train {results['n_train']}  -> {cfg.out}/results.json")
    return 0
