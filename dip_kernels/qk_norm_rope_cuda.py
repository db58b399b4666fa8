"""Op B with the CUDA extension (csrc/qk_norm_rope.cu): launchers behind the custom ops of
``qk_norm_rope_triton``, registered as the ``cuda`` backend. Activations in one dtype, fp32 norm weights."""
from __future__ import annotations

import torch

from .cuda_ext import DTYPE_CODES, extension, multiprocessors, require, stream_of
from .qk_norm_rope_triton import run
from .registry import register
from .triton_support import device_guard


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


def launch_bwd(dq, dk, dv, qkv, q_weight, k_weight, cos, sin, dqkv, eps) -> torch.Tensor:
    """Writes dqkv; returns the (blocks, 2, h) fp32 weight-gradient partials."""
    B, H, T, hd = dq.shape
    blocks = _blocks(B * T * H, qkv.device)
    parts = torch.empty(blocks, 2, hd, device=qkv.device, dtype=torch.float32)
    with device_guard(qkv):
        require().qk_norm_rope_bwd(DTYPE_CODES[qkv.dtype], dq.data_ptr(), dk.data_ptr(), dv.data_ptr(),
                                   qkv.data_ptr(), q_weight.data_ptr(), k_weight.data_ptr(), cos.data_ptr(),
                                   sin.data_ptr(), dqkv.data_ptr(), parts.data_ptr(), B * T * H, T, H, hd, eps, blocks,
                                   stream_of(qkv))
    return parts


def qk_norm_rope(qkv, q_weight, k_weight, cos, sin, num_heads, eps=1e-6):
    """CUDA twin of ``dip_kernels.qk_norm_rope.qk_norm_rope``."""
    return run(qkv, q_weight, k_weight, cos, sin, num_heads, eps, backend="cuda")


if extension() is not None:
    register("qk_norm_rope", "cuda")(qk_norm_rope)
