"""The smallest backbone plugin: a name, a family and build(); no presets, no overrides."""

from torch import nn

import vitbench


class MinimalMLP(vitbench.Backbone):
    name = "minimal_mlp"
    family = "mlp"

    def build(self, num_classes, image_size, in_chans):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes))
