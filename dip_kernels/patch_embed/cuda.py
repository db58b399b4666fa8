"""Op E's CUDA launcher (csrc/patchify.cu): the patchify / unpatchify copy between an image and its patches, any
source strides, behind the custom ops of ``op.py``."""
from __future__ import annotations

import torch

from ..checks import device_guard
from ..cuda_ext import DTYPE_CODES, require, stream_of


def launch_copy(src: torch.Tensor, dst: torch.Tensor, P: int, to_patches: bool, image_shape) -> torch.Tensor:
    """dst (dense) ← src (any strides) as patches (B·T, C, P, P) or as the image (B, C, H, W)."""
    B, C, H, W = image_shape
    with device_guard(src):
        require().patch_copy(DTYPE_CODES[src.dtype], src.data_ptr(), dst.data_ptr(), dst.numel(), C, H, W, P,
                             *src.stride(), int(to_patches), stream_of(src))
    return dst
