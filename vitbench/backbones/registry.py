"""The backbone plugin contract and its strict registry.

A backbone is one class: subclass :class:`Backbone`, give it a ``name`` and a
``family``, and implement :meth:`Backbone.build`; ``presets`` are optional (a
class without them gets one, ``default``, with no arguments). Defining the
class registers it; a second class with the same name is an error. Backbones
also come from installed packages (entry-point group ``vitbench.backbones``)
and from ``--plugin MODULE`` (an importable module or a ``.py`` file).

The contract the training code relies on (and nothing else):

* ``build(num_classes, image_size, in_chans)`` returns an ``nn.Module`` mapping
  images ``[B, in_chans, S, S]`` to logits ``[B, num_classes]``;
* a backbone with a distillation head sets ``distillation_head = True``; its
  module has ``set_distilled_training(bool)`` (timm's API): when enabled and in
  train mode, forward returns ``(class_logits, distill_logits)``; otherwise the
  two heads' average;
* ``accepted_overrides()`` names the keyword arguments a preset may be
  overridden with (by default the keys of the presets).

What else vitbench asks a backbone, rather than branching on its name, is optional, with
defaults that suit any model: ``free_patch_size`` (``vitbench analyze cost``), and
``position_embeddings(model)`` and ``attention_map(model, images)`` (``vitbench analyze``).

The contract is checked where it can first fail: the class attributes and the
``build`` signature when the class is defined, the override names when a
backbone is created, and the built model with a forward pass of a dummy
batch in eval and in train mode in :meth:`Backbone.create`, before a run writes anything. A backbone
that breaks it raises :class:`BackboneContractError`, a one-line error.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar

from vitbench.errors import VitbenchError
from vitbench.utils import first_line

if TYPE_CHECKING:
    import torch
    from torch import nn

    from vitbench.analysis.attention import Explanation

_REGISTRY: dict[str, type["Backbone"]] = {}
_LOADED_PLUGINS: set[str] = set()
_ENTRY_POINTS_LOADED = False
ENTRY_POINT_GROUP = "vitbench.backbones"
# One module per built-in family, imported on first use so that `vitbench --help` stays fast.
BUILTIN_MODULES = ("resnet", "vit", "deit", "swin", "pit")
# The preset a backbone runs with when none is named: the built-ins' CPU-sized one if it has it.
PREFERRED_PRESET = "micro"
# The one preset of a class that defines none.
DEFAULT_PRESET = "default"
# Names end up in run dirs, W&B names and sweep labels.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Constructor arguments vitbench passes itself (from the data), never from a preset.
SET_BY_VITBENCH = frozenset({"img_size", "in_chans", "num_classes", "device", "dtype"})
DUMMY_BATCH = 2


class BackboneContractError(VitbenchError):
    """A backbone class or the model it builds does not keep the plugin contract.

    ``problem``: what went wrong, without the backbone's name or the fix (``build() failed (...)``), where known.
    """

    def __init__(self, message: str, problem: str = ""):
        super().__init__(message)
        self.problem = problem


def constructor_keys(fn: Callable, exclude=SET_BY_VITBENCH) -> frozenset[str]:
    """The keyword arguments ``fn`` (a class or function) takes, following ``**kwargs``
    up the class hierarchy (timm's ``VisionTransformerDistilled(*args, **kwargs)``)."""
    classes = list(fn.__mro__) if isinstance(fn, type) else [fn]
    keys: set[str] = set()
    for c in classes:
        target = c.__dict__.get("__init__") if isinstance(c, type) else c
        if target is None:
            continue
        params = inspect.signature(target).parameters.values()
        keys |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return frozenset(keys - {"self"} - set(exclude))


class Backbone:
    """Base class of every backbone; subclassing registers the class.

    Class attributes:
        name: the registry key used on the command line (``--backbone NAME``).
        family: ``cnn``, ``vit``, ``hierarchical``, ``pooling``, ... (for reports).
        presets: preset name -> keyword arguments merged into :attr:`config`
            (optional: a class without presets gets one, ``default``); the
            built-ins have ``micro`` (CPU-test sized) and the papers' ``tiny``
            and ``small``. A run without ``--preset`` uses ``micro`` where the
            class has it, else its first preset.
        distillation_head: whether :meth:`build` returns a model with a DeiT
            distillation head (``set_distilled_training``).
        in_chans: channels the model needs (3 for an RGB-only model), or None
            for any (the data's own).
        channels_last: whether the model runs faster in NHWC memory layout on a GPU
            (convolutional networks); the trainer then converts it.
        free_patch_size: whether ``patch_size`` (an override) may be any size that divides
            the image, so that ``vitbench analyze cost`` can hold it fixed while images grow
            (ViT, DeiT, PiT; Swin's patch size is tied to its windows and stages).
        baseline: whether ``vitbench report`` compares the other backbones with this one (ResNet:
            the CNN reference); written to each run's results.json, so the report need not know names.
    """

    name: ClassVar[str]
    family: ClassVar[str] = "other"
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    distillation_head: ClassVar[bool] = False
    in_chans: ClassVar[int | None] = None
    channels_last: ClassVar[bool] = False
    free_patch_size: ClassVar[bool] = False
    baseline: ClassVar[bool] = False
    abstract: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("abstract", False):
            return
        register_backbone(cls)

    def __init__(self, preset: str | None = None, **overrides: Any):
        preset = preset or self.default_preset()
        if preset not in self.presets:
            raise VitbenchError(
                f"backbone '{self.name}' has no preset '{preset}': choose one of {', '.join(self.presets)}"
            )
        if overrides:
            self.check_overrides(overrides)
        self.preset = preset
        self.overrides = dict(overrides)
        self.config: dict[str, Any] = {**self.presets[preset], **overrides}

    @classmethod
    def default_preset(cls) -> str:
        """The preset used when none is named: ``micro`` if the class has it, else its first."""
        return PREFERRED_PRESET if PREFERRED_PRESET in cls.presets else next(iter(cls.presets))

    @classmethod
    def accepted_overrides(cls) -> frozenset[str]:
        """The keyword arguments a preset may be overridden with (``model.overrides``).

        By default the keys of the presets. The built-ins add every argument of the
        timm constructor they build on; a plugin whose ``build`` reads more of
        :attr:`config` overrides this to name them.
        """
        return frozenset(k for p in cls.presets.values() for k in p)

    @classmethod
    def check_overrides(cls, overrides: dict) -> None:
        try:
            accepted = frozenset(cls.accepted_overrides())
        except Exception as e:  # noqa: BLE001 - a plugin's own method
            raise BackboneContractError(
                f"backbone '{cls.name}': accepted_overrides() failed ({first_line(e)}): fix it"
            ) from None
        for key in overrides:
            if key in accepted:
                continue
            if key in SET_BY_VITBENCH:
                raise VitbenchError(
                    f"backbone '{cls.name}': '{key}' is set by vitbench (from the data), not an override: remove it"
                )
            options = sorted(accepted)
            close = difflib.get_close_matches(str(key), options, n=1)
            if close:
                hint = f"did you mean '{close[0]}'?"
            elif options:
                hint = f"it accepts {', '.join(options)}"
            else:
                hint = "it accepts none (a plugin names what it accepts with accepted_overrides())"
            raise VitbenchError(f"backbone '{cls.name}' has no override '{key}': {hint}")

    @classmethod
    def implements(cls, method: str) -> bool:
        """Whether the class overrides :class:`Backbone`'s default ``method`` (e.g. ``"attention_map"``)."""
        return getattr(cls, method) is not getattr(Backbone, method)

    def position_embeddings(self, model: "nn.Module") -> "tuple[torch.Tensor, tuple[int, int]] | None":
        """The learned absolute position embedding of each patch ``[H*W, C]`` (no class or other
        prefix tokens) and the patch grid ``(H, W)``, for ``vitbench analyze posembed``.

        ``model`` is one this backbone built. None (the default) where it has none.
        """
        return None

    def attention_map(self, model: "nn.Module", images: "torch.Tensor", token_index: int = 0) -> "Explanation | None":
        """Where ``model`` (one this backbone built, in eval mode) looks in ``images``, for
        ``vitbench analyze attention``: a :class:`vitbench.analysis.attention.Explanation`.

        ``token_index`` is the prefix token to explain (0: class, 1: distillation). None (the
        default) where there is no map; the functions of :mod:`vitbench.analysis.attention`
        (``vit_rollout``, ``pit_rollout``, ``gradcam``) draw one for timm-like models.
        """
        return None

    def check_image_size(self, image_size: int) -> None:
        """Raise VitbenchError if this backbone cannot take ``image_size`` px."""

    def build(self, num_classes: int, image_size: int, in_chans: int) -> "nn.Module":
        raise NotImplementedError

    def create(self, num_classes: int, image_size: int, in_chans: int) -> "nn.Module":
        """Validate the size, :meth:`build`, and check the model keeps the contract: what the trainer calls.

        A ``build`` that raises, returns something else than an ``nn.Module``, or a model
        whose output for a dummy batch is not ``[batch, num_classes]`` logits is a
        :class:`BackboneContractError` naming the backbone, not a traceback later; one that
        only ``model.overrides`` cause is a :class:`VitbenchError` naming the overrides.
        """
        self.check_image_size(image_size)
        try:
            return self._create(num_classes, image_size, in_chans)
        except BackboneContractError as e:
            if not (self.overrides and e.problem and self._preset_works(num_classes, image_size, in_chans)):
                raise
            # Not the plugin's fix (the preset builds): the user's values are what to change.
            given = ", ".join(f"model.overrides.{k}={v!r}" for k, v in self.overrides.items())
            raise VitbenchError(f"{given}: backbone '{self.name}' (preset '{self.preset}', {image_size} px): "
                                f"{e.problem}: pass another value, or drop the override") from None

    def _preset_works(self, num_classes: int, image_size: int, in_chans: int) -> bool:
        """Whether the preset alone, without this backbone's overrides, builds a model that keeps the contract."""
        try:
            type(self)(self.preset)._create(num_classes, image_size, in_chans)
        except Exception:  # noqa: BLE001 - any failure: the overrides are not (alone) to blame
            return False
        return True

    def _create(self, num_classes: int, image_size: int, in_chans: int) -> "nn.Module":
        from torch import nn

        what = (f"backbone '{self.name}' (preset '{self.preset}') at {image_size} px, {in_chans} channel(s), "
                f"{num_classes} classes")

        def broken(problem: str, fix: str) -> BackboneContractError:
            return BackboneContractError(f"{what}: {problem}: {fix}", problem)

        try:
            model = self.build(num_classes=num_classes, image_size=image_size, in_chans=in_chans)
        except VitbenchError:
            raise
        except Exception as e:  # noqa: BLE001 - any failure of third-party code is the plugin's to fix
            raise broken(f"build() failed ({first_line(e)})", "fix build() or the preset's arguments") from None
        if not isinstance(model, nn.Module):
            raise broken(f"build() returned {type(model).__name__}, not a torch.nn.Module",
                         "return the model (images -> logits)")
        if self.distillation_head and not callable(getattr(model, "set_distilled_training", None)):
            raise broken("distillation_head = True but the model has no set_distilled_training(bool)",
                         "add it (timm's API) or set distillation_head = False")
        # Imported here, not at the top: profile imports torch, which `vitbench --help` must not wait for.
        from vitbench.backbones.profile import output_problem

        problem = output_problem(model, num_classes, image_size, in_chans, DUMMY_BATCH)
        if problem:
            raise broken(*problem)
        return model


def _check_class(cls: type[Backbone], name: str) -> None:
    """What can be checked without building a model; fills in a missing ``presets``."""
    where = f"backbone '{name}' ({cls.__module__}.{cls.__qualname__})"
    if not _NAME_RE.fullmatch(name):
        raise BackboneContractError(f"{where}: name must be letters, digits, '_', '-' or '.', e.g. name = \"my_mlp\"")
    if not isinstance(cls.family, str) or not cls.family:
        raise BackboneContractError(f"{where}: family must be a non-empty string, e.g. family = \"mlp\"")
    if not isinstance(cls.presets, dict) or not all(
        isinstance(k, str) and k and isinstance(v, dict) and all(isinstance(a, str) for a in v)
        for k, v in cls.presets.items()
    ):
        raise BackboneContractError(
            f"{where}: presets must map preset names to keyword arguments, "
            f"e.g. presets = {{\"small\": dict(hidden=64)}}"
        )
    if not cls.presets:
        cls.presets = {DEFAULT_PRESET: {}}
    flags = ("distillation_head", "channels_last", "free_patch_size")
    if not all(isinstance(getattr(cls, f), bool) for f in flags) or cls.in_chans not in (None, 1, 3):
        raise BackboneContractError(f"{where}: {', '.join(flags)} must be True or False, and in_chans None, 1 or 3")
    build = getattr(cls, "build", None)
    if build is None or build is Backbone.build or not callable(build):
        raise BackboneContractError(
            f"{where} has no build(): define build(self, num_classes, image_size, in_chans) returning an nn.Module"
        )
    try:
        inspect.signature(build).bind(None, num_classes=10, image_size=28, in_chans=1)
    except TypeError:
        raise BackboneContractError(
            f"{where}: build{inspect.signature(build)} cannot be called as "
            "build(num_classes=, image_size=, in_chans=): "
            "define build(self, num_classes, image_size, in_chans)"
        ) from None
    except ValueError:  # no signature to inspect (a C function): the build-time check covers it
        pass
    for method in ("accepted_overrides", "default_preset"):
        if not isinstance(inspect.getattr_static(cls, method), classmethod):
            raise BackboneContractError(f"{where}: {method} must be a @classmethod")


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    _load_entry_points()  # so a plugin that reuses a built-in's name fails here, not later
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise BackboneContractError(
            f"backbone class {cls.__qualname__} has no 'name': set name = \"my_backbone\" on the class"
        )
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        other = _REGISTRY[name]
        raise VitbenchError(
            f"backbone name '{name}' is already registered by {other.__module__}.{other.__qualname__}: "
            f"give {cls.__module__}.{cls.__qualname__} another name"
        )
    _check_class(cls, name)
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
    except (VitbenchError, KeyboardInterrupt):
        raise
    # A module that calls sys.exit() (a script's `if __name__` guard gone wrong) would end vitbench
    # silently with its status: it is a module that does not import, like any other failure.
    except BaseException as e:  # noqa: BLE001
        sys.modules.pop(f"vitbench_plugin_{path.stem}", None)
        raise VitbenchError(
            f"plugin '{spec}' does not import ({type(e).__name__}: {e}): fix the module or the --plugin path"
        ) from None
    _LOADED_PLUGINS.add(key)


def load_plugins(specs: list[str] | tuple[str, ...]) -> None:
    for spec in specs or ():
        load_plugin(spec)


def list_backbones(where: Callable[[type[Backbone]], bool] | None = None) -> list[str]:
    """Registered backbone names, sorted; with ``where``, those whose class it accepts
    (``list_backbones(lambda b: b.distillation_head)``)."""
    _load_entry_points()
    return sorted(name for name, cls in _REGISTRY.items() if where is None or where(cls))


def get_backbone(name: str) -> type[Backbone]:
    _load_entry_points()
    if name not in _REGISTRY:
        raise VitbenchError(
            f"unknown backbone '{name}': registered are {', '.join(sorted(_REGISTRY))} "
            "(a plugin backbone needs --plugin MODULE)"
        )
    return _REGISTRY[name]


def create_backbone(name: str, preset: str | None = None, **overrides: Any) -> Backbone:
    """Backbone ``name`` with ``preset`` (None: its default) and checked ``overrides``."""
    return get_backbone(name)(preset, **overrides)
