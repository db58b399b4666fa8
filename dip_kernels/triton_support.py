"""Triton-only helpers shared by the Triton launchers (docs/kernels.md §2, §5): the
bf16 store, matmul operands in the compute dtype, and the matmul constexprs. Imports triton; the torch-only
helpers are in ``checks.py``."""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

_TL = {torch.float32: tl.float32, torch.float16: tl.float16, torch.bfloat16: tl.bfloat16}
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
    wrong): round to the compute dtype exactly, then compute in fp32."""
    if UPCAST:
        return cast_to(x, COMPUTE).to(tl.float32)
    return x.to(COMPUTE)


def dot_args(dtype) -> dict:
    """Kernel constexprs for matmul operands of ``dtype``: COMPUTE, UPCAST (interpreted) and the fp32 dot
    precision (TF32 only where torch allows it)."""
    tf32 = dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    return {"COMPUTE": _TL[dtype], "UPCAST": INTERPRETING.value, "PRECISION": "tf32" if tf32 else "ieee"}
