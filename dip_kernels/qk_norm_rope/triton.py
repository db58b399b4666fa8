"""Op B's Triton kernels and their launchers (docs/kernels.md §1, op B): QK RMSNorm and 2D RoPE from the qkv
projection, written straight into (B, H, T, h). One read of qkv and one write of q, k, v forward; backward reads
the gradients and qkv once, writes dqkv once, and reduces the two norm weights' gradients through fp32
per-program partials (summed deterministically by the caller).

A program handles BLOCK_T tokens of one head; a head's h values are split into the even and odd members of the
rotated pairs (2i, 2i+1).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..checks import block_size, device_guard
from ..triton_support import cast_to

BLOCK_T = 16


@triton.jit
def _pair_offsets(M, T, HD, H, head, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)  # token rows b·T + t
    pairs = tl.arange(0, BLOCK_P)
    mask = (rows < M)[:, None] & (pairs < HD // 2)[None, :]
    tok = rows % T
    out_row = ((rows // T) * H + head) * T + tok  # row of the (B, H, T, h) outputs
    return rows, pairs, mask, tok, out_row


@triton.jit
def _fwd_part(src, dst, w_ptr, c, s, mask, pairs, HD, eps):
    x0 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x1 = tl.load(src + 1, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.math.rsqrt((tl.sum(x0 * x0, axis=1) + tl.sum(x1 * x1, axis=1)) / HD + eps)[:, None]
    pmask = pairs < HD // 2
    n0 = x0 * rstd * tl.load(w_ptr + 2 * pairs, mask=pmask, other=0.0).to(tl.float32)[None, :]
    n1 = x1 * rstd * tl.load(w_ptr + 2 * pairs + 1, mask=pmask, other=0.0).to(tl.float32)[None, :]
    tl.store(dst, cast_to(n0 * c - n1 * s, dst.dtype.element_ty), mask=mask)
    tl.store(dst + 1, cast_to(n0 * s + n1 * c, dst.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_kernel(qkv_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, M, T, H, HD, eps,
                BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr):
    head = tl.program_id(1)
    rows, pairs, mask, tok, out_row = _pair_offsets(M, T, HD, H, head, BLOCK_T, BLOCK_P)
    D = H * HD
    src = qkv_ptr + rows[:, None] * (3 * D) + head * HD + 2 * pairs[None, :]
    dst = out_row[:, None] * HD + 2 * pairs[None, :]
    c = tl.load(cos_ptr + tok[:, None] * (HD // 2) + pairs[None, :], mask=mask, other=0.0)
    s = tl.load(sin_ptr + tok[:, None] * (HD // 2) + pairs[None, :], mask=mask, other=0.0)
    _fwd_part(src, q_ptr + dst, qw_ptr, c, s, mask, pairs, HD, eps)
    _fwd_part(src + D, k_ptr + dst, kw_ptr, c, s, mask, pairs, HD, eps)
    for odd in range(2):
        v = tl.load(src + 2 * D + odd, mask=mask, other=0.0)
        tl.store(v_ptr + dst + odd, cast_to(v, v_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_part(src, grad, dsrc, w_ptr, pw_ptr, c, s, mask, pairs, HD, eps):
    x0 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x1 = tl.load(src + 1, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.math.rsqrt((tl.sum(x0 * x0, axis=1) + tl.sum(x1 * x1, axis=1)) / HD + eps)[:, None]
    x0, x1 = x0 * rstd, x1 * rstd
    g0 = tl.load(grad, mask=mask, other=0.0).to(tl.float32)
    g1 = tl.load(grad + 1, mask=mask, other=0.0).to(tl.float32)
    dn0 = g0 * c + g1 * s  # inverse rotation
    dn1 = g1 * c - g0 * s
    pmask = pairs < HD // 2
    tl.store(pw_ptr + 2 * pairs, tl.sum(dn0 * x0, axis=0), mask=pmask)
    tl.store(pw_ptr + 2 * pairs + 1, tl.sum(dn1 * x1, axis=0), mask=pmask)
    dn0 = dn0 * tl.load(w_ptr + 2 * pairs, mask=pmask, other=0.0).to(tl.float32)[None, :]
    dn1 = dn1 * tl.load(w_ptr + 2 * pairs + 1, mask=pmask, other=0.0).to(tl.float32)[None, :]
    proj = ((tl.sum(dn0 * x0, axis=1) + tl.sum(dn1 * x1, axis=1)) / HD)[:, None]
    tl.store(dsrc, cast_to((dn0 - x0 * proj) * rstd, dsrc.dtype.element_ty), mask=mask)
    tl.store(dsrc + 1, cast_to((dn1 - x1 * proj) * rstd, dsrc.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(dq_ptr, dk_ptr, dv_ptr, qkv_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr, dqkv_ptr, pw_ptr,
                M, T, H, HD, eps, BLOCK_T: tl.constexpr, BLOCK_P: tl.constexpr):
    head = tl.program_id(1)
    rows, pairs, mask, tok, out_row = _pair_offsets(M, T, HD, H, head, BLOCK_T, BLOCK_P)
    D = H * HD
    in_offs = rows[:, None] * (3 * D) + head * HD + 2 * pairs[None, :]
    grad = out_row[:, None] * HD + 2 * pairs[None, :]
    c = tl.load(cos_ptr + tok[:, None] * (HD // 2) + pairs[None, :], mask=mask, other=0.0)
    s = tl.load(sin_ptr + tok[:, None] * (HD // 2) + pairs[None, :], mask=mask, other=0.0)
    part = (tl.program_id(0).to(tl.int64) * H + head) * HD
    n_parts = tl.num_programs(0).to(tl.int64) * H * HD
    _bwd_part(qkv_ptr + in_offs, dq_ptr + grad, dqkv_ptr + in_offs, qw_ptr, pw_ptr + part, c, s, mask, pairs, HD,
              eps)
    _bwd_part(qkv_ptr + in_offs + D, dk_ptr + grad, dqkv_ptr + in_offs + D, kw_ptr, pw_ptr + n_parts + part, c, s,
              mask, pairs, HD, eps)
    for odd in range(2):
        dv = tl.load(dv_ptr + grad + odd, mask=mask, other=0.0)
        tl.store(dqkv_ptr + in_offs + 2 * D + odd, cast_to(dv, dqkv_ptr.dtype.element_ty), mask=mask)


def _grid(M: int, H: int):
    return triton.cdiv(M, BLOCK_T), H


def launch_fwd(qkv, q_weight, k_weight, cos, sin, q, k, v, eps) -> None:
    """q, k, v (B, H, T, h) ← qkv (B, T, 3D)."""
    B, H, T, hd = q.shape
    with device_guard(qkv):
        _fwd_kernel[_grid(B * T, H)](qkv, q_weight, k_weight, cos, sin, q, k, v, B * T, T, H, hd, eps,
                                     BLOCK_T=BLOCK_T, BLOCK_P=block_size(hd // 2))


def launch_bwd(dq, dk, dv, qkv, q_weight, k_weight, cos, sin, dqkv, eps) -> tuple:
    """Writes dqkv; returns the fp32 partials of dq_weight and dk_weight, each (programs, h)."""
    B, H, T, hd = dq.shape
    parts = torch.empty(2, triton.cdiv(B * T, BLOCK_T) * H, hd, device=qkv.device, dtype=torch.float32)
    with device_guard(qkv):
        _bwd_kernel[_grid(B * T, H)](dq, dk, dv, qkv, q_weight, k_weight, cos, sin, dqkv, parts, B * T, T, H, hd,
                                     eps, BLOCK_T=BLOCK_T, BLOCK_P=block_size(hd // 2))
    return parts[0], parts[1]
