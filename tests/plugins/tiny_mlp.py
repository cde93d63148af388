"""A backbone plugin written outside the package, as a user would."""

from torch import nn

import vitbench


class TinyMLP(vitbench.Backbone):
    name = "tiny_mlp"
    family = "mlp"
    presets = {"micro": dict(hidden=64), "wide": dict(hidden=256)}

    def build(self, num_classes, image_size, in_chans):
        return nn.Sequential(
            nn.Flatten(), nn.Linear(in_chans * image_size * image_size, self.config["hidden"]),
            nn.ReLU(), nn.Linear(self.config["hidden"], num_classes),
        )
