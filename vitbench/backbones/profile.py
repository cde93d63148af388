"""What a model costs: parameters and FLOPs per image (torch's own FLOP counter)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

# torch's counter has no formula for the CPU attention kernel, so attention would count
# as zero FLOPs on a CPU; it costs what the GPU kernels cost (the same matmuls).
def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_EXTRA_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _EXTRA_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _sdpa_cpu_flops


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int, in_chans: int) -> int:
    """Forward FLOPs for one image (a multiply-add counts as 2), in eval mode.

    Runs with autograd on: the counter's module tracker needs grad functions on
    tuple-passing modules such as PiT's stages.
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with FlopCounterMode(display=False, custom_mapping=_EXTRA_FORMULAS) as counter:
            model(torch.zeros(1, in_chans, image_size, image_size, device=device))
        return int(counter.get_total_flops())
    finally:
        model.train(was_training)
