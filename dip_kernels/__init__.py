"""dip_kernels: the fusable ops of DiP behind one seam (docs/architecture.md).

Each op is a package — ``reference.py`` (plain PyTorch, the ground truth, always available, registered under the
``torch`` backend), ``op.py`` (custom ops, argument checks, registration of the kernel backends that can run
here), ``triton.py`` and ``cuda.py`` (launchers). ``KernelTable(backend)`` resolves every op for a backend choice
(or a mixed ``{op: backend}`` table); models hold one. The CUDA backend needs no Triton and the Triton backend no
CUDA extension.
"""
from . import attention, block_boundary, detailer, final_context, patch_embed, qk_norm_rope, swiglu  # noqa: F401
from .registry import BACKENDS, KernelTable, check_backend, get_backend, implementations, ops, resolve, set_backend

__all__ = ["BACKENDS", "KernelTable", "check_backend", "get_backend", "implementations", "ops", "resolve",
           "set_backend"]
