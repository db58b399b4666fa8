"""Op C, the final context feeding the Patch Detailer Head (docs/model.md §2, last bullet; docs/kernels.md §1).

    s = SiLU(residual + gate · branch + t_emb)

The last block's gated residual update fused with the head's input: no final norm, time embedding only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register


@register("final_context", "torch")
def final_context(residual: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor,
                  t_emb: torch.Tensor) -> torch.Tensor:
    """residual, branch: (B, T, D); gate, t_emb: (B, D). Returns s: (B, T, D) in the activation dtype."""
    x = residual + gate.unsqueeze(1) * branch
    return F.silu(x + t_emb.unsqueeze(1))
