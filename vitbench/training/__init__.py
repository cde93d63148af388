"""Training: the LightningModules, the distillation loss, and ``train(config)``.

Loaded lazily: Lightning is imported when one of these names is first used.
"""

import importlib

_EXPORTS = {
    "ClassifierModule": "vitbench.training.classifier",
    "DistillationLoss": "vitbench.training.distillation",
    "DistillationModule": "vitbench.training.distillation",
    "train": "vitbench.training.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vitbench.training' has no attribute {name!r}")
