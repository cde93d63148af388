"""``vitbench train``: flags or ``--config FILE`` (plus ``--set key=value``) -> one run.

The flags are config keys (:mod:`vitbench.config` declares each one: its type, default, bounds
and help); this file only says which keys get a flag, and where ``--help`` lists them.
"""

from __future__ import annotations

import argparse

from vitbench.config import add_config_argument

# The keys with a flag, by --help section (None: above the sections); the keys of a tuple exclude
# each other. Every key, these too, can be set with --set KEY=VALUE or in the --config file.
SECTIONS: dict[str | None, list] = {
    None: ["plugins"],
    "model": ["model.backbone", "model.preset", "model.image_size"],
    "data": ["data.dataset", "data.image_column", "data.label_column", ("data.fraction", "data.samples_per_class"),
             "data.batch_size", "data.num_workers"],
    "training": ["seed", ("budget.max_epochs", "budget.max_steps"), "budget.min_steps", "budget.cycles",
                 "budget.min_cycles", "optim.lr", "trainer.devices",
                 "trainer.accelerator", "trainer.precision", "trainer.compile", "out"],
    "distillation (DeiT)": ["distill.teacher", "distill.teacher_backbone", "distill.teacher_preset",
                            "distill.teacher_checkpoint", "distill.kind", "distill.alpha", "distill.tau"],
    "logging": ["wandb.mode", "wandb.project"],
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one backbone on one data fraction",
                       description="Train one backbone; writes config.yaml, metrics.jsonl, results.json and "
                                   "checkpoints/ to --out.")
    p.add_argument("--config", help="YAML config file (flags and --set override it)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. optim.lr=3e-4 (--print-config shows them all)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    flags = {}  # dest -> config key
    for title, keys in SECTIONS.items():
        group = p.add_argument_group(title) if title else p
        for item in keys:
            target = group.add_mutually_exclusive_group() if isinstance(item, tuple) else group
            for key in item if isinstance(item, tuple) else [item]:
                flags[add_config_argument(target, key)] = key
    p.set_defaults(func=run, config_flags=flags)


def config_from_args(args: argparse.Namespace):
    from vitbench.config import build_config, load_yaml, merge, nest, parse_override

    layers = [load_yaml(args.config)] if args.config else []
    given = {key: getattr(args, dest) for dest, key in args.config_flags.items() if getattr(args, dest) is not None}
    flags: dict = {}
    for key, value in given.items():
        flags = merge(flags, nest(key, value))
    # A budget flag replaces the config file's budget rather than adding a second one.
    if "budget.max_steps" in given:
        keep_min = {} if "budget.min_steps" in given else {"min_steps": None}
        flags = merge(flags, {"budget": {"max_epochs": None, **keep_min}})
    if "budget.max_epochs" in given:
        flags = merge(flags, {"budget": {"max_steps": None}})
    layers.append(flags)
    layers += [parse_override(s) for s in args.set]
    return build_config(*layers)


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    from vitbench.training.resolve import resolve

    # What --print-config shows is what train() runs: the backbone's preset and the run dir filled in.
    cfg, _ = resolve(cfg)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return 0
    from vitbench import rundir
    from vitbench.training import train

    results = train(cfg)
    print(f"done: test_acc {results['test_acc']:.4f}  best_val_acc {results['best_val_acc'] or 0:.4f}  "
          f"n_train {results['n_train']}  -> {rundir.results_path(cfg.out)}")
    return 0
