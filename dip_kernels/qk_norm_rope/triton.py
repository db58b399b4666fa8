"""Op B's Triton kernels and their launchers (docs/kernels.md §1, op B): QK RMSNorm and 2D RoPE from the qkv
projection, written straight into (B, H, T, h). One read of qkv and one write of q, k, v forward; backward reads
the gradients and qkv once, writes dqkv once, and reduces the two norm weights' gradients through fp32
per-program partials (summed deterministically by the caller).

A program handles BLOCK_T tokens of one head; it loads each row's h values contiguously (16-byte accesses: the
head dim is a constexpr, so the compiler can prove the alignment) and splits the rotated pairs (2i, 2i+1) in
registers.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..checks import block_size, device_guard
from ..triton_support import cast_to

BLOCK_T = 16


@triton.jit
def _offsets(M, T, H, HD: tl.constexpr, head, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_T + tl.arange(0, BLOCK_T)  # token rows b·T + t
    cols = tl.arange(0, BLOCK_H)  # a head's h values, contiguous (pairs (2i, 2i+1) are split in registers)
    mask = (rows < M)[:, None] & (cols < HD)[None, :]
    tok = rows % T
    out_row = ((rows // T) * H + head) * T + tok  # row of the (B, H, T, h) outputs
    return rows, cols, mask, tok, out_row


@triton.jit
def _pairs(x, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    """(BLOCK_T, BLOCK_H) → its even and odd columns, each (BLOCK_T, BLOCK_H / 2)."""
    return tl.split(tl.reshape(x, (BLOCK_T, BLOCK_H // 2, 2)))


@triton.jit
def _interleave(a, b, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    """The inverse of ``_pairs``."""
    return tl.reshape(tl.join(a, b), (BLOCK_T, BLOCK_H))


@triton.jit
def _rope_table(ptr, tok, HD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    """cos or sin of each (token, pair), (BLOCK_T, BLOCK_H / 2) fp32."""
    pairs = tl.arange(0, BLOCK_H // 2)
    return tl.load(ptr + tok[:, None] * (HD // 2) + pairs[None, :], mask=(pairs < HD // 2)[None, :], other=0.0)


@triton.jit
def _weight_pairs(w_ptr, HD: tl.constexpr, BLOCK_H: tl.constexpr):
    cols = tl.arange(0, BLOCK_H)
    w = tl.reshape(tl.load(w_ptr + cols, mask=cols < HD, other=0.0).to(tl.float32), (1, BLOCK_H // 2, 2))
    return tl.split(w)


@triton.jit
def _fwd_part(src, dst, w_ptr, c, s, mask, HD: tl.constexpr, eps, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    x = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.math.rsqrt(tl.sum(x * x, axis=1) / HD + eps)[:, None]
    x0, x1 = _pairs(x, BLOCK_T, BLOCK_H)
    w0, w1 = _weight_pairs(w_ptr, HD, BLOCK_H)
    n0, n1 = x0 * rstd * w0, x1 * rstd * w1
    out = _interleave(n0 * c - n1 * s, n0 * s + n1 * c, BLOCK_T, BLOCK_H)
    tl.store(dst, cast_to(out, dst.dtype.element_ty), mask=mask)


@triton.jit
def _fwd_kernel(qkv_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, v_ptr, M, T, H, HD: tl.constexpr, eps,
                BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    head = tl.program_id(1)
    rows, cols, mask, tok, out_row = _offsets(M, T, H, HD, head, BLOCK_T, BLOCK_H)
    D = H * HD
    src = qkv_ptr + rows[:, None] * (3 * D) + head * HD + cols[None, :]
    dst = out_row[:, None] * HD + cols[None, :]
    c = _rope_table(cos_ptr, tok, HD, BLOCK_T, BLOCK_H)
    s = _rope_table(sin_ptr, tok, HD, BLOCK_T, BLOCK_H)
    _fwd_part(src, q_ptr + dst, qw_ptr, c, s, mask, HD, eps, BLOCK_T, BLOCK_H)
    _fwd_part(src + D, k_ptr + dst, kw_ptr, c, s, mask, HD, eps, BLOCK_T, BLOCK_H)
    v = tl.load(src + 2 * D, mask=mask, other=0.0)
    tl.store(v_ptr + dst, cast_to(v, v_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_part(src, grad, dsrc, w_ptr, pw_ptr, c, s, mask, HD: tl.constexpr, eps, BLOCK_T: tl.constexpr,
              BLOCK_H: tl.constexpr):
    x = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.math.rsqrt(tl.sum(x * x, axis=1) / HD + eps)[:, None]
    x0, x1 = _pairs(x * rstd, BLOCK_T, BLOCK_H)
    g0, g1 = _pairs(tl.load(grad, mask=mask, other=0.0).to(tl.float32), BLOCK_T, BLOCK_H)
    dn0 = g0 * c + g1 * s  # inverse rotation
    dn1 = g1 * c - g0 * s
    cols = tl.arange(0, BLOCK_H)
    dw = _interleave(dn0 * x0, dn1 * x1, BLOCK_T, BLOCK_H)
    tl.store(pw_ptr + cols, tl.sum(dw, axis=0), mask=cols < HD)
    w0, w1 = _weight_pairs(w_ptr, HD, BLOCK_H)
    dn0, dn1 = dn0 * w0, dn1 * w1
    proj = ((tl.sum(dn0 * x0, axis=1) + tl.sum(dn1 * x1, axis=1)) / HD)[:, None]
    dx = _interleave((dn0 - x0 * proj) * rstd, (dn1 - x1 * proj) * rstd, BLOCK_T, BLOCK_H)
    tl.store(dsrc, cast_to(dx, dsrc.dtype.element_ty), mask=mask)


@triton.jit
def _grad_offsets(rows, cols, head, T, s_b, s_h, s_t, UNIT: tl.constexpr):
    """Offsets of a (B, H, T, h) gradient with strides UNIT·(s_b, s_h, s_t) and 1: passed in units of 8 elements
    when they all divide, so the compiler sees 16-byte-aligned rows (the attention backward may hand over
    (B, T, H, h)-ordered gradients)."""
    return ((rows // T) * (s_b * UNIT) + head * (s_h * UNIT) + (rows % T) * (s_t * UNIT))[:, None] + cols[None, :]


@triton.jit
def _bwd_kernel(dq_ptr, dk_ptr, dv_ptr, qkv_ptr, qw_ptr, kw_ptr, cos_ptr, sin_ptr, dqkv_ptr, pw_ptr,
                M, T, H, HD: tl.constexpr, eps, s_qb, s_qh, s_qt, s_kb, s_kh, s_kt, s_vb, s_vh, s_vt,
                UNIT: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_H: tl.constexpr):
    head = tl.program_id(1)
    rows, cols, mask, tok, _ = _offsets(M, T, H, HD, head, BLOCK_T, BLOCK_H)
    D = H * HD
    in_offs = rows[:, None] * (3 * D) + head * HD + cols[None, :]
    c = _rope_table(cos_ptr, tok, HD, BLOCK_T, BLOCK_H)
    s = _rope_table(sin_ptr, tok, HD, BLOCK_T, BLOCK_H)
    part = (tl.program_id(0).to(tl.int64) * H + head) * HD
    n_parts = tl.num_programs(0).to(tl.int64) * H * HD
    _bwd_part(qkv_ptr + in_offs, dq_ptr + _grad_offsets(rows, cols, head, T, s_qb, s_qh, s_qt, UNIT),
              dqkv_ptr + in_offs, qw_ptr, pw_ptr + part, c, s, mask, HD, eps, BLOCK_T, BLOCK_H)
    _bwd_part(qkv_ptr + in_offs + D, dk_ptr + _grad_offsets(rows, cols, head, T, s_kb, s_kh, s_kt, UNIT),
              dqkv_ptr + in_offs + D, kw_ptr, pw_ptr + n_parts + part, c, s, mask, HD, eps, BLOCK_T, BLOCK_H)
    dv = tl.load(dv_ptr + _grad_offsets(rows, cols, head, T, s_vb, s_vh, s_vt, UNIT), mask=mask, other=0.0)
    tl.store(dqkv_ptr + in_offs + 2 * D, cast_to(dv, dqkv_ptr.dtype.element_ty), mask=mask)


def _grid(M: int, H: int):
    return triton.cdiv(M, BLOCK_T), H


def launch_fwd(qkv, q_weight, k_weight, cos, sin, q, k, v, eps) -> None:
    """q, k, v (B, H, T, h) ← qkv (B, T, 3D)."""
    B, H, T, hd = q.shape
    with device_guard(qkv):
        _fwd_kernel[_grid(B * T, H)](qkv, q_weight, k_weight, cos, sin, q, k, v, B * T, T, H, hd, eps,
                                     BLOCK_T=BLOCK_T, BLOCK_H=block_size(hd))


def _grad_strides(*grads) -> tuple:
    """The (B, H, T) strides of every gradient, in units of 8 elements when they all divide (else 1), and the unit."""
    unit = 8 if all(st % 8 == 0 for g in grads for st in g.stride()[:3]) else 1
    return (*(st // unit for g in grads for st in g.stride()[:3]), unit)


def launch_bwd(dq, dk, dv, qkv, q_weight, k_weight, cos, sin, dqkv, eps) -> tuple:
    """Writes dqkv; returns the fp32 partials of dq_weight and dk_weight as one (2, programs, h) tensor. dq, dk, dv:
    (B, H, T, h) with unit last stride, any other strides."""
    B, H, T, hd = dq.shape
    parts = torch.empty(2, triton.cdiv(B * T, BLOCK_T) * H, hd, device=qkv.device, dtype=torch.float32)
    with device_guard(qkv):
        _bwd_kernel[_grid(B * T, H)](dq, dk, dv, qkv, q_weight, k_weight, cos, sin, dqkv, parts, B * T, T, H, hd,
                                     eps, *_grad_strides(dq, dk, dv), BLOCK_T=BLOCK_T,
                                     BLOCK_H=block_size(hd))
    return parts
