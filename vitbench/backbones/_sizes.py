"""Patch sizes that make sense at each image size, shared by the patch-based families.

Small images get small patches so every model sees a useful number of tokens:
28 and 32 px -> 4 px patches (49 / 64 tokens), 64 px -> 8 px (64 tokens),
224 px -> 16 px (196 tokens, the papers' setting).
"""

from vitbench.errors import VitbenchError

WORKS_AT = "28, 32, 64 and 224"


def auto_patch_size(image_size: int) -> int:
    if image_size <= 32:
        return 4
    if image_size <= 64:
        return 8
    return 16


def check_patch_grid(backbone: str, image_size: int, patch_size: int | None) -> int:
    """Return the patch size to use, or explain which sizes work."""
    patch = patch_size or auto_patch_size(image_size)
    if image_size < 2 * patch or image_size % patch:
        raise VitbenchError(
            f"backbone '{backbone}' cannot take {image_size} px images with {patch} px patches: "
            f"use a multiple of {patch} px (e.g. {WORKS_AT}) or set model.overrides.patch_size"
        )
    return patch
