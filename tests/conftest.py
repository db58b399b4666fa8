"""Test set-up: the Triton interpreter and the CUDA-kernel emulator on machines without a CUDA device (docs/kernels.md
§5).

TRITON_INTERPRET must be set before any module defining ``@triton.jit`` kernels is imported, and only where no
GPU is present (on the GPU machine the same tests run the compiled kernels). DIP_CUDA_EMULATE likewise sends the
CUDA backend to ``dip_kernels._cuda_emulated`` (the csrc/ kernels on a host emulator) with CPU tensors.
"""
import os

import pytest
import torch

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


def tiny_model(**overrides):
    """A DiP-T/8-shaped model small enough for fast CPU tests."""
    from dip import create_model

    return create_model("DiP-T/8", **overrides)


def model_inputs(model, batch=2, size=None, device="cpu", seed=0):
    """Random (x, t, y) for ``model``: non-zero-mean images, t in (0, 1), labels including the null class."""
    g = torch.Generator().manual_seed(seed)
    size = size or model.image_size
    x = (0.5 + torch.randn(batch, model.in_channels, size, size, generator=g)).clamp(-1, 1)
    t = torch.rand(batch, generator=g)
    y = torch.randint(0, model.num_classes + 1, (batch,), generator=g)
    y[-1] = model.num_classes
    return x.to(device), t.to(device), y.to(device)


def cuda_kernels_run_on(device) -> bool:
    """Whether the CUDA extension's kernels can run on ``device``: a GPU, or the CPU through the emulator."""
    from dip_kernels.cuda_ext import emulated, extension

    return extension() is not None and (device.type == "cuda" or (device.type == "cpu" and emulated()))


def backend_ops(backend: str):
    """Attribute access to the ``backend`` implementation of every op that has one (``ops.block_boundary`` …)."""
    from types import SimpleNamespace

    from dip_kernels import implementations, ops

    return SimpleNamespace(**{op: implementations(op)[backend] for op in ops() if backend in implementations(op)})


def backend_module(request, device, modules: dict):
    """The op module of ``request.param``'s backend (``modules``: backend → module) where it can run on ``device``."""
    if request.param == "cuda" and not cuda_kernels_run_on(device):
        pytest.skip("the CUDA extension needs a CUDA device (or its emulator, dip_kernels._cuda_emulated)")
    return modules[request.param]


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
