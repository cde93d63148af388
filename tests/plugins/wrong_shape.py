"""Broken plugin: the model returns one score too many per image ([B, num_classes + 1])."""

from torch import nn

import vitbench


class WrongShape(vitbench.Backbone):
    name = "wrong_shape"
    family = "mlp"

    def build(self, num_classes, image_size, in_chans):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes + 1))
