"""Broken plugin: build() raises (a bug in the plugin's own code)."""

import vitbench


class BuildRaises(vitbench.Backbone):
    name = "build_raises"
    family = "mlp"

    def build(self, num_classes, image_size, in_chans):
        raise KeyError("hidden")
