"""Access to the torch-free CUDA extension ``dip_kernels._cuda`` (built by setup.py when nvcc is found).

``extension()`` returns the module or None; ``require()`` returns it or raises a clear error saying why it cannot
be used (not built, or no CUDA device). Importing this module never fails.
"""
from __future__ import annotations

import importlib

import torch

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # as csrc/common.cuh


def extension():
    """The compiled module, or None when it was not built."""
    try:
        return importlib.import_module("dip_kernels._cuda")
    except ImportError:
        return None


def require():
    """The compiled module, usable on this machine; otherwise a RuntimeError that says what is missing."""
    ext = extension()
    if ext is None:
        raise RuntimeError("the dip CUDA extension is not built: reinstall with nvcc available "
                           "(pip install -e . with CUDA_HOME set, and without DIP_SKIP_CUDA=1)")
    try:
        count = ext.device_count()
    except RuntimeError as err:
        raise RuntimeError(f"the dip CUDA extension cannot run here (no usable CUDA device): {err}") from None
    if count == 0:
        raise RuntimeError("the dip CUDA extension cannot run here: no CUDA device")
    return ext


def pointer(t: torch.Tensor | None, fallback: torch.Tensor) -> int:
    """t's device address, or ``fallback``'s where t is absent (the kernel then never touches it)."""
    return (fallback if t is None else t).data_ptr()


def stream_of(t: torch.Tensor) -> int:
    """The handle of the current CUDA stream on t's device (kernels launch there, never on the default stream)."""
    return torch.cuda.current_stream(t.device).cuda_stream
