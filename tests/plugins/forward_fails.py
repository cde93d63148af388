"""Broken plugin: the model is built for 16 px images whatever size it is asked for."""

from torch import nn

import vitbench


class ForwardFails(vitbench.Backbone):
    name = "forward_fails"
    family = "mlp"

    def build(self, num_classes, image_size, in_chans):
        return nn.Sequential(nn.Flatten(), nn.Linear(16 * 16, num_classes))
