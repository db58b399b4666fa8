"""Op C's Triton kernels and their launchers (docs/kernels.md §1, op C): s = SiLU(residual + gate[b]·branch + t_emb[b])
in one pass; backward in one pass writing fp32 per-program partials of the per-sample sums (dgate, dt_emb), which
the caller sums deterministically. Nothing but s is stored: the backward recomputes the pre-activation."""
from __future__ import annotations

import triton
import triton.language as tl

from ..checks import block_size, device_guard, rows_per_program
from ..triton_support import cast_to


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
                T, D, CHUNK, s_gate, s_temb, s_ds, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr):
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
        ds = tl.load(ds_ptr + rows[:, None] * s_ds + cols[None, :], mask=mask, other=0.0)  # row-strided in place
        dz = ds.to(tl.float32) * sig * (1.0 + z * (1.0 - sig))
        dz = tl.where(mask, dz, 0.0)
        tl.store(dx_ptr + offs, cast_to(dz, dx_ptr.dtype.element_ty), mask=mask)
        tl.store(dbr_ptr + offs, cast_to(dz * g[None, :], dbr_ptr.dtype.element_ty), mask=mask)
        acc_gate += tl.sum(dz * br, axis=0)
        acc_temb += tl.sum(dz, axis=0)
    part = (b * tl.num_programs(1) + chunk) * D + cols
    tl.store(p_gate_ptr + part, acc_gate, mask=cmask)
    tl.store(p_temb_ptr + part, acc_temb, mask=cmask)


def launch_fwd(x, branch, gate, t_emb, s) -> None:
    """s (B, T, D) ← SiLU(x + gate·branch + t_emb)."""
    B, T, D = x.shape
    block_d = block_size(D)
    block_m = rows_per_program(block_d)
    with device_guard(x):
        _fwd_kernel[(triton.cdiv(B * T, block_m),)](x, branch, gate, t_emb, s, B * T, T, D, gate.stride(0),
                                                    t_emb.stride(0), BLOCK_M=block_m, BLOCK_D=block_d)


def launch_bwd(ds, x, branch, gate, t_emb, dx, dbr, parts, chunks) -> None:
    """dx, dbranch and the (2, B·chunks, D) fp32 partials of dgate and dt_emb; ds (B, T, D) with unit last stride and
    one row stride (stride(0) = T·stride(1))."""
    B, T, D = x.shape
    block_d = block_size(D)
    block_m = rows_per_program(block_d)
    with device_guard(x):
        _bwd_kernel[(B, chunks)](ds, x, branch, gate, t_emb, dx, dbr, parts[0], parts[1], T, D,
                                 triton.cdiv(T, chunks), gate.stride(0), t_emb.stride(0), ds.stride(1),
                                 BLOCK_M=block_m, BLOCK_D=block_d)
