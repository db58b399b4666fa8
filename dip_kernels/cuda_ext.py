"""Access to the torch-free CUDA extension ``dip_kernels._cuda`` (built by setup.py when nvcc is found).

``extension()`` returns the module or None; ``require()`` returns it or raises a clear error saying why it cannot
be used (not built, or no CUDA device). Importing this module never fails.

With ``DIP_CUDA_EMULATE=1`` the same calls go to ``dip_kernels._cuda_emulated``: the same kernel sources built
for the host emulator of csrc/emulation.h, taking CPU tensors (the tests set it when there is no GPU, as they set
``TRITON_INTERPRET=1`` for Triton).
"""
from __future__ import annotations

import importlib
import os

import torch

from .checks import gpu_sms

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}  # as csrc/common.cuh
EMULATED_SMS = 4  # "multiprocessors" of the emulator, for launch-size heuristics


def emulated() -> bool:
    """Whether the CUDA backend runs on the host emulator (``DIP_CUDA_EMULATE=1``)."""
    return os.environ.get("DIP_CUDA_EMULATE") == "1"


def extension():
    """The compiled module (the emulated one under ``DIP_CUDA_EMULATE=1``), or None when it was not built."""
    try:
        return importlib.import_module("dip_kernels._cuda_emulated" if emulated() else "dip_kernels._cuda")
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
    """The handle of the current CUDA stream on t's device (kernels launch there, never on the default stream);
    0 for the emulator's host tensors."""
    return torch.cuda.current_stream(t.device).cuda_stream if t.is_cuda else 0


def check_device(name: str, t: torch.Tensor) -> None:
    """CUDA tensors, or CPU tensors under the emulator; otherwise a ValueError naming the tensor."""
    if not (t.is_cuda or (t.device.type == "cpu" and emulated())):
        raise ValueError(f"the CUDA backend needs CUDA tensors, got {name} on {t.device}")


def multiprocessors(device: torch.device) -> int:
    """SM count of ``device`` (the emulator's nominal count for CPU tensors)."""
    return gpu_sms(device) or EMULATED_SMS
