"""Op F's Triton kernels and their launchers (docs/kernels.md §1, op F): SiLU(a) ⊙ b forward and its backward, one
read and one write each. a and b are (M, H) with unit column stride and any row stride (the two halves of one
merged W1|W3 GEMM output qualify); the output and the upstream gradient are dense, da and db share a row stride.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..checks import device_guard
from ..triton_support import cast_to

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
def _bwd_kernel(g_ptr, a_ptr, b_ptr, da_ptr, db_ptr, M, H, s_a, s_b, s_d, BLOCK_M: tl.constexpr,
                BLOCK_H: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    mask = (rows < M)[:, None] & (cols < H)[None, :]
    g = tl.load(g_ptr + rows[:, None] * H + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    offs = rows[:, None] * s_d + cols[None, :]  # da and db: rows of H (separate) or halves of 2H-wide rows (merged)
    a = tl.load(a_ptr + rows[:, None] * s_a + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + rows[:, None] * s_b + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(a)
    tl.store(da_ptr + offs, cast_to(g * b * sig * (1.0 + a * (1.0 - sig)), da_ptr.dtype.element_ty), mask=mask)
    tl.store(db_ptr + offs, cast_to(g * a * sig, db_ptr.dtype.element_ty), mask=mask)


def _grid(M: int, H: int):
    return triton.cdiv(M, BLOCK_M), triton.cdiv(H, BLOCK_H)


def launch_fwd(a, b, out) -> None:
    """out (M, H) ← SiLU(a)·b."""
    M, H = a.shape
    with device_guard(a):
        _fwd_kernel[_grid(M, H)](a, b, out, M, H, a.stride(0), b.stride(0), BLOCK_M=BLOCK_M, BLOCK_H=BLOCK_H)


def launch_bwd(grad, a, b, da, db) -> None:
    """da, db (M, H) from the dense upstream gradient; da and db share one row stride (H, or 2H for the halves of
    one merged gradient)."""
    M, H = a.shape
    with device_guard(a):
        _bwd_kernel[_grid(M, H)](grad, a, b, da, db, M, H, a.stride(0), b.stride(0), da.stride(0), BLOCK_M=BLOCK_M,
                                 BLOCK_H=BLOCK_H)
