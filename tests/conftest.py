"""Test set-up: the Triton interpreter and the CUDA-kernel emulator on machines without a CUDA device (docs/kernels.md
§5).

TRITON_INTERPRET must be set before any module defining ``@triton.jit`` kernels is imported, and only where no
GPU is present (on the GPU machine the same tests run the compiled kernels). DIP_CUDA_EMULATE likewise sends the
CUDA backend to ``dip_kernels._cuda_emulated`` (the csrc/ kernels on a host emulator) with CPU tensors.
"""
import os

import pytest
import torch

from tests.support.backends import cuda_kernels_run_on

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("DIP_CUDA_EMULATE", "1")

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# kernels run on CPU tensors only through the interpreter (set above when no GPU is present)
KERNEL_DEVICES = (["cpu"] if os.environ.get("TRITON_INTERPRET") == "1" else []) + DEVICES[1:]


@pytest.fixture(params=DEVICES)
def device(request):
    """Every test that takes ``device`` runs on the CPU and, where present, on CUDA."""
    return torch.device(request.param)


@pytest.fixture(params=KERNEL_DEVICES)
def kernel_device(request):
    """Where the kernel tests run: CUDA when present, the CPU through the Triton interpreter otherwise."""
    return torch.device(request.param)


@pytest.fixture
def real_cuda_extension(monkeypatch):
    """The compiled extension itself, not its emulator (for the tests of how it fails without a GPU)."""
    monkeypatch.setenv("DIP_CUDA_EMULATE", "0")


@pytest.fixture
def cuda_kernel_device():
    """Where the CUDA extension's kernels run: the GPU, else the CPU through the emulator (skipped without either)."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not cuda_kernels_run_on(device):
        pytest.skip("the CUDA extension needs a CUDA device (or its emulator, dip_kernels._cuda_emulated)")
    return device
