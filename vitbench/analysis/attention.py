"""Where a model looks: attention rollout for ViT, DeiT and PiT; Grad-CAM for Swin and ResNet.

Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers", ACL 2020):
average each layer's attention over heads, add the identity (the residual path),
renormalise the rows, and multiply the layers: ``R = Ã_L · … · Ã_1``. Row ``i`` of ``R``
says how much output token ``i`` draws from each input token; the class token's row,
restricted to the patches and reshaped to the patch grid, is the map.

Choices a reviewer should check:

* **How the probabilities are captured.** timm's ``Attention`` runs fused SDPA, which
  never materialises the probabilities. A forward hook recomputes them from the module's
  own public parts on the module's input: ``softmax(scale · q_norm(q) · k_norm(k)ᵀ)`` with
  ``q, k`` from ``qkv``. We prefer this to switching ``fused_attn`` off and hooking
  ``attn_drop``: it leaves the model untouched (no state to restore if something raises,
  same numerics as training), and it does not depend on ``attn_drop`` being applied to the
  softmaxed matrix, an implementation detail of the unfused path. The test suite checks
  that both routes agree on a real model.
* **DeiT**: the class token's row (``token_index=0``); the distillation token is row 1.
* **PiT** pools tokens between stages with a strided depth-wise convolution (and maps the
  class token through a linear layer). We roll out *through* the pooling: each pooled token
  is treated as a uniform mix of the tokens under its convolution window (zero padding
  dropped), a row-stochastic matrix ``P`` built from the conv's ``kernel_size``, ``stride``
  and ``padding``; the class token maps to itself. ``R = R₃ · P₂ · R₂ · P₁ · R₁`` keeps the
  rows summing to 1, and the class token's row lives on the first stage's (overlapping) patch
  grid, which is upsampled to the image (bilinearly, so the map is ~1 px approximate).
* **Swin** has no global token to roll out from (attention stays inside shifted windows),
  and **ResNet** has no attention: both get Grad-CAM (Selvaraju et al., ICCV 2017) of the
  predicted class on the last stage's feature map (Swin's ``layers[-1]``, ResNet's
  ``layer4``): a different method, labelled as such on the figure.

Which map a model gets is its backbone's choice (:meth:`~vitbench.backbones.Backbone.attention_map`),
so a plugin built on timm's classes can use the functions here too.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from vitbench.analysis.runs import ask_backbone, implementing
from vitbench.errors import VitbenchError

# -- capturing attention ------------------------------------------------------------------

def attention_modules(model: nn.Module) -> list[nn.Module]:
    """timm ``Attention`` modules in forward order (ViT, DeiT and PiT blocks use them)."""
    from timm.models.vision_transformer import Attention

    return [m for m in model.modules() if isinstance(m, Attention)]


def recompute_attention(module: nn.Module, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
    """Softmaxed attention [B, heads, N, N] of timm ``Attention`` ``module`` on its input ``x``."""
    if attn_mask is not None or is_causal:
        raise VitbenchError("attention rollout does not support masked attention: the model passed an attn_mask")
    b, n, _ = x.shape
    heads = module.num_heads
    qkv = module.qkv(x).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = module.q_norm(q), module.k_norm(k)
    return ((q * module.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


@contextmanager
def capture_attention(modules: Sequence[nn.Module]) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of ``modules`` appends its attention [B, heads, N, N]."""
    captured: list[torch.Tensor] = []

    def hook(module, args, kwargs, output):
        x = args[0] if args else kwargs["x"]
        with torch.no_grad():
            captured.append(
                recompute_attention(module, x, kwargs.get("attn_mask"), kwargs.get("is_causal", False)).detach()
            )

    handles = [m.register_forward_hook(hook, with_kwargs=True) for m in modules]
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()


# -- rollout (pure functions) -------------------------------------------------------------

def rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout of one stage: [B, heads, N, N] (or [B, N, N]) per layer -> [B, N, N].

    Heads are averaged, the identity added and rows renormalised per layer, then the
    layers multiplied, last on the left. Every row of the result sums to 1.
    """
    if not attentions:
        raise ValueError("rollout needs at least one attention matrix")
    result = None
    for a in attentions:
        a = a.float()
        if a.dim() == 4:
            a = a.mean(dim=1)
        eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
        a = a + eye
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def rollout_stages(stages: Sequence[Sequence[torch.Tensor]], transitions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Rollout across stages joined by token-mixing matrices: ``R_k · T_k · … · T_1 · R_1``.

    ``transitions[i]`` ([N_{i+1}, N_i], row-stochastic) maps stage ``i``'s tokens to stage
    ``i+1``'s. The result is [B, N_last, N_first] with rows summing to 1.
    """
    if len(transitions) != len(stages) - 1:
        raise ValueError(f"{len(stages)} stages need {len(stages) - 1} transitions, got {len(transitions)}")
    result = rollout(stages[0])
    for t, stage in zip(transitions, stages[1:]):
        result = rollout(stage) @ (t.to(result) @ result)
    return result


def pooling_matrix(conv: nn.Conv2d, in_hw: tuple[int, int], num_prefix: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Token-mixing matrix of a strided conv pooling: each output token averages its window.

    Returns ([prefix + Ho·Wo, prefix + Hi·Wi] row-stochastic, (Ho, Wo)); prefix tokens map to themselves.
    """
    (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
    hi, wi = in_hw
    ho, wo = (hi + 2 * ph - kh) // sh + 1, (wi + 2 * pw - kw) // sw + 1
    m = torch.zeros(num_prefix + ho * wo, num_prefix + hi * wi)
    m[:num_prefix, :num_prefix] = torch.eye(num_prefix)
    for i in range(ho):
        rows = [r for r in range(i * sh - ph, i * sh - ph + kh) if 0 <= r < hi]
        for j in range(wo):
            cols = [c for c in range(j * sw - pw, j * sw - pw + kw) if 0 <= c < wi]
            for r in rows:
                for c in cols:
                    m[num_prefix + i * wo + j, num_prefix + r * wi + c] = 1.0
    return m / m.sum(dim=1, keepdim=True), (ho, wo)


# -- per-architecture maps ----------------------------------------------------------------

@dataclass
class Explanation:
    maps: torch.Tensor  # [B, S, S] in [0, 1], upsampled to the image
    logits: torch.Tensor  # [B, num_classes]
    method: str


def _to_image(grid_maps: torch.Tensor, image_size: int) -> torch.Tensor:
    """[B, h, w] -> [B, S, S], each map stretched to [0, 1] (min to 0, max to 1) for display.

    Rollout maps of a briefly trained model are close to uniform; without the stretch every
    overlay would be one flat colour. The figure therefore shows relative, not absolute, weight.
    """
    up = F.interpolate(grid_maps[:, None].float(), size=(image_size, image_size), mode="bilinear",
                       align_corners=False)[:, 0]
    lo = up.amin(dim=(1, 2), keepdim=True)
    hi = up.amax(dim=(1, 2), keepdim=True)
    return ((up - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)


def vit_rollout(model: nn.Module, images: torch.Tensor, token_index: int = 0) -> Explanation:
    """Rollout for timm ``VisionTransformer`` (and DeiT's distilled variant)."""
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    if not 0 <= token_index < prefix:
        raise VitbenchError(
            f"token_index {token_index} is not a prefix token: this model has {prefix} (use --token cls)"
        )
    gh, gw = model.patch_embed.grid_size
    with torch.no_grad(), capture_attention(attention_modules(model)) as att:
        logits = model(images)
    r = rollout(att)
    if r.shape[-1] != prefix + gh * gw:
        raise VitbenchError(
            f"attention covers {r.shape[-1]} tokens, expected {prefix} + {gh}x{gw}: unsupported ViT variant"
        )
    grid = r[:, token_index, prefix:].reshape(-1, gh, gw)
    name = ("class" if token_index == 0
            else "distillation" if prefix > 1 and token_index == 1 else f"prefix {token_index}")
    return Explanation(_to_image(grid, images.shape[-1]), logits, f"attention rollout ({name} token)")


def pit_rollout(model: nn.Module, images: torch.Tensor, token_index: int = 0) -> Explanation:
    """Rollout for timm ``PoolingVisionTransformer`` through its token pooling (see module doc)."""
    prefix = int(model.cls_token.shape[1])
    if not 0 <= token_index < prefix:
        raise VitbenchError(f"token_index {token_index} is not a prefix token: this PiT has {prefix} (use --token cls)")
    hw = tuple(model.pos_embed.shape[-2:])
    stages, transitions, grids = [], [], [hw]
    for i, stage in enumerate(model.transformers):
        pool = getattr(stage, "pool", None)
        if pool is not None:
            if i == 0:
                raise VitbenchError("PiT with pooling before its first stage is not supported")
            t, hw = pooling_matrix(pool.conv, hw, prefix)
            transitions.append(t)
            grids.append(hw)
        stages.append(attention_modules(stage))
    all_modules = [m for s in stages for m in s]
    with torch.no_grad(), capture_attention(all_modules) as att:
        logits = model(images)
    it = iter(att)
    per_stage = [[next(it) for _ in s] for s in stages]
    r = rollout_stages(per_stage, transitions)
    gh, gw = grids[0]
    grid = r[:, token_index, prefix:].reshape(-1, gh, gw)
    name = "class" if token_index == 0 else "distillation"
    return Explanation(_to_image(grid, images.shape[-1]), logits,
                       f"attention rollout through token pooling ({name} token)")


def gradcam(model: nn.Module, layer: nn.Module, images: torch.Tensor, channels_last: bool = False) -> Explanation:
    """Grad-CAM of the predicted class on ``layer``'s output feature map."""
    store: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        with torch.enable_grad():
            logits = model(images)
            acts = store["a"]
            score = logits.gather(1, logits.argmax(1, keepdim=True)).sum()
            grads = torch.autograd.grad(score, acts)[0]
    finally:
        handle.remove()
    if channels_last:
        acts, grads = acts.permute(0, 3, 1, 2), grads.permute(0, 3, 1, 2)
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * acts).sum(dim=1)).detach()
    return Explanation(_to_image(cam, images.shape[-1]), logits.detach(), "Grad-CAM of the predicted class, last stage")


def explain(backbone, model: nn.Module, images: torch.Tensor, token_index: int = 0) -> Explanation:
    """The map ``backbone`` (a :class:`~vitbench.backbones.Backbone`) draws for ``model``, or a one-line error."""
    model.eval()
    exp = ask_backbone(backbone, "attention_map", model, images, token_index)
    if exp is None:
        raise VitbenchError(
            f"backbone '{backbone.name}' ({type(model).__name__}) has no attention map here: "
            f"supported are {implementing('attention_map')}"
        )
    return exp


# -- drawing --------------------------------------------------------------------------------

def overlay(image: torch.Tensor, heat: torch.Tensor, alpha: float = 0.5):
    """[H, W, C] in [0, 1] and [H, W] in [0, 1] -> an RGB uint8 array with the map in 'jet'."""
    import matplotlib
    import numpy as np

    img = image.cpu().numpy()
    img = np.repeat(img, 3, axis=2) if img.shape[2] == 1 else img[..., :3]
    colour = matplotlib.colormaps["jet"](heat.cpu().numpy())[..., :3]
    return ((1 - alpha) * img + alpha * colour).clip(0, 1).__mul__(255).astype("uint8")


def plot_grid(path, pictures: torch.Tensor, exp: Explanation, labels: torch.Tensor, class_names: list[str],
              title: str) -> list[dict]:
    """One PNG: per image, the image and its map overlaid, titled "pred / label". Returns per-image info."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitbench.utils import atomic_path

    n = len(pictures)
    pairs_per_row = min(4, n)
    rows = (n + pairs_per_row - 1) // pairs_per_row
    fig, axes = plt.subplots(rows, 2 * pairs_per_row, figsize=(2 * pairs_per_row * 1.6, rows * 1.9 + 0.5),
                             squeeze=False)
    preds = exp.logits.argmax(1)
    name = lambda i: class_names[i] if 0 <= i < len(class_names) else str(i)  # noqa: E731
    info = []
    for ax in axes.flat:
        ax.axis("off")
    for k in range(n):
        r, c = divmod(k, pairs_per_row)
        img = pictures[k]
        gray = img.shape[2] == 1
        axes[r, 2 * c].imshow(img[..., 0] if gray else img, cmap="gray" if gray else None, vmin=0, vmax=1)
        axes[r, 2 * c + 1].imshow(overlay(img, exp.maps[k]))
        p, y = int(preds[k]), int(labels[k])
        axes[r, 2 * c + 1].set_title(f"{name(p)} / {name(y)}", fontsize=7, color="green" if p == y else "red")
        info.append({"pred": name(p), "label": name(y), "correct": p == y, "overlay": overlay(img, exp.maps[k])})
    fig.suptitle(f"{title}\n{exp.method}; titles: prediction / label", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    return info
