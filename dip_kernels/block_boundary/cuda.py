"""Op A's CUDA launchers (csrc/block_boundary.cu): the same op boundary, buffers and deterministic reductions as
the Triton twin, behind the custom ops of ``op.py``. One activation dtype per call (fp32, fp16 or bf16) and an fp32
weight (``op.py`` converts)."""
from __future__ import annotations

from ..checks import device_guard
from ..cuda_ext import DTYPE_CODES, require, stream_of
from ..cuda_ext import pointer as _ptr


def launch_fwd(x, branch, gate, weight, shift, scale, r, h, mean, rstd, norm, eps) -> None:
    """Forward on x's device and current stream; outputs allocated by the caller."""
    B, T, D = x.shape
    with device_guard(x):
        require().block_boundary_fwd(
            DTYPE_CODES[x.dtype], x.data_ptr(), _ptr(branch, x), _ptr(gate, shift), _ptr(weight, rstd),
            shift.data_ptr(), scale.data_ptr(), _ptr(r if r.numel() else None, h), h.data_ptr(),
            _ptr(mean if mean.numel() else None, rstd), rstd.data_ptr(), B * T, T, D,
            gate.stride(0) if gate is not None else 0, shift.stride(0), scale.stride(0), eps, int(branch is not None),
            int(weight is not None), norm, stream_of(x))


def launch_bwd(dh, dr, r, branch, gate, weight, scale, mean, rstd, dx, dbr, parts, chunks, norm) -> None:
    """Backward into dx, dbr and the (4, B·chunks, D) fp32 partials (gate, shift, scale, weight)."""
    B, T, D = r.shape
    with device_guard(r):
        require().block_boundary_bwd(
            DTYPE_CODES[r.dtype], dh.data_ptr(), _ptr(dr, dh), r.data_ptr(), _ptr(branch, r), _ptr(gate, scale),
            _ptr(weight, rstd), scale.data_ptr(), _ptr(mean if mean.numel() else None, rstd), rstd.data_ptr(),
            dx.data_ptr(), _ptr(dbr if dbr.numel() else None, dx), parts[0].data_ptr(), parts[1].data_ptr(),
            parts[2].data_ptr(), parts[3].data_ptr(), B, T, D, chunks, gate.stride(0) if gate is not None else 0,
            scale.stride(0), int(branch is not None), int(dr is not None), int(weight is not None), norm,
            stream_of(r))
