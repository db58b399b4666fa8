"""Op C in Triton: s = SiLU(residual + gate[b]·branch + t_emb[b]) in one pass, backward in one pass plus the
deterministic second pass of the per-sample sums (dgate, dt_emb) (kernels.md §1 C, §2).

Custom ops ``dip::final_context_fwd`` / ``dip::final_context_bwd`` with fakes; nothing but s is stored: the
backward recomputes the pre-activation from the inputs. ``backend`` picks these Triton kernels or their CUDA
twins (``final_context_cuda.py``), which keep the same buffers and reductions.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .cuda_ext import check_device
from .registry import register
from .triton_support import (activation_dtype, block_size, cast_to, check_tensor, device_guard,
                             reduction_chunks, rows_per_program, strided_rows, sum_partials)


@triton.jit
def _fwd_kernel(x_ptr, br_ptr, gate_ptr, temb_ptr, s_ptr, M, T, D, s_gate, s_temb,
                BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    rows = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_D)
    mask = (rows < M)[:, None] & (cols < D)[None, :]
    offs = rows[:, None] * D + cols[None, :]
    sample = (rows // T)[:, None]
    z = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z += tl.load(gate_ptr + sample * s_gate + cols[None, :], mask=mask, other=0.0).to(tl.float32) * \
        tl.load(br_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    z += tl.load(temb_ptr + sample * s_temb + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    tl.store(s_ptr + offs, cast_to(z * tl.sigmoid(z), s_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _bwd_kernel(ds_ptr, x_ptr, br_ptr, gate_ptr, temb_ptr, dx_ptr, dbr_ptr, p_gate_ptr, p_temb_ptr,
                T, D, CHUNK, s_gate, s_temb, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    chunk = tl.program_id(1)
    cols = tl.arange(0, BLOCK_D)
    cmask = cols < D
    g = tl.load(gate_ptr + b * s_gate + cols, mask=cmask, other=0.0).to(tl.float32)
    temb = tl.load(temb_ptr + b * s_temb + cols, mask=cmask, other=0.0).to(tl.float32)
    acc_gate = tl.zeros([BLOCK_D], dtype=tl.float32)
    acc_temb = tl.zeros([BLOCK_D], dtype=tl.float32)
    t_end = tl.minimum(chunk * CHUNK + CHUNK, T)
    for t0 in range(chunk * CHUNK, t_end, BLOCK_M):
        tok = t0 + tl.arange(0, BLOCK_M)
        rows = b * T + tok
        mask = (tok < t_end)[:, None] & cmask[None, :]
        offs = rows[:, None] * D + cols[None, :]
        br = tl.load(br_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        z = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) + g[None, :] * br + temb[None, :]
        sig = tl.sigmoid(z)
        dz = tl.load(ds_ptr + offs, mask=mask, other=0.0).to(tl.float32) * sig * (1.0 + z * (1.0 - sig))
        dz = tl.where(mask, dz, 0.0)
        tl.store(dx_ptr + offs, cast_to(dz, dx_ptr.dtype.element_ty), mask=mask)
        tl.store(dbr_ptr + offs, cast_to(dz * g[None, :], dbr_ptr.dtype.element_ty), mask=mask)
        acc_gate += tl.sum(dz * br, axis=0)
        acc_temb += tl.sum(dz, axis=0)
    part = (b * tl.num_programs(1) + chunk) * D + cols
    tl.store(p_gate_ptr + part, acc_gate, mask=cmask)
    tl.store(p_temb_ptr + part, acc_temb, mask=cmask)


@torch.library.custom_op("dip::final_context_fwd", mutates_args=())
def final_context_fwd(x: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor, t_emb: torch.Tensor,
                      out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    """s (B, T, D) in ``out_dtype``."""
    B, T, D = x.shape
    s = torch.empty(B, T, D, device=x.device, dtype=out_dtype)
    if backend == "cuda":
        from .final_context_cuda import launch_fwd

        launch_fwd(x, branch, gate, t_emb, s)
        return s
    block_d = block_size(D)
    block_m = rows_per_program(block_d)
    with device_guard(x):
        _fwd_kernel[(triton.cdiv(B * T, block_m),)](x, branch, gate, t_emb, s, B * T, T, D, gate.stride(0),
                                                    t_emb.stride(0), BLOCK_M=block_m, BLOCK_D=block_d)
    return s


@final_context_fwd.register_fake
def _(x, branch, gate, t_emb, out_dtype, backend):
    return x.new_empty(x.shape, dtype=out_dtype)


@torch.library.custom_op("dip::final_context_bwd", mutates_args=())
def final_context_bwd(ds: torch.Tensor, x: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor,
                      t_emb: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor,
                                                                  torch.Tensor]:
    """(dx, dbranch, dgate, dt_emb)."""
    B, T, D = x.shape
    dx, dbr = torch.empty_like(x), torch.empty_like(branch)
    block_d = block_size(D)
    block_m = rows_per_program(block_d)
    chunks = reduction_chunks(x, B, T, block_m)
    parts = torch.empty(2, B * chunks, D, device=x.device, dtype=torch.float32)
    if backend == "cuda":
        from .final_context_cuda import launch_bwd

        launch_bwd(ds, x, branch, gate, t_emb, dx, dbr, parts, chunks)
        return dx, dbr, sum_partials(parts[0], B, gate.dtype), sum_partials(parts[1], B, t_emb.dtype)
    with device_guard(x):
        _bwd_kernel[(B, chunks)](ds, x, branch, gate, t_emb, dx, dbr, parts[0], parts[1], T, D,
                                 triton.cdiv(T, chunks), gate.stride(0), t_emb.stride(0), BLOCK_M=block_m,
                                 BLOCK_D=block_d)
    return dx, dbr, sum_partials(parts[0], B, gate.dtype), sum_partials(parts[1], B, t_emb.dtype)


@final_context_bwd.register_fake
def _(ds, x, branch, gate, t_emb, backend):
    return torch.empty_like(x), torch.empty_like(branch), torch.empty_like(gate), torch.empty_like(t_emb)


def _setup(ctx, inputs, output):
    ctx.backend = inputs[5]
    ctx.save_for_backward(*inputs[:4])


def _backward(ctx, ds):
    ds = ds.contiguous()  # the kernels index (B, T, D) gradients densely
    if ctx.backend == "cuda":  # the CUDA kernels take one activation dtype
        ds = ds.to(ctx.saved_tensors[0].dtype)
    return (*final_context_bwd(ds, *ctx.saved_tensors, ctx.backend), None, None)


final_context_fwd.register_autograd(_backward, setup_context=_setup)


def run(residual, branch, gate, t_emb, backend="triton"):
    """Check the arguments (before any launch) and call the fused op."""
    check_tensor("residual", residual, rank=3)
    B, T, D = residual.shape
    check_tensor("branch", branch, shape=(B, T, D), device=residual.device)
    check_tensor("gate", gate, shape=(B, D), device=residual.device)
    check_tensor("t_emb", t_emb, shape=(B, D), device=residual.device)
    out_dtype = activation_dtype(residual, branch)
    if backend == "cuda":  # one activation dtype
        check_device("residual", residual)
        residual, branch, gate, t_emb = (t.to(out_dtype) for t in (residual, branch, gate, t_emb))
    return final_context_fwd(residual.contiguous(), branch.contiguous(), strided_rows(gate), strided_rows(t_emb),
                             out_dtype, backend)


@register("final_context", "triton")
def final_context(residual, branch, gate, t_emb):
    """Triton twin of ``dip_kernels.final_context.final_context``."""
    return run(residual, branch, gate, t_emb)
