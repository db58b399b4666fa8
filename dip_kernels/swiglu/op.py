"""Op F's custom ops (docs/kernels.md §1, op F; docs/architecture.md): ``dip::swiglu_fwd`` / ``dip::swiglu_bwd`` with
fakes and autograd over the Triton launchers (no CUDA twin: a copy-bound element-wise op Triton already serves).
Arguments are checked here, before any launch."""
from __future__ import annotations

import functools

import torch

from ..checks import activation_dtype, check_tensor, strided_rows
from ..registry import load_launchers, register

LAUNCHERS = load_launchers(__package__, ("triton",))


def _rows(t: torch.Tensor) -> torch.Tensor:
    """(..., H) → an (M, H) view with unit last stride and one row stride (a dense copy when no such view exists)."""
    try:
        return strided_rows(t.view(-1, t.shape[-1]))
    except RuntimeError:  # the leading dims do not collapse into one row stride
        return t.contiguous().view(-1, t.shape[-1])


@torch.library.custom_op("dip::swiglu_fwd", mutates_args=())
def swiglu_fwd(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """SiLU(a)·b of (M, H) row-strided a, b → contiguous (M, H) in ``out_dtype``."""
    out = torch.empty(a.shape, device=a.device, dtype=out_dtype)
    LAUNCHERS["triton"].launch_fwd(a, b, out)
    return out


@swiglu_fwd.register_fake
def _(a, b, out_dtype):
    return a.new_empty(a.shape, dtype=out_dtype)


@torch.library.custom_op("dip::swiglu_bwd", mutates_args=())
def swiglu_bwd(grad: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(da, db), contiguous, in the dtypes of a and b."""
    da = torch.empty(a.shape, device=a.device, dtype=a.dtype)
    db = torch.empty(a.shape, device=a.device, dtype=b.dtype)
    LAUNCHERS["triton"].launch_bwd(grad, a, b, da, db)
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


@torch.library.custom_op("dip::swiglu_merged_fwd", mutates_args=())
def swiglu_merged_fwd(ab: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """SiLU(a)·b of the halves a | b of a row-strided (M, 2H) merged W1|W3 output → contiguous (M, H)."""
    H = ab.shape[1] // 2
    out = torch.empty(ab.shape[0], H, device=ab.device, dtype=out_dtype)
    LAUNCHERS["triton"].launch_fwd(ab[:, :H], ab[:, H:], out)
    return out


@swiglu_merged_fwd.register_fake
def _(ab, out_dtype):
    return ab.new_empty(ab.shape[0], ab.shape[1] // 2, dtype=out_dtype)


@torch.library.custom_op("dip::swiglu_merged_bwd", mutates_args=())
def swiglu_merged_bwd(grad: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """d(ab) (M, 2H) written by the kernel in one buffer: no zero-filled halves and concatenation (docs/kernels.md
    §8)."""
    H = ab.shape[1] // 2
    dab = torch.empty(ab.shape, device=ab.device, dtype=ab.dtype)
    LAUNCHERS["triton"].launch_bwd(grad, ab[:, :H], ab[:, H:], dab[:, :H], dab[:, H:])
    return dab


@swiglu_merged_bwd.register_fake
def _(grad, ab):
    return torch.empty_like(ab)


def _merged_setup(ctx, inputs, output):
    ctx.save_for_backward(inputs[0])


def _merged_backward(ctx, grad):
    return swiglu_merged_bwd(grad.contiguous(), ctx.saved_tensors[0]), None


swiglu_merged_fwd.register_autograd(_merged_backward, setup_context=_merged_setup)


def swiglu(a: torch.Tensor, b: torch.Tensor | None = None, *, backend: str = "triton") -> torch.Tensor:
    """Kernel twin of ``reference.swiglu``: SiLU(a) ⊙ b for a, b (..., H); with ``b`` None, ``a`` is the merged
    (..., 2H) W1|W3 output and its gradient is written as one tensor."""
    check_tensor("a", a)
    if b is None:
        if a.shape[-1] % 2:
            raise ValueError(f"a merged W1|W3 output needs an even last dim, got shape {tuple(a.shape)}")
        return swiglu_merged_fwd(_rows(a), activation_dtype(a)).view(*a.shape[:-1], a.shape[-1] // 2)
    check_tensor("b", b, shape=a.shape, device=a.device)
    return swiglu_fwd(_rows(a), _rows(b), activation_dtype(a, b)).view(a.shape)


for _backend in LAUNCHERS:
    register("swiglu", _backend)(functools.partial(swiglu, backend=_backend))
