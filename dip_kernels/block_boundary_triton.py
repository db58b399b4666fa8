"""Op A in Triton: the adaLN block boundary fused into one pass forward and one pass backward (kernels.md §1 A).

Forward, per row (token) of x (B·T, D):
    r = residual + gate[b]·branch           (rounded once to the residual dtype and stored)
    n = Norm(r)                             (RMSNorm: r·rstd; LayerNorm without affine: (r − mean)·rstd)
    h = n·weight·(1 + scale[b]) + shift[b]  (stored in the activation dtype: bf16 under bf16 autocast)
mean/rstd are saved in fp32. Without a residual (the first block) r is the input x.

Backward recomputes n from the stored r and rstd. Per-sample sums over tokens (dshift, dscale, dgate) and the
sum over all rows (dweight) are fp32 per-program partials over a (sample, token-chunk) grid, summed in a
deterministic second pass: no atomics.

Custom ops (functional, kernels.md §4): ``dip::block_boundary_fwd`` and ``dip::block_boundary_bwd``, each with a
fake; autograd connects them. They serve both kernel backends: ``backend`` picks these Triton kernels or their
CUDA twins (``block_boundary_cuda.py``), which keep the same buffers and reductions. Unlike the reference (which
reproduces the eager bf16 chain), the kernels round once per stored tensor.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .cuda_ext import check_device
from .registry import register
from .triton_support import (activation_dtype, block_size, cast_to, check_tensor, device_guard,
                             reduction_chunks, rows_per_program, strided_rows, sum_partials)

NORMS = {"rms": 0, "layer": 1}


@triton.jit
def _fwd_kernel(x_ptr, br_ptr, gate_ptr, w_ptr, shift_ptr, scale_ptr, r_ptr, h_ptr, mean_ptr, rstd_ptr,
                M, T, D, s_gate, s_shift, s_scale, eps,
                HAS_RES: tl.constexpr, HAS_W: tl.constexpr, LAYER: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)  # int64 offsets (kernels.md §3)
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


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0)


def _residual_dtype(x, branch, gate) -> torch.dtype:
    return torch.promote_types(torch.promote_types(x.dtype, branch.dtype), gate.dtype)


# ------------------------------------------------------------------------------------------------ custom ops
@torch.library.custom_op("dip::block_boundary_fwd", mutates_args=())
def block_boundary_fwd(x: torch.Tensor, branch: Optional[torch.Tensor], gate: Optional[torch.Tensor],
                       weight: Optional[torch.Tensor], shift: torch.Tensor, scale: torch.Tensor, norm: int,
                       eps: float, out_dtype: torch.dtype, backend: str) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  torch.Tensor, torch.Tensor]:
    """(r, h, mean, rstd); r is empty without a residual (branch None), mean is empty for RMSNorm."""
    B, T, D = x.shape
    has_res = branch is not None
    r = torch.empty_like(x, dtype=_residual_dtype(x, branch, gate)) if has_res else _empty(x)
    h = torch.empty(B, T, D, device=x.device, dtype=out_dtype)
    mean = torch.empty(B * T, device=x.device, dtype=torch.float32) if norm else _empty(x).float()
    rstd = torch.empty(B * T, device=x.device, dtype=torch.float32)
    if backend == "cuda":
        from .block_boundary_cuda import launch_fwd

        launch_fwd(x, branch, gate, weight, shift, scale, r, h, mean, rstd, norm, eps)
        return r, h, mean, rstd
    block_d = block_size(D)
    block_m = rows_per_program(block_d)
    with device_guard(x):
        _fwd_kernel[(triton.cdiv(B * T, block_m),)](
            x, branch if has_res else x, gate if has_res else shift, weight if weight is not None else shift,
            shift, scale, r if has_res else x, h, mean if norm else rstd, rstd,
            B * T, T, D, gate.stride(0) if has_res else 0, shift.stride(0), scale.stride(0), eps,
            HAS_RES=int(has_res), HAS_W=int(weight is not None), LAYER=norm, BLOCK_M=block_m, BLOCK_D=block_d)
    return r, h, mean, rstd


@block_boundary_fwd.register_fake
def _(x, branch, gate, weight, shift, scale, norm, eps, out_dtype, backend):
    B, T, D = x.shape
    r = torch.empty_like(x, dtype=_residual_dtype(x, branch, gate)) if branch is not None else _empty(x)
    mean = x.new_empty(B * T if norm else 0, dtype=torch.float32)
    return r, x.new_empty(B, T, D, dtype=out_dtype), mean, x.new_empty(B * T, dtype=torch.float32)


@torch.library.custom_op("dip::block_boundary_bwd", mutates_args=())
def block_boundary_bwd(dh: torch.Tensor, dr: Optional[torch.Tensor], r: torch.Tensor, branch: Optional[torch.Tensor],
                       gate: Optional[torch.Tensor], weight: Optional[torch.Tensor], shift: torch.Tensor,
                       scale: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor, norm: int,
                       backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                              torch.Tensor]:
    """(dx, dbranch, dgate, dweight, dshift, dscale); absent inputs get empty gradients."""
    B, T, D = r.shape
    has_res, has_w = branch is not None, weight is not None
    dx = torch.empty_like(r)
    dbr = torch.empty_like(branch) if has_res else _empty(r)
    block_d = block_size(D)
    block_m = rows_per_program(block_d)
    chunks = reduction_chunks(r, B, T, block_m)
    parts = torch.empty(4, B * chunks, D, device=r.device, dtype=torch.float32)
    if backend == "cuda":
        from .block_boundary_cuda import launch_bwd

        launch_bwd(dh, dr, r, branch, gate, weight, scale, mean, rstd, dx, dbr, parts, chunks, norm)
    else:
        _launch_bwd(dh, dr, r, branch, gate, weight, scale, mean, rstd, dx, dbr, parts, chunks, norm, block_m, block_d)
    dgate = sum_partials(parts[0], B, gate.dtype) if has_res else _empty(r)
    dw = parts[3].sum(0).to(weight.dtype) if has_w else _empty(r)
    return dx, dbr, dgate, dw, sum_partials(parts[1], B, shift.dtype), sum_partials(parts[2], B, scale.dtype)


def _launch_bwd(dh, dr, r, branch, gate, weight, scale, mean, rstd, dx, dbr, parts, chunks, norm, block_m, block_d):
    B, T, D = r.shape
    has_res, has_w = branch is not None, weight is not None
    with device_guard(r):
        _bwd_kernel[(B, chunks)](
            dh, dr if dr is not None else dh, r, branch if has_res else r, gate if has_res else scale,
            weight if has_w else scale, scale, mean if norm else rstd, rstd, dx, dbr if has_res else dx,
            parts[0], parts[1], parts[2], parts[3], T, D, triton.cdiv(T, chunks),
            gate.stride(0) if has_res else 0, scale.stride(0),
            HAS_RES=int(has_res), HAS_DR=int(dr is not None), HAS_W=int(has_w), LAYER=norm,
            BLOCK_M=block_m, BLOCK_D=block_d)


@block_boundary_bwd.register_fake
def _(dh, dr, r, branch, gate, weight, shift, scale, mean, rstd, norm, backend):
    return (torch.empty_like(r), torch.empty_like(branch) if branch is not None else _empty(r),
            torch.empty_like(gate) if gate is not None else _empty(r),
            torch.empty_like(weight) if weight is not None else _empty(r), torch.empty_like(shift),
            torch.empty_like(scale))


def _setup(ctx, inputs, output):
    x, branch, gate, weight, shift, scale, norm, eps, _, backend = inputs
    r, _, mean, rstd = output
    ctx.norm, ctx.has_res, ctx.backend = norm, branch is not None, backend
    ctx.save_for_backward(r if ctx.has_res else x, branch, gate, weight, shift, scale, mean, rstd)


def _backward(ctx, d_r, d_h, _d_mean, _d_rstd):
    r, branch, gate, weight, shift, scale, mean, rstd = ctx.saved_tensors
    same = r.dtype if ctx.backend == "cuda" else None  # the CUDA kernels take one activation dtype
    # the kernels index (B, T, D) gradients densely: any other layout autograd hands over is copied
    dr = d_r.contiguous().to(same or d_r.dtype) if ctx.has_res and d_r is not None else None
    dx, dbr, dgate, dw, dshift, dscale = block_boundary_bwd(d_h.contiguous().to(same or d_h.dtype), dr, r, branch,
                                                           gate, weight, shift, scale, mean, rstd, ctx.norm,
                                                           ctx.backend)
    return (dx, dbr if ctx.has_res else None, dgate if ctx.has_res else None, dw if weight is not None else None,
            dshift, dscale, None, None, None, None)


block_boundary_fwd.register_autograd(_backward, setup_context=_setup)


# ------------------------------------------------------------------------------------------------ entry points
def _checked_modulation(name: str, v: torch.Tensor, B: int, D: int, device) -> torch.Tensor:
    check_tensor(name, v, shape=(B, D), device=device)
    return strided_rows(v)


def run(x, branch, gate, weight, shift, scale, norm, eps, backend="triton"):
    """Check the arguments (before any launch) and call the fused op: (r or empty, h, mean, rstd)."""
    check_tensor("x" if branch is None else "residual", x, rank=3)
    B, T, D = x.shape
    if norm not in NORMS:
        raise ValueError(f"norm must be 'rms' or 'layer', got {norm!r}")
    if norm == "layer" and weight is not None:
        raise ValueError("norm='layer' is LayerNorm without affine: weight must be None")
    if weight is not None:
        check_tensor("weight", weight, shape=(D,), device=x.device)
        weight = weight.contiguous()  # the kernels read it with unit stride
    shift = _checked_modulation("shift", shift, B, D, x.device)
    scale = _checked_modulation("scale", scale, B, D, x.device)
    if branch is not None:
        check_tensor("branch", branch, shape=(B, T, D), device=x.device)
        gate = _checked_modulation("gate", gate, B, D, x.device)
        branch = branch.contiguous()
    out_dtype = activation_dtype(x, *(() if branch is None else (branch,)))
    if backend == "cuda":  # one activation dtype, fp32 weight
        check_device("x", x)
        x, branch, gate, shift, scale = (t if t is None else t.to(out_dtype) for t in (x, branch, gate, shift, scale))
        weight = weight if weight is None else weight.float()
    return block_boundary_fwd(x.contiguous(), branch, gate, weight, shift, scale, NORMS[norm], float(eps), out_dtype,
                              backend)


@register("modulated_norm", "triton")
def modulated_norm(x, weight, shift, scale, norm="rms", eps=1e-6):
    """Triton twin of ``dip_kernels.block_boundary.modulated_norm``: h = Norm(x)·(1 + scale) + shift."""
    return run(x, None, None, weight, shift, scale, norm, eps)[1]


@register("block_boundary", "triton")
def block_boundary(residual, branch, gate, weight, shift, scale, norm="rms", eps=1e-6):
    """Triton twin of ``dip_kernels.block_boundary.block_boundary``: (residual + gate·branch, modulated norm)."""
    r, h, _, _ = run(residual, branch, gate, weight, shift, scale, norm, eps)
    return r, h
