"""Op C with the CUDA extension (csrc/final_context.cu): launchers behind the custom ops of
``final_context_triton`` (same op boundary, buffers and deterministic reductions), registered as the ``cuda``
backend. One activation dtype per call."""
from __future__ import annotations


from .cuda_ext import DTYPE_CODES, extension, require, stream_of
from .final_context_triton import run
from .registry import register
from .triton_support import device_guard


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
                                    t_emb.stride(0), stream_of(x))


def final_context(residual, branch, gate, t_emb):
    """CUDA twin of ``dip_kernels.final_context.final_context``."""
    return run(residual, branch, gate, t_emb, backend="cuda")


if extension() is not None:
    register("final_context", "cuda")(final_context)
