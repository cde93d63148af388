"""The backbone plugin contract and its strict registry.

A backbone is one class: subclass :class:`Backbone`, give it a ``name``, a
``family`` and ``presets``, and implement :meth:`Backbone.build`. Defining the
class registers it; a second class with the same name is an error. Backbones
also come from installed packages (entry-point group ``vitbench.backbones``)
and from ``--plugin MODULE`` (an importable module or a ``.py`` file).

The contract the training code relies on (and nothing else):

* ``build(num_classes, image_size, in_chans)`` returns an ``nn.Module`` mapping
  images ``[B, in_chans, S, S]`` to logits ``[B, num_classes]``;
* a backbone with a distillation head sets ``distillation_head = True``; its
  module has ``set_distilled_training(bool)`` (timm's API): when enabled and in
  train mode, forward returns ``(class_logits, distill_logits)``; otherwise the
  two heads' average.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from vitbench.errors import VitbenchError

if TYPE_CHECKING:
    from torch import nn

_REGISTRY: dict[str, type["Backbone"]] = {}
_LOADED_PLUGINS: set[str] = set()
_ENTRY_POINTS_LOADED = False
ENTRY_POINT_GROUP = "vitbench.backbones"
# One module per built-in family, imported on first use so that `vitbench --help` stays fast.
BUILTIN_MODULES = ("resnet", "vit", "deit", "swin", "pit")
REQUIRED_PRESETS = ("micro",)


class Backbone:
    """Base class of every backbone; subclassing registers the class.

    Class attributes:
        name: the registry key used on the command line (``--backbone NAME``).
        family: ``cnn``, ``vit``, ``hierarchical``, ``pooling``, ... (for reports).
        presets: preset name -> keyword arguments merged into :attr:`config`;
            at least ``micro`` (CPU-test sized); the built-ins also have the
            papers' ``tiny`` and ``small``.
        distillation_head: whether :meth:`build` returns a model with a DeiT
            distillation head (``set_distilled_training``).
        in_chans: channels the model needs (3 for an RGB-only model), or None
            for any (the data's own).
        channels_last: whether the model runs faster in NHWC memory layout on a GPU
            (convolutional networks); the trainer then converts it.
    """

    name: ClassVar[str]
    family: ClassVar[str] = "other"
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    distillation_head: ClassVar[bool] = False
    in_chans: ClassVar[int | None] = None
    channels_last: ClassVar[bool] = False
    abstract: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False):
            return
        register_backbone(cls)

    def __init__(self, preset: str = "micro", **overrides: Any):
        if preset not in self.presets:
            raise VitbenchError(
                f"backbone '{self.name}' has no preset '{preset}': choose one of {', '.join(self.presets)}"
            )
        self.preset = preset
        self.config: dict[str, Any] = {**self.presets[preset], **overrides}

    def check_image_size(self, image_size: int) -> None:
        """Raise VitbenchError if this backbone cannot take ``image_size`` px."""

    def build(self, num_classes: int, image_size: int, in_chans: int) -> "nn.Module":
        raise NotImplementedError

    def create(self, num_classes: int, image_size: int, in_chans: int) -> "nn.Module":
        """Validate the size, then :meth:`build`: what the trainer calls."""
        self.check_image_size(image_size)
        return self.build(num_classes=num_classes, image_size=image_size, in_chans=in_chans)


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    _load_entry_points()  # so a plugin that reuses a built-in's name fails here, not later
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise VitbenchError(f"backbone class {cls.__qualname__} has no 'name': set name = \"my_backbone\" on the class")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        other = _REGISTRY[name]
        raise VitbenchError(
            f"backbone name '{name}' is already registered by {other.__module__}.{other.__qualname__}: "
            f"give {cls.__module__}.{cls.__qualname__} another name"
        )
    missing = [p for p in REQUIRED_PRESETS if p not in cls.presets]
    if missing:
        raise VitbenchError(f"backbone '{name}' has no '{missing[0]}' preset: every backbone needs {', '.join(REQUIRED_PRESETS)}")
    _REGISTRY[name] = cls
    return cls


def _load_entry_points() -> None:
    """Register the built-ins, then installed packages' backbones (once)."""
    global _ENTRY_POINTS_LOADED
    if _ENTRY_POINTS_LOADED:
        return
    _ENTRY_POINTS_LOADED = True
    for module in BUILTIN_MODULES:
        importlib.import_module(f"vitbench.backbones.{module}")
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as e:  # a broken third-party package must not hide the built-ins
            print(f"vitbench: warning: backbone entry point '{ep.name}' failed to load: {e}", file=sys.stderr)


def load_plugin(spec: str) -> None:
    """Import a plugin module (``pkg.module``) or file (``path/to/file.py``) once."""
    path = Path(spec)
    key = str(path.resolve()) if spec.endswith(".py") else spec
    if key in _LOADED_PLUGINS:
        return
    try:
        if spec.endswith(".py"):
            if not path.is_file():
                raise VitbenchError(f"plugin file {spec} not found: pass a .py file or an importable module name")
            module_name = f"vitbench_plugin_{path.stem}"
            mod_spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(mod_spec)
            sys.modules[module_name] = module
            mod_spec.loader.exec_module(module)
        else:
            importlib.import_module(spec)
    except VitbenchError:
        raise
    except Exception as e:
        sys.modules.pop(f"vitbench_plugin_{path.stem}", None)
        raise VitbenchError(f"plugin '{spec}' does not import ({type(e).__name__}: {e}): fix the module or the --plugin path") from None
    _LOADED_PLUGINS.add(key)


def load_plugins(specs: list[str] | tuple[str, ...]) -> None:
    for spec in specs or ():
        load_plugin(spec)


def list_backbones() -> list[str]:
    _load_entry_points()
    return sorted(_REGISTRY)


def get_backbone(name: str) -> type[Backbone]:
    _load_entry_points()
    if name not in _REGISTRY:
        raise VitbenchError(
            f"unknown backbone '{name}': registered are {', '.join(sorted(_REGISTRY))} "
            "(a plugin backbone needs --plugin MODULE)"
        )
    return _REGISTRY[name]


def create_backbone(name: str, preset: str = "micro", **overrides: Any) -> Backbone:
    return get_backbone(name)(preset, **overrides)
