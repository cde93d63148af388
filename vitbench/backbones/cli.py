"""``vitbench backbones``: what is registered, and what each costs at an image size.

Each backbone is built and given one dummy batch: one that cannot take the image size
gets its reason in its row; one that breaks the plugin contract stops the listing with
a one-line error naming it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

from vitbench.config import ModelConfig, add_config_argument, check_value
from vitbench.errors import VitbenchError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="list registered backbones with parameters and GFLOPs")
    p.add_argument("--image-size", type=int, default=28, help="input size in px (default 28, Fashion-MNIST)")
    p.add_argument("--in-chans", type=int, default=1, help="input channels (default 1, Fashion-MNIST)")
    p.add_argument("--num-classes", type=int, default=10)
    p.add_argument("--preset", action="append", help="only these presets (repeatable; default: all)")
    add_config_argument(p, "plugins")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=run)


def rows(image_size: int, in_chans: int, num_classes: int, presets: list[str] | None) -> Iterator[dict]:
    """One row per (backbone, preset), as each is built and measured."""
    from vitbench.backbones import count_flops, count_params, get_backbone, list_backbones
    from vitbench.backbones.registry import BackboneContractError

    for name in list_backbones():
        cls = get_backbone(name)
        for preset in cls.presets:
            if presets and preset not in presets:
                continue
            row = dict(name=name, family=cls.family, preset=preset, distillation_head=cls.distillation_head)
            try:
                model = cls(preset).create(num_classes, image_size, in_chans)
                row.update(params=count_params(model), gflops=count_flops(model, image_size, in_chans) / 1e9,
                           error=None)
            except BackboneContractError:
                raise
            except VitbenchError as e:
                row.update(params=None, gflops=None, error=str(e))
            yield row


def run(args: argparse.Namespace) -> int:
    from vitbench.backbones import load_plugins

    check_value(ModelConfig, "image_size", args.image_size, "--image-size")
    if args.in_chans < 1 or args.num_classes < 1:
        raise VitbenchError("--in-chans and --num-classes must be positive integers")
    load_plugins(args.plugin)
    # All rows before any output: a plugin that breaks the contract is a one-line error with nothing printed.
    table = list(rows(args.image_size, args.in_chans, args.num_classes, args.preset))
    if args.json:
        print(json.dumps(table, indent=2))
        return 0
    print(f"backbones at {args.image_size} px, {args.in_chans} channel(s), {args.num_classes} classes")
    print(f"{'name':<15} {'family':<13} {'preset':<7} {'params':>12} {'GFLOPs':>9}  distill-head", flush=True)
    for r in table:
        if r["error"]:
            print(f"{r['name']:<15} {r['family']:<13} {r['preset']:<7} {'-':>12} {'-':>9}  ({r['error']})", flush=True)
        else:
            print(f"{r['name']:<15} {r['family']:<13} {r['preset']:<7} {r['params']:>12,} {r['gflops']:>9.4f}  "
                  f"{'yes' if r['distillation_head'] else ''}", flush=True)
    return 0
