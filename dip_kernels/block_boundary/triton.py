"""Op A's Triton kernels and their launchers (docs/kernels.md §1, op A): the adaLN block boundary in one pass forward
and one pass backward. The custom ops, checks and autograd are in ``op.py``; these only launch.

Forward, per row (token) of x (B·T, D):
    r = residual + gate[b]·branch           (rounded once to the residual dtype and stored)
    n = Norm(r)                             (RMSNorm: r·rstd; LayerNorm without affine: (r − mean)·rstd)
    h = n·weight·(1 + scale[b]) + shift[b]  (stored in the activation dtype: bf16 under bf16 autocast)
mean/rstd are saved in fp32. Without a residual (the first block) r is the input x.

Backward recomputes n from the stored r and rstd. Per-sample sums over tokens (dshift, dscale, dgate) and the
sum over all rows (dweight) are fp32 per-program partials over a (sample, token-chunk) grid, summed in a
deterministic second pass by the caller: no atomics.
"""
from __future__ import annotations

import triton
import triton.language as tl

from ..checks import block_size, device_guard, rows_per_program
from ..triton_support import cast_to


@triton.jit
def _fwd_kernel(x_ptr, br_ptr, gate_ptr, w_ptr, shift_ptr, scale_ptr, r_ptr, h_ptr, mean_ptr, rstd_ptr,
                M, T, D, s_gate, s_shift, s_scale, eps,
                HAS_RES: tl.constexpr, HAS_W: tl.constexpr, LAYER: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64 offsets (docs/kernels.md §3)
    cols = tl.arange(0, BLOCK_D)
    rmask, cmask = rows < M, cols < D
    mask = rmask[:, None] & cmask[None, :]
    offs = rows[:, None] * D + cols[None, :]
    sample = rows // T
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_RES:
        br = tl.load(br_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        g = tl.load(gate_ptr + sample[:, None] * s_gate + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        r = cast_to(x + g * br, r_ptr.dtype.element_ty)
        tl.store(r_ptr + offs, r, mask=mask)
        x = r.to(tl.float32)
    if LAYER:
        mean = tl.sum(x, axis=1) / D
        xc = tl.where(mask, x - mean[:, None], 0.0)
        rstd = tl.math.rsqrt(tl.sum(xc * xc, axis=1) / D + eps)
        n = xc * rstd[:, None]
        tl.store(mean_ptr + rows, mean, mask=rmask)
    else:
        rstd = tl.math.rsqrt(tl.sum(x * x, axis=1) / D + eps)
        n = x * rstd[:, None]
    tl.store(rstd_ptr + rows, rstd, mask=rmask)
    if HAS_W:
        n = n * tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    sc = tl.load(scale_ptr + sample[:, None] * s_scale + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sh = tl.load(shift_ptr + sample[:, None] * s_shift + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(h_ptr + offs, cast_to(n * (1.0 + sc) + sh, h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(dh_ptr, dr_ptr, r_ptr, br_ptr, gate_ptr, w_ptr, scale_ptr, mean_ptr, rstd_ptr,
                dx_ptr, dbr_ptr, p_gate_ptr, p_shift_ptr, p_scale_ptr, p_w_ptr,
                T, D, CHUNK, s_gate, s_scale,
                HAS_RES: tl.constexpr, HAS_DR: tl.constexpr, HAS_W: tl.constexpr, LAYER: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < D
    if HAS_W:
        w = tl.load(w_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
    else:
        w = tl.where(cmask, 1.0, 0.0)
    one_sc = 1.0 + tl.load(scale_ptr + b * s_scale + cols, mask=cmask, other=0.0).to(tl.float32)
    g = tl.load(gate_ptr + b * s_gate + cols, mask=cmask & (HAS_RES != 0), other=0.0).to(tl.float32)
    acc_shift = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_scale = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_gate = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_w = tl.zeros([BLOCK_D], dtype=tl.float32)
    t_end = tl.minimum(chunk * CHUNK + CHUNK, T)
    for t0 in range(chunk * CHUNK, t_end, BLOCK_M):
        tok = t0 + tl.arange(0, BLOCK_M)
        rmask = tok < t_end
        rows = b * T + tok
        mask = rmask[:, None] & cmask[None, :]
        offs = rows[:, None] * D + cols[None, :]
        dh = tl.load(dh_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(r_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + rows, mask=rmask, other=0.0)
        if LAYER:
            x = x - tl.load(mean_ptr + rows, mask=rmask, other=0.0)[:, None]
        n = tl.where(mask, x * rstd[:, None], 0.0)
        acc_shift += tl.sum(dh, axis=0)
        acc_scale += tl.sum(dh * n, axis=0)
        dy = dh * one_sc[None, :]  # gradient of n·w
        acc_w += tl.sum(dy * n, axis=0)
        dn = dy * w[None, :]
        dx = dn - n * (tl.sum(dn * n, axis=1) / D)[:, None]
        if LAYER:
            dx = dx - (tl.sum(dn, axis=1) / D)[:, None]
        dx = dx * rstd[:, None]
        if HAS_DR:
            dx += tl.load(dr_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        tl.store(dx_ptr + offs, cast_to(dx, dx_ptr.dtype.element_ty), mask=mask)
        if HAS_RES:
            br = tl.load(br_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            tl.store(dbr_ptr + offs, cast_to(dx * g[None, :], dbr_ptr.dtype.element_ty), mask=mask)
            acc_gate += tl.sum(dx * br, axis=0)
    part = (b * tl.num_programs(1) + chunk) * D + cols
    tl.store(p_shift_ptr + part, acc_shift, mask=cmask)
    tl.store(p_scale_ptr + part, acc_scale * w, mask=cmask)  # dscale = Σ dh·n·w
    if HAS_RES:
        tl.store(p_gate_ptr + part, acc_gate, mask=cmask)
    if HAS_W:
        tl.store(p_w_ptr + part, acc_w, mask=cmask)


def launch_fwd(x, branch, gate, weight, shift, scale, r, h, mean, rstd, norm, eps) -> None:
    """Forward into the caller's r (empty without a residual), h, mean (empty for RMSNorm) and rstd."""
    B, T, D = x.shape
    has_res = branch is not None
    block_d = block_size(D)
    block_m = rows_per_program(block_d)
    with device_guard(x):
        _fwd_kernel[(triton.cdiv(B * T, block_m),)](
            x, branch if has_res else x, gate if has_res else shift, weight if weight is not None else shift,
            shift, scale, r if has_res else x, h, mean if norm else rstd, rstd,
            B * T, T, D, gate.stride(0) if has_res else 0, shift.stride(0), scale.stride(0), eps,
            HAS_RES=int(has_res), HAS_W=int(weight is not None), LAYER=norm, BLOCK_M=block_m, BLOCK_D=block_d)


def launch_bwd(dh, dr, r, branch, gate, weight, scale, mean, rstd, dx, dbr, parts, chunks, norm) -> None:
    """Backward into dx, dbr and the (4, B·chunks, D) fp32 partials (gate, shift, scale, weight). Wide rows (D ≥ 1024,
    e.g. 1152) go one row per program over 8 warps: two rows over 4 warps needed 255 registers and spilled on
    sm_90 (benchmarks/tools/kernel_report.py), one row over 8 warps needs 99 and keeps two programs per SM."""
    B, T, D = r.shape
    block_d = block_size(D)
    block_m, warps = (1, 8) if block_d >= 1024 else (rows_per_program(block_d), 4)
    has_res, has_w = branch is not None, weight is not None
    with device_guard(r):
        _bwd_kernel[(B, chunks)](
            dh, dr if dr is not None else dh, r, branch if has_res else r, gate if has_res else scale,
            weight if has_w else scale, scale, mean if norm else rstd, rstd, dx, dbr if has_res else dx,
            parts[0], parts[1], parts[2], parts[3], T, D, triton.cdiv(T, chunks),
            gate.stride(0) if has_res else 0, scale.stride(0),
            HAS_RES=int(has_res), HAS_DR=int(dr is not None), HAS_W=int(has_w), LAYER=norm,
            BLOCK_M=block_m, BLOCK_D=block_d, num_warps=warps)
