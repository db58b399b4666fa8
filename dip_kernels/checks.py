"""Torch-only helpers shared by every op's custom-op layer (docs/kernels.md): argument checks raised before any
launch, the dtype a fused op emits, layouts the kernels accept, the device guard, launch geometry shared by the
Triton and CUDA twins, and the deterministic second pass of per-program partial sums. Imports no Triton."""
from __future__ import annotations

import contextlib
import os

import torch

FLOATS = (torch.float32, torch.float16, torch.bfloat16)


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


def check_patch_grid(name: str, img: torch.Tensor, patch_size: int) -> None:
    """ValueError unless ``img`` (B, C, H, W) tiles into patch_size × patch_size patches."""
    check_tensor(name, img, rank=4)
    if img.shape[2] % patch_size or img.shape[3] % patch_size:
        raise ValueError(f"{name} height and width must be divisible by patch_size {patch_size}, got "
                         f"{img.shape[2]}×{img.shape[3]}")


def strided_rows(t: torch.Tensor) -> torch.Tensor:
    """A 2-D ``t`` for a kernel that takes its row stride and assumes unit column stride: ``t`` itself when its
    column stride is 1 (any row stride, 0 included: an expanded row), else a dense copy. Every other layout a kernel
    reads goes through ``Tensor.contiguous()``, which checks every stride (docs/kernels.md §3)."""
    if t.dim() != 2:
        raise ValueError(f"strided_rows takes a 2-D tensor, got shape {tuple(t.shape)}")
    return t if t.stride(1) == 1 or t.shape[1] == 1 else t.contiguous()


def token_rows(t: torch.Tensor) -> torch.Tensor:
    """A (B, T, D) ``t`` whose B·T rows a kernel reads with one row stride (``t.stride(1)``) and unit column stride:
    ``t`` itself when its rows are evenly spaced (stride(0) = T·stride(1), e.g. a slice of a wider buffer), else a
    dense copy. Every stride is checked."""
    B, T, D = t.shape
    if t.stride(2) != 1 and D > 1:
        return t.contiguous()
    if T == 1:  # one token per sample: the rows are the samples
        return t.as_strided((B, 1, D), (t.stride(0), t.stride(0), 1))
    return t if B == 1 or t.stride(0) == T * t.stride(1) else t.contiguous()


def activation_dtype(x: torch.Tensor, *others: torch.Tensor) -> torch.dtype:
    """The dtype a fused op emits: autocast's dtype when autocast is on for x's device, else type promotion."""
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    dtype = x.dtype
    for o in others:
        dtype = torch.promote_types(dtype, o.dtype)
    return dtype


def device_guard(t: torch.Tensor):
    """Launch on ``t``'s device (its current stream): a CUDA device guard, nothing on CPU (interpreter/emulator)."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


LAUNCH_AS_SMS = "DIP_LAUNCH_AS_SMS"


def gpu_sms(device: torch.device) -> int | None:
    """Multiprocessors whose launch geometry (tiles, split counts) launches on ``device`` follow: the GPU's own; for
    CPU tensors ``$DIP_LAUNCH_AS_SMS`` when set (benchmarks/tools/kernel_report.py sizes launches as on that GPU without
    one), else None: the small geometry the interpreter and the emulator run fast."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return int(os.environ[LAUNCH_AS_SMS]) if os.environ.get(LAUNCH_AS_SMS) else None


def cdiv(a: int, b: int) -> int:
    """⌈a / b⌉ for non-negative integers."""
    return -(-a // b)


def block_size(n: int) -> int:
    """Smallest power of two ≥ n (a whole row held by one program)."""
    return 1 << max(n - 1, 0).bit_length()


def rows_per_program(block_d: int) -> int:
    """Rows per program so that one program holds about 4K fp32 values."""
    return max(1, min(16, 4096 // block_d))


def reduction_chunks(t: torch.Tensor, batch: int, tokens: int, rows: int) -> int:
    """Programs per sample for per-sample reductions: enough programs to fill the GPU (or 2 with the small geometry,
    so the multi-chunk path is tested by the interpreter and the emulator)."""
    sms = gpu_sms(t.device)
    if sms is None:
        return max(1, min(2, tokens))
    return max(1, min(cdiv(tokens, rows), 2 * sms // batch))  # at most two programs per SM: no partial second wave


def sum_partials(partials: torch.Tensor, groups: int) -> torch.Tensor:
    """Deterministic second pass of k reductions in one kernel: (k, groups·chunks, D) fp32 partials (any strides) →
    (k, groups, D) fp32 sums (docs/kernels.md §8: the eager glue of a backward)."""
    return partials.unflatten(1, (groups, -1)).sum(2)


def split_cast(stacked: torch.Tensor, dtypes: list) -> list:
    """(k, …) fp32 sums → k tensors, the i-th in ``dtypes[i]``: at most one cast kernel when the dtypes agree. Used
    by the autograd backward functions, outside the custom ops (whose outputs may not alias one another)."""
    if len(set(dtypes)) == 1:
        return list(stacked.to(dtypes[0]).unbind(0))
    return [s.to(d) for s, d in zip(stacked.unbind(0), dtypes)]


def to_nhwc(t: torch.Tensor) -> torch.Tensor:
    """``t`` in dense channels_last (NHWC) memory, the layout the head's kernels read (a copy only when needed)."""
    return t.contiguous(memory_format=torch.channels_last)


def nhwc_empty(N: int, C: int, S: int, like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A new (N, C, S, S) tensor in channels_last memory (NHWC)."""
    return torch.empty(N, S, S, C, device=like.device, dtype=dtype).permute(0, 3, 1, 2)


def pooled_stage_grads(d_skip, d_pooled, pre: torch.Tensor, argmax: torch.Tensor) -> tuple:
    """The skip and pooled-output gradients of a Detailer conv + pool stage in the pre-activation's dtype, zeros for
    the one autograd left out (None when neither was used: then the stage has no gradient)."""
    if d_skip is None and d_pooled is None:
        return None
    d_skip = torch.zeros_like(pre) if d_skip is None else d_skip.to(pre.dtype)
    d_pooled = torch.zeros_like(argmax, dtype=pre.dtype) if d_pooled is None else d_pooled.to(pre.dtype)
    return d_skip, d_pooled
