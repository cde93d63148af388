"""Broken plugin: a backbone class that never defines build()."""

import vitbench


class NoBuild(vitbench.Backbone):
    name = "no_build"
    family = "mlp"
