"""Op E: patchify, patch embedding and unpatchify (docs/model.md §2 first bullets, §3 last paragraph).

A patch vector is the P×P pixels of one patch flattened channel-major, then row, then column, (c, i, j): what
``F.unfold`` produces; tokens are row-major over the patch grid. The reference uses reshape/permute, never
``F.fold``/``F.unfold`` (Inductor on CPU miscompiles conv → reshape → transpose → fold).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register


@register("patchify", "torch")
def patchify(img: torch.Tensor, patch_size: int) -> torch.Tensor:
    """img (B, C, H, W) → patches (B·T, C, P, P), T = (H/P)·(W/P) row-major; ``.flatten(1)`` gives (c, i, j) vectors."""
    B, C, H, W = img.shape
    P = patch_size
    x = img.reshape(B, C, H // P, P, W // P, P).permute(0, 2, 4, 1, 3, 5)  # (B, gh, gw, C, P, P)
    return x.reshape(B * (H // P) * (W // P), C, P, P)


@register("unpatchify", "torch")
def unpatchify(patches: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """patches (B·T, C, P, P) (any memory format) → image (B, C, H, W); the inverse of ``patchify``."""
    C, P = patches.shape[1], patches.shape[-1]
    x = patches.reshape(batch, height // P, width // P, C, P, P).permute(0, 3, 1, 4, 2, 5)  # (B, C, gh, P, gw, P)
    return x.reshape(batch, C, height, width)


@register("patch_embed", "torch")
def patch_embed(img: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Linear(C·P² → D) on every patch vector: img (B, C, H, W) → tokens (B, T, D)."""
    B = img.shape[0]
    tokens = patchify(img, patch_size).reshape(B, -1, weight.shape[1])  # (B, T, C·P²)
    return F.linear(tokens, weight, bias)
