"""Datasets for vitbench: sources, nested stratified subsets, loaders and batch augmentation.

Import cost matters here (``vitbench --help`` imports every stage), so the
Lightning-based DataModule is loaded on first use.
"""

from vitbench.data.sources import BUILTINS, DatasetSource, load_source
from vitbench.data.subsets import Split, split_indices

__all__ = [
    "BUILTINS",
    "BatchTransform",
    "DatasetSource",
    "ImageClassificationDataModule",
    "Split",
    "load_fashion_mnist",
    "load_source",
    "parse_randaugment",
    "split_indices",
]

_LAZY = {
    "ImageClassificationDataModule": "vitbench.data.datamodule",
    "BatchTransform": "vitbench.data.transforms",
    "parse_randaugment": "vitbench.data.transforms",
    "load_fashion_mnist": "vitbench.data.fashion_mnist",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vitbench.data' has no attribute {name!r}")
