"""Op A, the adaLN block boundary: residual update, norm and modulation (docs/model.md §2, §7b; docs/kernels.md §1).

    residual ← residual + gate · branch
    h        ← Norm(residual) · (1 + scale) + shift

``Norm`` is RMSNorm with a learnable weight (``norm="rms"``, the DiT blocks) or LayerNorm without affine
(``norm="layer"``, ``weight=None``: the DiT-only baseline's final layer). ``shift``, ``scale``, ``gate`` are
(B, D) and may be strided views of the (B, 6D) modulation tensor.

The reference reproduces the authors' bf16-autocast precision chain (§7b) op by op: the residual update rounds
after the product and after the sum (bf16 in, bf16 out); RMSNorm takes statistics in fp32, rounds the
normalised value to the input dtype and multiplies by the fp32 weight (fp32 out); LayerNorm follows autocast's
fp32 policy; ``1 + scale`` rounds in the modulation dtype; the modulated output stays fp32 until the next
Linear casts it. A fused kernel rounds once per stored tensor instead (closer to fp32).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm over the last dim: fp32 statistics, normalised value rounded to ``x.dtype``, times ``weight``."""
    xf = x.float()
    y = (xf * torch.rsqrt(xf.square().mean(-1, keepdim=True) + eps)).to(x.dtype)
    return y if weight is None else y * weight


def _norm(x: torch.Tensor, weight: torch.Tensor | None, norm: str, eps: float) -> torch.Tensor:
    if norm == "rms":
        return rms_norm(x, weight, eps)
    if norm == "layer":
        if weight is not None:
            raise ValueError("norm='layer' is LayerNorm without affine: weight must be None")
        return F.layer_norm(x, x.shape[-1:], eps=eps)
    raise ValueError(f"norm must be 'rms' or 'layer', got {norm!r}")


def _per_sample(v: torch.Tensor) -> torch.Tensor:
    # (B, D) -> (B, 1, D), broadcasting over tokens
    return v.unsqueeze(1)


@register("modulated_norm", "torch")
def modulated_norm(x: torch.Tensor, weight: torch.Tensor | None, shift: torch.Tensor, scale: torch.Tensor,
                   norm: str = "rms", eps: float = 1e-6) -> torch.Tensor:
    """h = Norm(x) · (1 + scale) + shift, the boundary without a residual (first block; §2 step 2).

    x: (B, T, D); weight: (D,) or None; shift, scale: (B, D). Returns h: (B, T, D).
    """
    return _norm(x, weight, norm, eps) * (1 + _per_sample(scale)) + _per_sample(shift)


@register("block_boundary", "torch")
def block_boundary(residual: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor, weight: torch.Tensor | None,
                   shift: torch.Tensor, scale: torch.Tensor, norm: str = "rms",
                   eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Gated residual update followed by the next modulated norm (§2 steps 2–3 across a sub-block boundary).

    residual, branch: (B, T, D); gate, shift, scale: (B, D); weight: (D,) or None.
    Returns (new residual (B, T, D), h (B, T, D)).
    """
    residual = residual + _per_sample(gate) * branch
    return residual, modulated_norm(residual, weight, shift, scale, norm, eps)
