"""Op E with the CUDA extension (csrc/patchify.cu): patchify and unpatchify as functional custom ops (each is the
other's backward), and the patch embedding as the CUDA patchify followed by the cuBLAS GEMM; registered as the
``cuda`` backend of ``patchify``, ``unpatchify`` and ``patch_embed``."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .cuda_ext import DTYPE_CODES, check_device, extension, require, stream_of
from .registry import register
from .triton_support import check_tensor, device_guard


def _copy(src: torch.Tensor, dst: torch.Tensor, P: int, to_patches: bool, image_shape) -> torch.Tensor:
    check_device("the source", src)
    B, C, H, W = image_shape
    with device_guard(src):
        require().patch_copy(DTYPE_CODES[src.dtype], src.data_ptr(), dst.data_ptr(), dst.numel(), C, H, W, P,
                             *src.stride(), int(to_patches), stream_of(src))
    return dst


@torch.library.custom_op("dip::patchify_cuda", mutates_args=())
def patchify_op(img: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) any strides → (B·T, C, P, P) contiguous."""
    B, C, H, W = img.shape
    out = torch.empty(B * (H // patch_size) * (W // patch_size), C, patch_size, patch_size, device=img.device,
                      dtype=img.dtype)
    return _copy(img, out, patch_size, True, img.shape)


@patchify_op.register_fake
def _(img, patch_size):
    B, C, H, W = img.shape
    return img.new_empty(B * (H // patch_size) * (W // patch_size), C, patch_size, patch_size)


@torch.library.custom_op("dip::unpatchify_cuda", mutates_args=())
def unpatchify_op(patches: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """(B·T, C, P, P) any strides → (B, C, H, W) contiguous."""
    C, P = patches.shape[1], patches.shape[-1]
    out = torch.empty(batch, C, height, width, device=patches.device, dtype=patches.dtype)
    return _copy(patches, out, P, False, out.shape)


@unpatchify_op.register_fake
def _(patches, batch, height, width):
    return patches.new_empty(batch, patches.shape[1], height, width)


def _patchify_backward(ctx, grad):
    return unpatchify_op(grad, *ctx.image_shape), None


def _patchify_setup(ctx, inputs, output):
    B, _, H, W = inputs[0].shape
    ctx.image_shape = (B, H, W)


def _unpatchify_backward(ctx, grad):
    return patchify_op(grad, ctx.patch_size), None, None, None


def _unpatchify_setup(ctx, inputs, output):
    ctx.patch_size = inputs[0].shape[-1]


patchify_op.register_autograd(_patchify_backward, setup_context=_patchify_setup)
unpatchify_op.register_autograd(_unpatchify_backward, setup_context=_unpatchify_setup)


def patchify(img: torch.Tensor, patch_size: int) -> torch.Tensor:
    """CUDA twin of ``dip_kernels.patchify.patchify``."""
    check_tensor("img", img, rank=4)
    if img.shape[2] % patch_size or img.shape[3] % patch_size:
        raise ValueError(f"img height and width must be divisible by patch_size {patch_size}, got "
                         f"{img.shape[2]}×{img.shape[3]}")
    return patchify_op(img, patch_size)


def unpatchify(patches: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """CUDA twin of ``dip_kernels.patchify.unpatchify``."""
    check_tensor("patches", patches, rank=4)
    P = patches.shape[-1]
    if patches.shape[0] != batch * (height // P) * (width // P):
        raise ValueError(f"patches must number batch·(H/P)·(W/P) = {batch * (height // P) * (width // P)}, "
                         f"got {patches.shape[0]}")
    return unpatchify_op(patches, batch, height, width)


def patch_embed(img: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, patch_size: int) -> torch.Tensor:
    """CUDA twin of ``dip_kernels.patchify.patch_embed``: the CUDA patchify, then the embedding GEMM."""
    tokens = patchify(img, patch_size).view(img.shape[0], -1, weight.shape[1])
    return F.linear(tokens, weight, bias)


if extension() is not None:
    register("patchify", "cuda")(patchify)
    register("unpatchify", "cuda")(unpatchify)
    register("patch_embed", "cuda")(patch_embed)
