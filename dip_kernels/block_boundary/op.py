"""Op A's custom ops (docs/kernels.md §1, op A; docs/architecture.md): ``dip::block_boundary_fwd`` and
``dip::block_boundary_bwd``, functional, each with a fake; autograd connects them. ``backend`` picks the launchers
(``triton.py`` or ``cuda.py``, which keep the same buffers and reductions). Arguments are checked here, before any
launch. Unlike the reference (which reproduces the eager bf16 chain), the kernels round once per stored tensor.
"""
from __future__ import annotations

import functools
from typing import Optional

import torch

from ..checks import (activation_dtype, block_size, check_tensor, reduction_chunks, rows_per_program, split_cast,
                       strided_rows, sum_partials)
from ..cuda_ext import check_device
from ..registry import load_launchers, register

NORMS = {"rms": 0, "layer": 1}
LAUNCHERS = load_launchers(__package__)


def _empty(like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(0)


def _residual_dtype(x, branch, gate) -> torch.dtype:
    return torch.promote_types(torch.promote_types(x.dtype, branch.dtype), gate.dtype)


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
    LAUNCHERS[backend].launch_fwd(x, branch, gate, weight, shift, scale, r, h, mean, rstd, norm, eps)
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
                       backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dbranch, [dgate, dshift, dscale] (3, B, D) fp32, dweight (D,) fp32); absent inputs get empty
    gradients (the casts happen in ``_backward``: one kernel for the three modulation gradients)."""
    B, T, D = r.shape
    has_res, has_w = branch is not None, weight is not None
    dx = torch.empty_like(r)
    dbr = torch.empty_like(branch) if has_res else _empty(r)
    chunks = reduction_chunks(r, B, T, rows_per_program(block_size(D)))
    parts = torch.empty(4, B * chunks, D, device=r.device, dtype=torch.float32)
    LAUNCHERS[backend].launch_bwd(dh, dr, r, branch, gate, weight, scale, mean, rstd, dx, dbr, parts, chunks, norm)
    return dx, dbr, sum_partials(parts[:3], B), parts[3].sum(0) if has_w else _empty(r).float()


@block_boundary_bwd.register_fake
def _(dh, dr, r, branch, gate, weight, shift, scale, mean, rstd, norm, backend):
    B, _, D = r.shape
    return (torch.empty_like(r), torch.empty_like(branch) if branch is not None else _empty(r),
            r.new_empty(3, B, D, dtype=torch.float32),
            r.new_empty(D, dtype=torch.float32) if weight is not None else _empty(r).float())


def _setup(ctx, inputs, output):
    x, branch, gate, weight, shift, scale, norm, eps, _, backend = inputs
    r, _, mean, rstd = output
    ctx.norm, ctx.has_res, ctx.backend = norm, branch is not None, backend
    ctx.save_for_backward(r if ctx.has_res else x, branch, gate, weight, shift, scale, mean, rstd)
    ctx.mark_non_differentiable(mean, rstd)
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the statistics (or an unused residual output)


def _backward(ctx, d_r, d_h, _d_mean, _d_rstd):
    r, branch, gate, weight, shift, scale, mean, rstd = ctx.saved_tensors
    if d_h is None:  # the normalised output unused (never in DiP): its gradient is zero
        d_h = torch.zeros_like(r)
    same = r.dtype if ctx.backend == "cuda" else None  # the CUDA kernels take one activation dtype
    # the kernels index (B, T, D) gradients densely: any other layout autograd hands over is copied
    dr = d_r.contiguous().to(same or d_r.dtype) if ctx.has_res and d_r is not None else None
    dx, dbr, d_mod, dw = block_boundary_bwd(d_h.contiguous().to(same or d_h.dtype), dr, r, branch, gate, weight,
                                            shift, scale, mean, rstd, ctx.norm, ctx.backend)
    if ctx.has_res:
        dgate, dshift, dscale = split_cast(d_mod, [gate.dtype, shift.dtype, scale.dtype])
    else:
        dgate, (dshift, dscale) = None, split_cast(d_mod[1:], [shift.dtype, scale.dtype])
    return (dx, dbr if ctx.has_res else None, dgate, dw.to(weight.dtype) if weight is not None else None,
            dshift, dscale, None, None, None, None)


block_boundary_fwd.register_autograd(_backward, setup_context=_setup)


# ------------------------------------------------------------------------------------------------ entry points
def _checked_modulation(name: str, v: torch.Tensor, B: int, D: int, device) -> torch.Tensor:
    check_tensor(name, v, shape=(B, D), device=device)
    return strided_rows(v)


def run(x, branch, gate, weight, shift, scale, norm, eps, backend):
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


def modulated_norm(x, weight, shift, scale, norm="rms", eps=1e-6, *, backend):
    """Kernel twin of ``reference.modulated_norm``: h = Norm(x)·(1 + scale) + shift."""
    return run(x, None, None, weight, shift, scale, norm, eps, backend)[1]


def block_boundary(residual, branch, gate, weight, shift, scale, norm="rms", eps=1e-6, *, backend):
    """Kernel twin of ``reference.block_boundary``: (residual + gate·branch, modulated norm)."""
    r, h, _, _ = run(residual, branch, gate, weight, shift, scale, norm, eps, backend)
    return r, h


for _backend in LAUNCHERS:
    register("modulated_norm", _backend)(functools.partial(modulated_norm, backend=_backend))
    register("block_boundary", _backend)(functools.partial(block_boundary, backend=_backend))
