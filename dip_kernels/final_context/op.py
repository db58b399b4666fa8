"""Op C's custom ops (docs/kernels.md §1, op C; docs/architecture.md): ``dip::final_context_fwd`` /
``dip::final_context_bwd`` with fakes and autograd; ``backend`` picks the launchers of ``triton.py`` or
``cuda.py``. Arguments are checked here, before any launch."""
from __future__ import annotations

import functools

import torch

from ..checks import (activation_dtype, block_size, check_tensor, reduction_chunks, rows_per_program, split_cast,
                       strided_rows, sum_partials, token_rows)
from ..cuda_ext import check_device
from ..registry import load_launchers, register

LAUNCHERS = load_launchers(__package__)


@torch.library.custom_op("dip::final_context_fwd", mutates_args=())
def final_context_fwd(x: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor, t_emb: torch.Tensor,
                      out_dtype: torch.dtype, backend: str) -> torch.Tensor:
    """s (B, T, D) in ``out_dtype``."""
    s = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    LAUNCHERS[backend].launch_fwd(x, branch, gate, t_emb, s)
    return s


@final_context_fwd.register_fake
def _(x, branch, gate, t_emb, out_dtype, backend):
    return x.new_empty(x.shape, dtype=out_dtype)


@torch.library.custom_op("dip::final_context_bwd", mutates_args=())
def final_context_bwd(ds: torch.Tensor, x: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor,
                      t_emb: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dbranch, [dgate, dt_emb] (2, B, D) fp32: one reduction kernel; cast in ``_backward``)."""
    B, T, D = x.shape
    dx, dbr = torch.empty_like(x), torch.empty_like(branch)
    chunks = reduction_chunks(x, B, T, rows_per_program(block_size(D)))
    parts = torch.empty(2, B * chunks, D, device=x.device, dtype=torch.float32)
    LAUNCHERS[backend].launch_bwd(ds, x, branch, gate, t_emb, dx, dbr, parts, chunks)
    return dx, dbr, sum_partials(parts, B)


@final_context_bwd.register_fake
def _(ds, x, branch, gate, t_emb, backend):
    B, _, D = x.shape
    return torch.empty_like(x), torch.empty_like(branch), x.new_empty(2, B, D, dtype=torch.float32)


def _setup(ctx, inputs, output):
    ctx.backend = inputs[5]
    ctx.save_for_backward(*inputs[:4])


def _backward(ctx, ds):
    if ctx.backend == "cuda":  # the CUDA kernels take one activation dtype
        ds = ds.to(ctx.saved_tensors[0].dtype)
    ds = token_rows(ds)  # the head's 1×1 bottleneck hands over a row-strided gradient: read in place
    gate, t_emb = ctx.saved_tensors[2:4]
    dx, dbr, sums = final_context_bwd(ds, *ctx.saved_tensors, ctx.backend)
    return (dx, dbr, *split_cast(sums, [gate.dtype, t_emb.dtype]), None, None)


final_context_fwd.register_autograd(_backward, setup_context=_setup)


def final_context(residual, branch, gate, t_emb, *, backend):
    """Kernel twin of ``reference.final_context``: arguments checked before any launch, then the fused op."""
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


for _backend in LAUNCHERS:
    register("final_context", _backend)(functools.partial(final_context, backend=_backend))
