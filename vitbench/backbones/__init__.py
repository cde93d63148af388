"""Backbones: the plugin contract, the registry, and the built-in families.

The built-in families (one file each: resnet, vit, deit, swin, pit) register on
first use of the registry, so importing this package does not import timm.
"""

from vitbench.backbones.registry import (
    Backbone,
    create_backbone,
    get_backbone,
    list_backbones,
    load_plugin,
    load_plugins,
    register_backbone,
)

__all__ = [
    "Backbone",
    "count_flops",
    "count_params",
    "create_backbone",
    "get_backbone",
    "list_backbones",
    "load_plugin",
    "load_plugins",
    "register_backbone",
]


def __getattr__(name: str):
    if name in ("count_flops", "count_params"):
        from vitbench.backbones import profile

        return getattr(profile, name)
    raise AttributeError(f"module 'vitbench.backbones' has no attribute {name!r}")
