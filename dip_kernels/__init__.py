"""dip_kernels: the fusable ops of DiP behind one seam (kernels.md §1, §4).

Each op module holds the reference implementation (plain PyTorch, the ground truth, always available) and
registers it under the ``torch`` backend; kernel backends register beside it. ``KernelTable(backend)`` resolves
every op for a backend choice; models hold one.
"""
from . import attention, block_boundary, detailer, final_context, patchify, qk_norm_rope, swiglu  # noqa: F401  (register)
from .registry import BACKENDS, KernelTable, check_backend, get_backend, implementations, ops, resolve, set_backend

__all__ = ["BACKENDS", "KernelTable", "check_backend", "get_backend", "implementations", "ops", "resolve",
           "set_backend"]
