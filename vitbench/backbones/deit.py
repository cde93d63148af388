"""DeiT: "Training data-efficient image transformers & distillation through attention"
(Touvron et al., ICML 2021, arXiv:2012.12877).

A ViT with an extra distillation token and head (timm's ``VisionTransformerDistilled``).
Trained with a teacher (``DistillationModule``) the token learns from the teacher's
predictions; without one, both heads learn the labels. At inference the two heads
are averaged.
"""

from vitbench.backbones.vit import ViT


class DeiT(ViT):
    name = "deit"
    family = "vit"
    distillation_head = True

    @classmethod
    def model_class(cls):
        from timm.models.deit import VisionTransformerDistilled

        return VisionTransformerDistilled
