"""ResNet: "Deep Residual Learning for Image Recognition" (He et al., CVPR 2016, arXiv:1512.03385).

The convolutional baseline, on timm's ``ResNet``. For inputs up to 64 px the
ImageNet stem (7x7 stride-2 conv + max-pool, a 4x downsampling) would leave a
28 px image 7 px wide before the first block, so it becomes a 3x3 stride-1 conv
without pooling, the usual CIFAR adaptation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vitbench.backbones.registry import SET_BY_VITBENCH, Backbone, constructor_keys

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vitbench.analysis.attention import Explanation

SMALL_IMAGE = 64


class ResNet(Backbone):
    name = "resnet"
    family = "cnn"
    channels_last = True
    baseline = True  # the reference every transformer in a report is compared with
    presets = {
        "micro": dict(layers=(1, 1, 1, 1), channels=(16, 32, 64, 128), stem_width=16),
        "tiny": dict(layers=(2, 2, 2, 2)),  # ResNet-18
        "small": dict(layers=(3, 4, 6, 3)),  # ResNet-34
    }

    @classmethod
    def accepted_overrides(cls) -> frozenset[str]:
        from timm.models.resnet import ResNet as TimmResNet

        return super().accepted_overrides() | constructor_keys(TimmResNet, exclude={"block"} | SET_BY_VITBENCH)

    def build(self, num_classes: int, image_size: int, in_chans: int) -> nn.Module:
        from timm.models.resnet import BasicBlock
        from timm.models.resnet import ResNet as TimmResNet
        from torch import nn

        model = TimmResNet(BasicBlock, in_chans=in_chans, num_classes=num_classes, **self.config)
        if image_size <= SMALL_IMAGE:
            model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()
        return model

    def attention_map(self, model: nn.Module, images: torch.Tensor, token_index: int = 0) -> Explanation:
        # No attention: Grad-CAM on the last stage's feature map.
        from vitbench.analysis.attention import gradcam

        return gradcam(model, model.layer4, images)
