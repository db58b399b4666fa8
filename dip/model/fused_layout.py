"""Merged-GEMM layouts that keep the released checkpoint layout (docs/model.md §5; model-level wins of
docs/kernels.md §1):
W1 and W3 of every SwiGLU as one GEMM (``blocks.{i}.mlp.w13``), and every block's adaLN Linear(c) as one GEMM
(``adaLN_all``: c is the same for every block). These two functions convert state dicts between the layouts; the
model's state-dict hooks apply them, so saving writes and loading reads the released names.
"""
from __future__ import annotations

import torch


def to_released(state: dict, prefix: str, depth: int) -> dict:
    """Merged names → released names, in place; returns ``state``."""
    for i in range(depth):
        key = f"{prefix}blocks.{i}.mlp.w13.weight"
        if key in state:
            state[f"{prefix}blocks.{i}.mlp.w1.weight"], state[f"{prefix}blocks.{i}.mlp.w3.weight"] = \
                state.pop(key).chunk(2, dim=0)
    for part in ("weight", "bias"):
        key = f"{prefix}adaLN_all.{part}"
        if key in state:
            for i, chunk in enumerate(state.pop(key).chunk(depth, dim=0)):
                state[f"{prefix}blocks.{i}.adaLN_modulation.0.{part}"] = chunk
    return state


def to_merged(state: dict, prefix: str, depth: int) -> dict:
    """Released names → merged names, in place (where the released keys are all present); returns ``state``."""
    for i in range(depth):
        w1, w3 = f"{prefix}blocks.{i}.mlp.w1.weight", f"{prefix}blocks.{i}.mlp.w3.weight"
        if w1 in state and w3 in state:
            state[f"{prefix}blocks.{i}.mlp.w13.weight"] = torch.cat([state.pop(w1), state.pop(w3)], dim=0)
    for part in ("weight", "bias"):
        keys = [f"{prefix}blocks.{i}.adaLN_modulation.0.{part}" for i in range(depth)]
        if keys and all(k in state for k in keys):
            state[f"{prefix}adaLN_all.{part}"] = torch.cat([state.pop(k) for k in keys], dim=0)
    return state
