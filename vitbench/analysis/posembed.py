"""The ViT paper's Figure 7: cosine similarity of each patch's learned position embedding
with every other patch's, one small heatmap per patch laid out on the patch grid.

Prefix tokens (class, distillation, register: timm's ``num_prefix_tokens``) are excluded.
PiT keeps its position embedding as a [1, C, H, W] map, which is flattened the same way.
Which function reads a model's embedding is the backbone's to say
(:meth:`~vitbench.backbones.Backbone.position_embeddings`), so a plugin can take part.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vitbench.analysis.runs import ask_backbone, implementing
from vitbench.errors import VitbenchError


def vit_position_embeddings(model: nn.Module, backbone: str = "?") -> tuple[torch.Tensor, tuple[int, int]] | None:
    """Patch entries of a timm ``VisionTransformer``'s ``pos_embed`` [H·W, C] and its grid, or None without one."""
    pe = getattr(model, "pos_embed", None)
    if not isinstance(pe, torch.Tensor):  # pos_embed='none'
        return None
    gh, gw = model.patch_embed.grid_size
    emb = pe.detach()[0]
    if not getattr(model, "no_embed_class", False):
        emb = emb[int(getattr(model, "num_prefix_tokens", 1)):]
    if emb.shape[0] != gh * gw:
        raise VitbenchError(
            f"backbone '{backbone}': position embedding has {emb.shape[0]} patch entries for a {gh}x{gw} grid"
        )
    return emb, (gh, gw)


def pit_position_embeddings(model: nn.Module) -> tuple[torch.Tensor, tuple[int, int]] | None:
    """A timm ``PoolingVisionTransformer``'s [1, C, H, W] position map as [H·W, C] and (H, W)."""
    pe = getattr(model, "pos_embed", None)
    if not (isinstance(pe, torch.Tensor) and pe.dim() == 4):
        return None
    _, c, h, w = pe.shape
    return pe.detach()[0].reshape(c, h * w).T, (h, w)


def position_embeddings(backbone, model: nn.Module) -> tuple[torch.Tensor, tuple[int, int]]:
    """The position embeddings ``backbone`` (a :class:`~vitbench.backbones.Backbone`) finds in ``model``,
    or a one-line error."""
    found = ask_backbone(backbone, "position_embeddings", model)
    if found is None:
        raise VitbenchError(
            f"backbone '{backbone.name}' has no learned absolute position embedding: "
            f"posembed works for {implementing('position_embeddings')}"
        )
    return found


def similarity(emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity [N, N] of the rows of ``emb`` [N, C] (the diagonal is 1)."""
    e = F.normalize(emb.float(), dim=1)
    return e @ e.T


def plot_similarity(path, sim: torch.Tensor, grid: tuple[int, int], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vitbench.utils import atomic_path

    gh, gw = grid
    cell = max(0.25, min(0.6, 8.0 / max(gh, gw)))
    fig, axes = plt.subplots(gh, gw, figsize=(gw * cell + 1.2, gh * cell + 0.8), squeeze=False)
    maps = sim.reshape(gh * gw, gh, gw).cpu().numpy()
    im = None
    for k, ax in enumerate(axes.flat):
        im = ax.imshow(maps[k], vmin=-1, vmax=1, cmap="viridis")
        ax.set_xticks([])
        ax.set_yticks([])
    for r in range(gh):
        axes[r, 0].set_ylabel(str(r + 1), fontsize=6, rotation=0, labelpad=6)
    for c in range(gw):
        axes[-1, c].set_xlabel(str(c + 1), fontsize=6)
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.06, right=0.86, bottom=0.06, top=0.9, wspace=0.08, hspace=0.08)
    cax = fig.add_axes([0.89, 0.15, 0.025, 0.7])
    fig.colorbar(im, cax=cax, label="cosine similarity")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
