"""Training: the LightningModules, the distillation loss, and ``train(config)``.

Loaded lazily: Lightning is imported when one of these names is first used.
"""

import gc
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
        # Importing Lightning creates half a million long-lived objects (torch._dynamo's, reached
        # through torchmetrics and torchvision), and the cyclic collector walks them again and again
        # while they appear: 0.6-0.8 s of every `vitbench train` and sweep task start on 2 cores.
        # None of them is garbage, so the collector waits for the import.
        collecting = gc.isenabled()
        gc.disable()
        try:
            module = importlib.import_module(_EXPORTS[name])
        finally:
            if collecting:
                gc.enable()
        return getattr(module, name)
    raise AttributeError(f"module 'vitbench.training' has no attribute {name!r}")
