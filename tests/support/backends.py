"""Which kernel backends can run where (docs/kernels.md §5), and attribute access to a backend's ops."""
import pytest


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
