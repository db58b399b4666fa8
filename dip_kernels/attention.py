"""Scaled dot-product attention without mask (docs/model.md §2), behind the same backend switch.

``torch``: PyTorch's ``scaled_dot_product_attention`` (picks flash / memory-efficient / math itself).
``cuda``: flash-attn's ``flash_attn_func`` when that optional package imports, on fp16/bf16 CUDA tensors;
otherwise the same SDPA call. Under bf16 autocast both receive bf16 q, k, v (the authors' chain casts the fp32
q, k there, §7b).
"""
from __future__ import annotations

import importlib.util

import torch
import torch.nn.functional as F

from .registry import register


@register("attention", "torch")
def sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q, k, v: (B, H, T, h) → (B, T, H·h)."""
    out = F.scaled_dot_product_attention(q, k, v)  # (B, H, T, h)
    return out.transpose(1, 2).flatten(2)


def _flash_attn_func():
    from flash_attn import flash_attn_func

    return flash_attn_func


def flash_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """flash-attn on (B, T, H, h) views of the (B, H, T, h) inputs; SDPA where flash-attn cannot run."""
    dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else q.dtype
    if not q.is_cuda or dtype not in (torch.float16, torch.bfloat16):
        return sdpa(q, k, v)
    q, k, v = (a.transpose(1, 2).to(dtype) for a in (q, k, v))  # (B, T, H, h)
    return _flash_attn_func()(q, k, v).flatten(2)


if importlib.util.find_spec("flash_attn") is not None:
    register("attention", "cuda")(flash_attention)
