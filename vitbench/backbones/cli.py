"""``vitbench backbones``: what is registered, and what each costs at an image size.

Each backbone is built and given one dummy batch: one that cannot take the image size
gets its reason in its row; one that breaks the plugin contract stops the listing with
a one-line error naming it. A model whose weights alone would not fit in the RAM still
available (a huge ``--image-size`` makes a ViT's position embedding grow with its square)
is refused before it is built, as ``train`` refuses a step that cannot fit.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

from vitbench.config import ModelConfig, add_config_argument, check_value
from vitbench.errors import VitbenchError

# Beyond any dataset vitbench reads (ImageNet-21k has 21,841): a larger number is a typo.
MAX_CLASSES = 1_000_000


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("backbones", help="list registered backbones with parameters and GFLOPs")
    p.add_argument("--image-size", type=int, default=28, help="input size in px (default 28, Fashion-MNIST)")
    p.add_argument("--in-chans", type=int, default=1, help="input channels, 1 or 3 (default 1, Fashion-MNIST)")
    p.add_argument("--num-classes", type=int, default=10, help=f"classes, 1 to {MAX_CLASSES:,} (default 10)")
    p.add_argument("--preset", action="append", help="only these presets (repeatable; default: all)")
    add_config_argument(p, "plugins")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=run)


def rows(image_size: int, in_chans: int, num_classes: int, presets: list[str] | None) -> Iterator[dict]:
    """One row per (backbone, preset), as each is built and measured."""
    from vitbench.backbones import count_flops, count_params, get_backbone, list_backbones
    from vitbench.backbones.registry import BackboneContractError

    chosen = [(name, get_backbone(name), preset) for name in list_backbones()
              for preset in get_backbone(name).presets if not presets or preset in presets]
    # Every model is estimated before any is built: a refusal comes before gigabytes are allocated.
    for _, cls, preset in chosen:
        _check_weights_fit(cls, preset, num_classes, image_size, in_chans)
    for name, cls, preset in chosen:
        row = dict(name=name, family=cls.family, preset=preset, distillation_head=cls.distillation_head)
        model = None  # the previous row's model is freed before the next is built
        try:
            model = cls(preset).create(num_classes, image_size, in_chans)
            row.update(params=count_params(model), gflops=count_flops(model, image_size, in_chans) / 1e9,
                       error=None)
        except BackboneContractError:
            raise
        except VitbenchError as e:
            row.update(params=None, gflops=None, error=str(e))
        yield row


def _check_weights_fit(cls, preset: str, num_classes: int, image_size: int, in_chans: int) -> None:
    """Refuse a model whose weights and buffers exceed the RAM still available, before they are allocated.

    The weights and buffers are counted on the meta device (shapes only, nothing allocated); the dummy batches
    that follow run on fake tensors, so the weights are what a row costs. A build that the meta
    device cannot run is not estimated: the real build reports its own problem.
    """
    import torch

    from vitbench.training.memory import GiB, available_bytes

    free = available_bytes(torch.device("cpu"))
    if free is None:
        return
    try:
        with torch.device("meta"):
            model = cls(preset).build(num_classes, image_size, in_chans)
        # Buffers too: Swin's attention masks and position indices grow with the image like a ViT's embedding.
        need = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    except Exception:  # noqa: BLE001 - any failure is the real build's to report, in its row or as an error
        return
    if need > free[0]:
        raise VitbenchError(
            f"backbone '{cls.name}' (preset '{preset}') at {image_size} px needs about {need / GiB:.1f} GiB "
            f"for its weights and buffers but only {free[0] / GiB:.1f} GiB {free[1]}: use a smaller --image-size "
            "or list other presets with --preset")


def run(args: argparse.Namespace) -> int:
    from vitbench.backbones import get_backbone, list_backbones, load_plugins

    check_value(ModelConfig, "image_size", args.image_size, "--image-size")
    if args.in_chans not in (1, 3):
        raise VitbenchError(f"--in-chans must be 1 or 3, got {args.in_chans}: pass --in-chans 1 (grayscale) "
                            "or 3 (RGB), the channels vitbench's data has")
    if not 1 <= args.num_classes <= MAX_CLASSES:
        raise VitbenchError(f"--num-classes must be between 1 and {MAX_CLASSES:,}, got {args.num_classes}: "
                            "pass the number of classes of the dataset")
    load_plugins(args.plugin)
    if args.preset:
        known = list(dict.fromkeys(p for name in list_backbones() for p in get_backbone(name).presets))
        if unknown := [p for p in dict.fromkeys(args.preset) if p not in known]:
            raise VitbenchError(f"--preset {', '.join(unknown)}: no backbone has such a preset: "
                                f"pass one of {', '.join(known)}")
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
