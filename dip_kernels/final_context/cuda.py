"""Op C's CUDA launchers (csrc/final_context.cu): the same op boundary, buffers and deterministic reductions as
the Triton twin, behind the custom ops of ``op.py``. One activation dtype per call (``op.py`` converts)."""
from __future__ import annotations

from ..checks import device_guard
from ..cuda_ext import DTYPE_CODES, require, stream_of


def launch_fwd(x, branch, gate, t_emb, s) -> None:
    B, T, D = x.shape
    with device_guard(x):
        require().final_context_fwd(DTYPE_CODES[x.dtype], x.data_ptr(), branch.data_ptr(), gate.data_ptr(),
                                    t_emb.data_ptr(), s.data_ptr(), B * T, T, D, gate.stride(0), t_emb.stride(0),
                                    stream_of(x))


def launch_bwd(ds, x, branch, gate, t_emb, dx, dbr, parts, chunks) -> None:
    B, T, D = x.shape
    with device_guard(x):
        require().final_context_bwd(DTYPE_CODES[x.dtype], ds.data_ptr(), x.data_ptr(), branch.data_ptr(),
                                    gate.data_ptr(), t_emb.data_ptr(), dx.data_ptr(), dbr.data_ptr(),
                                    parts[0].data_ptr(), parts[1].data_ptr(), B, T, D, chunks, gate.stride(0),
                                    t_emb.stride(0), ds.stride(1), stream_of(x))
