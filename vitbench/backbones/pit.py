"""PiT: "Rethinking Spatial Dimensions of Vision Transformers" (Heo et al., ICCV 2021, arXiv:2103.16302).

A ViT that pools tokens between stages (depth-wise strided convolution), shrinking
the token grid and widening the channels like a CNN, on timm's
``PoolingVisionTransformer``. ``pit_distilled`` adds DeiT's distillation token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitbench.backbones._sizes import check_patch_grid
from vitbench.backbones.registry import SET_BY_VITBENCH, Backbone, constructor_keys

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vitbench.analysis.attention import Explanation


class PiT(Backbone):
    name = "pit"
    family = "pooling"
    free_patch_size = True
    presets = {
        "micro": dict(base_dims=(16, 16, 16), depth=(1, 2, 1), heads=(2, 4, 8), mlp_ratio=2.0),
        "tiny": dict(base_dims=(32, 32, 32), depth=(2, 6, 4), heads=(2, 4, 8)),  # PiT-Ti
        "small": dict(base_dims=(48, 48, 48), depth=(2, 6, 4), heads=(3, 6, 12)),  # PiT-S
    }

    @classmethod
    def accepted_overrides(cls) -> frozenset[str]:
        from timm.models.pit import PoolingVisionTransformer

        # `distilled` follows the class's distillation_head (pit or pit_distilled), never a preset.
        exclude = {"distilled"} | SET_BY_VITBENCH
        return super().accepted_overrides() | constructor_keys(PoolingVisionTransformer, exclude=exclude)

    def check_image_size(self, image_size: int) -> None:
        check_patch_grid(self.name, image_size, self.config.get("patch_size"))

    def build(self, num_classes: int, image_size: int, in_chans: int) -> nn.Module:
        from timm.models.pit import PoolingVisionTransformer

        # Overlapping patches: the stride is half the patch, as in the paper (16 / 8 at 224 px).
        patch = check_patch_grid(self.name, image_size, self.config.get("patch_size"))
        config = {"stride": patch // 2, **self.config, "patch_size": patch}
        return PoolingVisionTransformer(
            img_size=image_size, in_chans=in_chans, num_classes=num_classes, distilled=self.distillation_head, **config
        )

    def position_embeddings(self, model: nn.Module) -> tuple[torch.Tensor, tuple[int, int]] | None:
        from vitbench.analysis.posembed import pit_position_embeddings

        return pit_position_embeddings(model)

    def attention_map(self, model: nn.Module, images: torch.Tensor, token_index: int = 0) -> Explanation:
        from vitbench.analysis.attention import pit_rollout

        return pit_rollout(model, images, token_index)


class PiTDistilled(PiT):
    name = "pit_distilled"
    distillation_head = True
