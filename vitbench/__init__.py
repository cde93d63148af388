"""vitbench: how much data does a Vision Transformer need, and which one should I train?

The package mirrors the workflow, one subpackage per stage:

* :mod:`vitbench.data` -- Hugging Face ``datasets`` DataModule, nested stratified subsets
* :mod:`vitbench.backbones` -- the plugin contract, registry and built-in families
* :mod:`vitbench.training` -- ``ClassifierModule``, DeiT distillation, ``train(config)``
* :mod:`vitbench.sweep` -- experiment grids, run locally or on SLURM
* :mod:`vitbench.report` -- accuracy-versus-data-size tables, plots and W&B reports
* :mod:`vitbench.analysis` -- attention maps, position embeddings, cost
"""

__version__ = "0.1.0"

import importlib

# Re-exported lazily (PEP 562) so `vitbench --help` and `vitbench sweep plan`
# don't pay for importing torch, Lightning and timm.
_EXPORTS = {
    "VitbenchError": "vitbench.errors",
    "TrainConfig": "vitbench.config",
    "build_config": "vitbench.config",
    "ImageClassificationDataModule": "vitbench.data",
    "Backbone": "vitbench.backbones",
    "create_backbone": "vitbench.backbones",
    "get_backbone": "vitbench.backbones",
    "list_backbones": "vitbench.backbones",
    "load_plugin": "vitbench.backbones",
    "register_backbone": "vitbench.backbones",
    "ClassifierModule": "vitbench.training",
    "DistillationLoss": "vitbench.training",
    "DistillationModule": "vitbench.training",
    "train": "vitbench.training",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'vitbench' has no attribute {name!r}")
