"""Op B: QK-norm and 2D RoPE from the qkv projection (docs/model.md §2, attention bullets; docs/kernels.md §1).

The qkv Linear output (B, T, 3D) has columns in (q, k, v) × head × head-dim order. q and k get RMSNorm over the
head dim with learnable weights, then the 2D rotary embedding; q, k, v come out in the (B, H, T, head_dim)
layout of ``scaled_dot_product_attention``.

2D RoPE: head dim h splits into h/2 adjacent pairs (2i, 2i+1), each rotated by an angle. Pair 2k rotates by
x·f_k and pair 2k+1 by y·f_k, with f_k = theta^(-4k/h), k = 0..h/4-1, and token grid coordinates
x = linspace(0, span, W/P), y = linspace(0, span, H/P) (span 16: the grid is stretched to [0, 16] whatever its
size), tokens row-major. Angles, cos and sin and the rotation are fp32; the result has q's dtype (fp32 after the
fp32-weighted RMSNorm, as in the authors' chain, §7b).
"""
from __future__ import annotations

import torch

from ..block_boundary.reference import rms_norm
from ..registry import register


def rope_2d_table(head_dim: int, grid_h: int, grid_w: int, *, theta: float = 10000.0, span: float = 16.0,
                  device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of the 2D RoPE angles, each (grid_h·grid_w, head_dim/2) fp32, pairs interleaved (x, y, x, y…)."""
    if head_dim % 4:
        raise ValueError(f"2D RoPE needs head_dim % 4 == 0, got head_dim={head_dim}")
    freqs = theta ** (-torch.arange(0, head_dim, 4, dtype=torch.float32, device=device)[: head_dim // 4] / head_dim)
    ys = torch.linspace(0, span, grid_h, dtype=torch.float32, device=device)
    xs = torch.linspace(0, span, grid_w, dtype=torch.float32, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")  # (gh, gw) each
    angles = torch.stack([torch.outer(x.flatten(), freqs), torch.outer(y.flatten(), freqs)], dim=-1)  # (T, h/4, 2)
    angles = angles.flatten(1)  # (T, h/2)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs of x (..., T, h) by the angles whose cos/sin are (T, h/2); fp32 maths, x's dtype out."""
    pairs = x.float().unflatten(-1, (-1, 2))
    x0, x1 = pairs[..., 0], pairs[..., 1]  # (..., T, h/2) each
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)
    return out.flatten(-2).to(x.dtype)


@register("qk_norm_rope", "torch")
def qk_norm_rope(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, cos: torch.Tensor,
                 sin: torch.Tensor, num_heads: int, eps: float = 1e-6):
    """qkv: (B, T, 3D) → q, k, v each (B, H, T, D/H); q and k RMS-normalised and rotated."""
    B, T, three_d = qkv.shape
    q, k, v = qkv.view(B, T, 3, num_heads, three_d // (3 * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)
    q = apply_rope(rms_norm(q, q_weight, eps), cos, sin)
    k = apply_rope(rms_norm(k, k_weight, eps), cos, sin)
    return q, k, v
