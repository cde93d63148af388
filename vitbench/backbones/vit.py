"""ViT: "An Image is Worth 16x16 Words" (Dosovitskiy et al., ICLR 2021, arXiv:2010.11929).

Global self-attention over non-overlapping patches plus a class token, on timm's
``VisionTransformer``. Patch size follows the image size (see ``_sizes``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitbench.backbones._sizes import check_patch_grid
from vitbench.backbones.registry import Backbone, constructor_keys

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vitbench.analysis.attention import Explanation


class ViT(Backbone):
    name = "vit"
    family = "vit"
    free_patch_size = True
    presets = {
        "micro": dict(embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0),
        "tiny": dict(embed_dim=192, depth=12, num_heads=3),  # ViT-Ti / DeiT-Ti
        "small": dict(embed_dim=384, depth=12, num_heads=6),  # ViT-S / DeiT-S
    }

    def check_image_size(self, image_size: int) -> None:
        check_patch_grid(self.name, image_size, self.config.get("patch_size"))

    @classmethod
    def model_class(cls) -> type[nn.Module]:
        from timm.models.vision_transformer import VisionTransformer

        return VisionTransformer

    @classmethod
    def accepted_overrides(cls) -> frozenset[str]:
        return super().accepted_overrides() | constructor_keys(cls.model_class())

    def build(self, num_classes: int, image_size: int, in_chans: int) -> nn.Module:
        patch = check_patch_grid(self.name, image_size, self.config.get("patch_size"))
        return self.model_class()(
            img_size=image_size, in_chans=in_chans, num_classes=num_classes, **{**self.config, "patch_size": patch}
        )

    def position_embeddings(self, model: nn.Module) -> tuple[torch.Tensor, tuple[int, int]] | None:
        from vitbench.analysis.posembed import vit_position_embeddings

        return vit_position_embeddings(model, self.name)

    def attention_map(self, model: nn.Module, images: torch.Tensor, token_index: int = 0) -> Explanation:
        from vitbench.analysis.attention import vit_rollout

        return vit_rollout(model, images, token_index)
