"""Op B's CUDA launchers (csrc/qk_norm_rope.cu) behind the custom ops of ``op.py``. Activations in one dtype,
fp32 norm weights (``op.py`` converts)."""
from __future__ import annotations

import torch

from ..checks import device_guard
from ..cuda_ext import DTYPE_CODES, multiprocessors, require, stream_of


def _blocks(items: int, device) -> int:
    """Enough 8-warp blocks to fill the GPU (a fixed count: the weight-gradient partials stay deterministic)."""
    sms = multiprocessors(device)
    return max(1, min((items + 7) // 8, 8 * sms))


def launch_fwd(qkv, q_weight, k_weight, cos, sin, q, k, v, eps) -> None:
    B, H, T, hd = q.shape
    with device_guard(qkv):
        require().qk_norm_rope_fwd(DTYPE_CODES[qkv.dtype], qkv.data_ptr(), q_weight.data_ptr(), k_weight.data_ptr(),
                                   cos.data_ptr(), sin.data_ptr(), q.data_ptr(), k.data_ptr(), v.data_ptr(),
                                   B * T * H, T, H, hd, eps, _blocks(B * T * H, qkv.device), stream_of(qkv))


def launch_bwd(dq, dk, dv, qkv, q_weight, k_weight, cos, sin, dqkv, eps) -> tuple:
    """Writes dqkv; returns the fp32 partials of dq_weight and dk_weight as one (2, blocks, h) view."""
    B, H, T, hd = dq.shape
    blocks = _blocks(B * T * H, qkv.device)
    parts = torch.empty(blocks, 2, hd, device=qkv.device, dtype=torch.float32)
    with device_guard(qkv):
        require().qk_norm_rope_bwd(DTYPE_CODES[qkv.dtype], dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                                   qkv.data_ptr(), q_weight.data_ptr(), k_weight.data_ptr(), cos.data_ptr(),
                                   sin.data_ptr(), dqkv.data_ptr(), parts.data_ptr(), B * T * H, T, H, hd, eps,
                                   *dq.stride()[:3], *dk.stride()[:3], *dv.stride()[:3], blocks, stream_of(qkv))
    return parts.transpose(0, 1)
