"""Op B's custom ops (docs/kernels.md §1, op B; docs/architecture.md): ``dip::qk_norm_rope_fwd`` /
``dip::qk_norm_rope_bwd`` with fakes and autograd; ``backend`` picks the launchers of ``triton.py`` or ``cuda.py``.
Arguments are checked here, before any launch."""
from __future__ import annotations

import functools

import torch

from ..checks import activation_dtype, check_tensor, split_cast
from ..cuda_ext import check_device
from ..registry import load_launchers, register

LAUNCHERS = load_launchers(__package__)


@torch.library.custom_op("dip::qk_norm_rope_fwd", mutates_args=())
def qk_norm_rope_fwd(qkv: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, cos: torch.Tensor,
                     sin: torch.Tensor, num_heads: int, eps: float, out_dtype: torch.dtype,
                     backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """qkv (B, T, 3D) → q, k, v (B, H, T, h) in ``out_dtype``."""
    B, T, three_d = qkv.shape
    hd = three_d // (3 * num_heads)
    q, k, v = (torch.empty(B, num_heads, T, hd, device=qkv.device, dtype=out_dtype) for _ in range(3))
    LAUNCHERS[backend].launch_fwd(qkv, q_weight, k_weight, cos, sin, q, k, v, eps)
    return q, k, v


@qk_norm_rope_fwd.register_fake
def _(qkv, q_weight, k_weight, cos, sin, num_heads, eps, out_dtype, backend):
    B, T, three_d = qkv.shape
    shape = (B, num_heads, T, three_d // (3 * num_heads))
    return tuple(qkv.new_empty(shape, dtype=out_dtype) for _ in range(3))


@torch.library.custom_op("dip::qk_norm_rope_bwd", mutates_args=())
def qk_norm_rope_bwd(dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, qkv: torch.Tensor,
                     q_weight: torch.Tensor, k_weight: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     eps: float, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(dqkv, [dq_weight, dk_weight] (2, h) fp32: one reduction kernel; cast in ``_backward``)."""
    dqkv = torch.empty_like(qkv)
    parts = LAUNCHERS[backend].launch_bwd(dq, dk, dv, qkv, q_weight, k_weight, cos, sin, dqkv, eps)
    return dqkv, parts.sum(1)


@qk_norm_rope_bwd.register_fake
def _(dq, dk, dv, qkv, q_weight, k_weight, cos, sin, eps, backend):
    return torch.empty_like(qkv), qkv.new_empty(2, q_weight.numel(), dtype=torch.float32)


def _setup(ctx, inputs, output):
    qkv, q_weight, k_weight, cos, sin, _, eps, _, backend = inputs
    ctx.eps, ctx.backend = eps, backend
    ctx.save_for_backward(qkv, q_weight, k_weight, cos, sin)


def _grad_layout(g: torch.Tensor) -> torch.Tensor:
    """Both backwards read (B, H, T, h) gradients with any strides but a unit last one (the attention backward may
    hand them over (B, T, H, h)-ordered); anything else is copied."""
    if g.stride(-1) == 1:
        return g
    return g.contiguous()


def _backward(ctx, dq, dk, dv):
    qkv, q_weight, k_weight, cos, sin = ctx.saved_tensors
    B, T, three_d = qkv.shape
    hd = q_weight.numel()
    shape = (B, three_d // (3 * hd), T, hd)
    dq, dk, dv = (qkv.new_zeros(shape) if g is None else _grad_layout(g.to(qkv.dtype)) for g in (dq, dk, dv))
    dqkv, dw = qk_norm_rope_bwd(dq, dk, dv, qkv, q_weight, k_weight, cos, sin, ctx.eps, ctx.backend)
    dqw, dkw = split_cast(dw, [q_weight.dtype, k_weight.dtype])
    return dqkv, dqw, dkw, None, None, None, None, None, None


qk_norm_rope_fwd.register_autograd(_backward, setup_context=_setup)


def qk_norm_rope(qkv, q_weight, k_weight, cos, sin, num_heads, eps=1e-6, *, backend):
    """Kernel twin of ``reference.qk_norm_rope``: q, k, v (B, H, T, h) from qkv (B, T, 3D), arguments checked
    before any launch."""
    check_tensor("qkv", qkv, rank=3)
    B, T, three_d = qkv.shape
    if three_d % (3 * num_heads):
        raise ValueError(f"qkv's last dim must be 3·num_heads·head_dim = multiple of {3 * num_heads}, got {three_d}")
    hd = three_d // (3 * num_heads)
    if hd % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {hd}")
    check_tensor("q_weight", q_weight, shape=(hd,), device=qkv.device)
    check_tensor("k_weight", k_weight, shape=(hd,), device=qkv.device)
    for name, table in (("cos", cos), ("sin", sin)):
        check_tensor(name, table, shape=(T, hd // 2), device=qkv.device)
    out_dtype = activation_dtype(qkv)
    if backend == "cuda":  # activations in the output dtype, fp32 weights
        check_device("qkv", qkv)
        qkv, q_weight, k_weight = qkv.to(out_dtype), q_weight.float(), k_weight.float()
    return qk_norm_rope_fwd(qkv.contiguous(), q_weight.contiguous(), k_weight.contiguous(), cos.float().contiguous(),
                            sin.float().contiguous(), num_heads, float(eps), out_dtype, backend)


for _backend in LAUNCHERS:
    register("qk_norm_rope", _backend)(functools.partial(qk_norm_rope, backend=_backend))
