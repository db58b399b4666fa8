"""Op F in Triton: SiLU(a) ⊙ b forward and its backward, one read and one write each (kernels.md §1 F).

a and b are (..., H) with a unit last stride and any row stride (so they may be the two halves of one merged
W1/W3 GEMM output). Custom ops ``dip::swiglu_fwd`` / ``dip::swiglu_bwd`` with fakes.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .registry import register
from .triton_support import activation_dtype, cast_to, check_tensor, device_guard, strided_rows

BLOCK_M, BLOCK_H = 8, 256


@triton.jit
def _fwd_kernel(a_ptr, b_ptr, out_ptr, M, H, s_a, s_b, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (rows < M)[:, None] & (cols < H)[None, :]
    a = tl.load(a_ptr + rows[:, None] * s_a + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + rows[:, None] * s_b + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    out = a * tl.sigmoid(a) * b
    tl.store(out_ptr + rows[:, None] * H + cols[None, :], cast_to(out, out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(g_ptr, a_ptr, b_ptr, da_ptr, db_ptr, M, H, s_a, s_b, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (rows < M)[:, None] & (cols < H)[None, :]
    offs = rows[:, None] * H + cols[None, :]
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + rows[:, None] * s_a + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + rows[:, None] * s_b + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(a)
    tl.store(da_ptr + offs, cast_to(g * b * sig * (1.0 + a * (1.0 - sig)), da_ptr.dtype.element_ty), mask=mask)
    tl.store(db_ptr + offs, cast_to(g * a * sig, db_ptr.dtype.element_ty), mask=mask)


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(..., H) → an (M, H) view with unit last stride and one row stride (a dense copy when no such view exists)."""
    try:
        return strided_rows(t.view(-1, t.shape[-1]))
    except RuntimeError:  # the leading dims do not collapse into one row stride
        return t.contiguous().view(-1, t.shape[-1])


def _grid(M: int, H: int):
    return triton.cdiv(M, BLOCK_M), triton.cdiv(H, BLOCK_H)


@torch.library.custom_op("dip::swiglu_fwd", mutates_args=())
def swiglu_fwd(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """SiLU(a)·b of (M, H) row-strided a, b → contiguous (M, H) in ``out_dtype``."""
    M, H = a.shape
    out = torch.empty(M, H, device=a.device, dtype=out_dtype)
    with device_guard(a):
        _fwd_kernel[_grid(M, H)](a, b, out, M, H, a.stride(0), b.stride(0), BLOCK_M=BLOCK_M, BLOCK_H=BLOCK_H)
    return out


@swiglu_fwd.register_fake
def _(a, b, out_dtype):
    return a.new_empty(a.shape, dtype=out_dtype)


@torch.library.custom_op("dip::swiglu_bwd", mutates_args=())
def swiglu_bwd(grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(da, db), contiguous, in the dtypes of a and b."""
    M, H = a.shape
    da = torch.empty(M, H, device=a.device, dtype=a.dtype)
    db = torch.empty(M, H, device=a.device, dtype=b.dtype)
    with device_guard(a):
        _bwd_kernel[_grid(M, H)](grad, a, b, da, db, M, H, a.stride(0), b.stride(0), BLOCK_M=BLOCK_M,
                                 BLOCK_H=BLOCK_H)
    return da, db


@swiglu_bwd.register_fake
def _(grad, a, b):
    return a.new_empty(a.shape), b.new_empty(b.shape)


def _setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0], inputs[1])


def _backward(ctx, grad):
    a, b = ctx.saved_tensors
    return (*swiglu_bwd(grad.contiguous(), a, b), None)  # the kernel indexes the gradient densely


swiglu_fwd.register_autograd(_backward, setup_context=_setup)


@register("swiglu", "triton")
def swiglu(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Triton twin of ``dip_kernels.swiglu.swiglu``: SiLU(a) ⊙ b for a, b (..., H)."""
    check_tensor("a", a)
    check_tensor("b", b, shape=a.shape, device=a.device)
    return swiglu_fwd(_rows(a), _rows(b), activation_dtype(a, b)).view(a.shape)
