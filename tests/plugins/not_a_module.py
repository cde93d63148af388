"""Broken plugin: build() returns a plain function instead of an nn.Module."""

import torch

import vitbench


class NotAModule(vitbench.Backbone):
    name = "not_a_module"
    family = "mlp"

    def build(self, num_classes, image_size, in_chans):
        return lambda images: torch.zeros(len(images), num_classes)
