"""What a model costs and whether it keeps the contract: parameters, FLOPs and activation
memory per image, and the output shape of a dummy batch.

Forward passes here run on fake tensors (``FakeTensorMode``: shapes and dtypes, no data),
so they take milliseconds at any image size and allocate nothing; a model that fake
tensors cannot run (data-dependent shapes, lazy modules) gets a real forward pass instead.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from vitbench.utils import first_line


# torch's counter has no formula for the CPU attention kernel, so attention would count
# as zero FLOPs on a CPU; it costs what the GPU kernels cost (the same matmuls).
def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _fakeable(model: nn.Module) -> bool:
    # A lazy module would materialise its parameters as fake tensors, breaking the real model.
    from torch.nn.parameter import is_lazy

    return not any(is_lazy(t) for t in [*model.parameters(), *model.buffers()])


@contextlib.contextmanager
def _fake():
    import logging

    from torch._subclasses.fake_tensor import FakeTensorMode

    # A model that fails on fake tensors is retried for real (or reported in one line): torch's
    # own log of the failure, a traceback on stderr, would only add noise.
    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            yield
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _mode(model: nn.Module, training: bool):
    was_training = model.training
    model.train(training)
    try:
        yield
    finally:
        model.train(was_training)


def _run(model: nn.Module, batch: int, image_size: int, in_chans: int, fake: bool):
    with _fake() if fake else contextlib.nullcontext():
        return model(torch.zeros(batch, in_chans, image_size, image_size, device=_device(model)))


def count_flops(model: nn.Module, image_size: int, in_chans: int) -> int:
    """Forward FLOPs for one image (a multiply-add counts as 2), in eval mode.

    Runs with autograd on: the counter's module tracker needs grad functions on
    tuple-passing modules such as PiT's stages.
    """
    with _mode(model, False):
        for fake in ((True, False) if _fakeable(model) else (False,)):
            try:
                with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
                    _run(model, 1, image_size, in_chans, fake)
                return int(counter.get_total_flops())
            except Exception:  # noqa: BLE001 - fake tensors could not run it: count for real
                if not fake:
                    raise
    raise AssertionError("unreachable")


def _describe(out) -> str:
    if isinstance(out, torch.Tensor):
        return f"a tensor of shape [{', '.join(map(str, out.shape))}]"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} ({', '.join(_describe(o) for o in out[:3])})"
    return f"a {type(out).__name__}"


@contextlib.contextmanager
def _untouched(model: nn.Module):
    """Put back the buffers (BatchNorm's running statistics step in train mode, even on fake inputs)
    and the CPU random state (dropout draws from it) that a checking pass changed."""
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])


def output_problem(model: nn.Module, num_classes: int, image_size: int, in_chans: int,
                   batch: int = 2) -> tuple[str, str] | None:
    """A forward pass of a dummy batch in eval mode, then one in train mode (no grad, the model's
    buffers and the random state left as they were): None if both give logits ``[batch, num_classes]``,
    else (what is wrong, its fix), which the registry raises as a ``BackboneContractError``.

    Train mode takes other paths (BatchNorm's batch statistics, dropout, DeiT's heads), which
    would otherwise first fail in the first training step.
    """
    expected = f"[{batch}, {num_classes}] (batch, num_classes)"
    shape = f"[{batch}, {in_chans}, {image_size}, {image_size}]"
    for training in (False, True):
        where = "in train mode " if training else ""
        out, error = None, None
        with _mode(model, training), _untouched(model), torch.no_grad():
            for fake in ((True, False) if _fakeable(model) else (False,)):
                try:
                    out = _run(model, batch, image_size, in_chans, fake)
                    error = None
                    break
                except Exception as e:  # noqa: BLE001 - retried for real; a real failure is the model's
                    error = e
        if error is not None:
            return (f"its model failed {where}on a {shape} batch ({first_line(error)})",
                    "fix the model's forward() or the preset's arguments")
        if not isinstance(out, torch.Tensor) or tuple(out.shape) != (batch, num_classes):
            return (f"its model maps a {shape} batch {where}to {_describe(out)}, expected logits {expected}",
                    "return one score per class for each image")
        if not out.dtype.is_floating_point:
            return f"its model returns {out.dtype} logits", "return floating point scores"
    return None


def activation_bytes(model: nn.Module, image_size: int, in_chans: int) -> int | None:
    """Bytes autograd keeps for backward per image in one training step.

    Measured on fake tensors in train mode, as the difference between batches of 2 and 1 (what
    does not grow with the batch, such as weights saved for backward, cancels out). None if fake
    tensors cannot run the model (then nothing is estimated).
    """
    if not _fakeable(model):
        return None

    def measure(batch: int) -> int:
        seen: dict[int, torch.Tensor] = {}

        def pack(t):
            seen.setdefault(id(t), t)  # kept alive in `seen`, so an id is never reused
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), torch.enable_grad():
            _run(model, batch, image_size, in_chans, fake=True)
        return sum(t.numel() * t.element_size() for t in seen.values())

    try:
        with _mode(model, True), _untouched(model):
            return max(0, measure(2) - measure(1))
    except Exception:  # noqa: BLE001 - no estimate; the run finds out for real
        return None
