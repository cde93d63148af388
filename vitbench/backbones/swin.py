"""Swin: "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows"
(Liu et al., ICCV 2021, arXiv:2103.14030).

Attention inside local windows that shift between blocks, with patch merging
between stages, on timm's ``SwinTransformer``. Small images use 2 px patches and
two or three stages so the last stage still has a few tokens; timm pads feature
maps that a window does not divide.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitbench.backbones.registry import Backbone, constructor_keys
from vitbench.errors import VitbenchError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vitbench.analysis.attention import Explanation


def _grid(image_size: int) -> dict:
    """Patch and window sizes per image size: >= 7 tokens a side after patching."""
    if image_size <= 32:
        return dict(patch_size=2, window_size=4 if image_size % 4 == 0 else 7)
    if image_size <= 64:
        return dict(patch_size=4, window_size=4)
    return dict(patch_size=4, window_size=7)


class Swin(Backbone):
    name = "swin"
    family = "hierarchical"
    presets = {
        "micro": dict(embed_dim=32, depths=(2, 2), num_heads=(2, 4), mlp_ratio=2.0),
        "tiny": dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),  # Swin-T
        "small": dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24)),  # Swin-S
    }

    @classmethod
    def accepted_overrides(cls) -> frozenset[str]:
        from timm.models.swin_transformer import SwinTransformer

        return super().accepted_overrides() | constructor_keys(SwinTransformer)

    def check_image_size(self, image_size: int) -> None:
        grid = {**_grid(image_size), **self.config}
        tokens = image_size // grid["patch_size"]
        if image_size % grid["patch_size"] or tokens < 2 ** (len(grid["depths"]) - 1):
            raise VitbenchError(
                f"backbone 'swin' cannot take {image_size} px images with {grid['patch_size']} px patches and "
                f"{len(grid['depths'])} stages: use 28, 32, 64 or 224 px, or fewer stages (model.overrides.depths)"
            )

    def build(self, num_classes: int, image_size: int, in_chans: int) -> nn.Module:
        from timm.models.swin_transformer import SwinTransformer

        return SwinTransformer(img_size=image_size, in_chans=in_chans, num_classes=num_classes,
                               **{**_grid(image_size), **self.config})

    def attention_map(self, model: nn.Module, images: torch.Tensor, token_index: int = 0) -> Explanation:
        # Attention stays inside shifted windows: no global token to roll out from, so Grad-CAM
        # on the last stage instead (its layout follows timm's output_fmt).
        from vitbench.analysis.attention import gradcam

        return gradcam(model, model.layers[-1], images, channels_last=getattr(model, "output_fmt", "NHWC") == "NHWC")
