"""Helpers shared by the Triton ops: argument checks before any launch, output dtypes, launch geometry, the
deterministic second pass of per-program partial reductions (kernels.md §2–§5)."""
from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

FLOATS = (torch.float32, torch.float16, torch.bfloat16)
_TL = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}


def check_tensor(name: str, t: torch.Tensor, *, rank: int | None = None, shape: tuple | None = None,
                 device: torch.device | None = None) -> None:
    """ValueError/TypeError naming ``name`` when ``t`` has the wrong type, rank, shape, dtype or device."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if rank is not None and t.dim() != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {tuple(t.shape)}")
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(t.shape)}")
    if t.dtype not in FLOATS:
        raise TypeError(f"{name} must be float32, float16 or bfloat16, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} must be on {device} like the other inputs, got {t.device}")


def strided_rows(t: torch.Tensor) -> torch.Tensor:
    """A 2-D ``t`` for a kernel that takes its row stride and assumes unit column stride: ``t`` itself when its
    column stride is 1 (any row stride, 0 included: an expanded row), else a dense copy. Every other layout a kernel
    reads goes through ``Tensor.contiguous()``, which checks every stride (docs/kernels.md, "Layouts")."""
    if t.dim() != 2:
        raise ValueError(f"strided_rows takes a 2-D tensor, got shape {tuple(t.shape)}")
    return t if t.stride(1) == 1 or t.shape[1] == 1 else t.contiguous()


def activation_dtype(x: torch.Tensor, *others: torch.Tensor) -> torch.dtype:
    """The dtype a fused op emits: autocast's dtype when autocast is on for x's device, else type promotion."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    dtype = x.dtype
    for o in others:
        dtype = torch.promote_types(dtype, o.dtype)
    return dtype


def device_guard(t: torch.Tensor):
    """Launch on ``t``'s device (its current stream): a CUDA device guard, nothing on CPU (interpreter)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def block_size(n: int) -> int:
    """Smallest power of two ≥ n (a whole row held by one program)."""
    return triton.next_power_of_2(n)


def rows_per_program(block_d: int) -> int:
    """Rows per program so that one program holds about 4K fp32 values."""
    return max(1, min(16, 4096 // block_d))


def reduction_chunks(t: torch.Tensor, batch: int, tokens: int, rows: int) -> int:
    """Programs per sample for per-sample reductions: enough programs to fill the GPU (or 2 when interpreted,
    so the multi-chunk path is tested)."""
    if not t.is_cuda:
        return max(1, min(2, tokens))
    sms = torch.cuda.get_device_properties(t.device).multi_processor_count
    return max(1, min(triton.cdiv(tokens, rows), triton.cdiv(2 * sms, batch)))


def sum_partials(partials: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """Deterministic second pass: (groups·k, D) fp32 partials → (groups, D) sums in ``dtype``."""
    return partials.view(groups, -1, partials.shape[-1]).sum(1).to(dtype)


INTERPRETING = tl.constexpr(int(os.environ.get("TRITON_INTERPRET", "0") == "1"))


@triton.jit
def cast_to(x, dtype: tl.constexpr):
    """Round x to ``dtype`` to nearest even. Compiled, this is the hardware conversion. Interpreted, bf16 is rounded
    by hand (the interpreter truncates, which biases every sum of stored bf16 values toward zero), NaN-safe: a NaN
    keeps its sign and top payload bits with the quiet bit set (adding the rounding bias to a NaN's bits would
    carry into the sign and store -0.0); ±inf and values that round past the largest bf16 become ±inf."""
    if INTERPRETING and dtype == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        nan = (bits & 0x7FFFFFFF) > 0x7F800000
        bits = tl.where(nan, (bits | 0x00400000) & 0xFFFF0000, rounded)
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def operand(x, COMPUTE: tl.constexpr, UPCAST: tl.constexpr):
    """A matmul operand in the compute dtype. ``UPCAST`` (set when interpreted, where ``tl.dot`` on bf16 is
    wrong): round to the compute dtype exactly, then compute in fp32 (kernels.md §5)."""
    if UPCAST:
        return cast_to(x, COMPUTE).to(tl.float32)
    return x.to(COMPUTE)


def dot_args(dtype) -> dict:
    """Kernel constexprs for matmul operands of ``dtype``: COMPUTE, UPCAST (interpreted) and the fp32 dot
    precision (TF32 only where torch allows it)."""
    tf32 = dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    return {"COMPUTE": _TL[dtype], "UPCAST": INTERPRETING.value,
            "PRECISION": "tf32" if tf32 else "ieee"}
