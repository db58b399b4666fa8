"""Op F, the SwiGLU gate of the feed-forward (docs/model.md §2: out = W2(SiLU(W1 x) ⊙ W3 x))."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import register


@register("swiglu", "torch")
def swiglu(a: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """SiLU(a) ⊙ b for the W1 and W3 projections a, b: (..., hidden). With ``b`` None, ``a`` is the merged W1|W3
    output (..., 2·hidden) and its two halves are used."""
    if b is None:
        a, b = a.chunk(2, dim=-1)
    return F.silu(a) * b
