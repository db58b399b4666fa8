"""dip_kernels: the fusable ops of DiP behind one seam (kernels.md §1, §4).

Each op module holds the reference implementation (plain PyTorch, the ground truth, always available) and
registers it under the ``torch`` backend; its Triton twin (``*_triton.py``) registers under ``triton`` when Triton
imports. ``KernelTable(backend)`` resolves every op for a backend choice; models hold one.
"""
import importlib.util

from . import attention, block_boundary, detailer, final_context, patchify, qk_norm_rope, swiglu  # noqa: F401
from .registry import BACKENDS, KernelTable, check_backend, get_backend, implementations, ops, resolve, set_backend

if importlib.util.find_spec("triton") is not None:
    from . import (block_boundary_triton, detailer_triton, final_context_triton, patch_embed_triton,  # noqa: F401
                   qk_norm_rope_triton, swiglu_triton)
    from . import (block_boundary_cuda, detailer_cuda, final_context_cuda, patchify_cuda,  # noqa: F401
                   qk_norm_rope_cuda)

__all__ = ["BACKENDS", "KernelTable", "check_backend", "get_backend", "implementations", "ops", "resolve",
           "set_backend"]
