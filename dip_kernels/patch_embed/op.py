"""Op E's custom ops (docs/kernels.md §1, op E; docs/architecture.md), with fakes and autograd:

- Triton: ``dip::patch_embed_fwd`` (the patch gather fused into the embedding GEMM), ``dip::patch_embed_bwd_weight``,
  ``dip::patch_embed_bwd_input``;
- CUDA: ``dip::patchify_cuda`` / ``dip::unpatchify_cuda`` (copy kernels, each the other's backward), the embedding
  then a cuBLAS GEMM.
Arguments are checked here, before any launch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..checks import check_patch_grid, check_tensor
from ..cuda_ext import check_device
from ..registry import load_launchers, register

LAUNCHERS = load_launchers(__package__)


# ------------------------------------------------------------------------------------------ Triton: fused GEMM
def _tokens(img: torch.Tensor, patch_size: int) -> int:
    return (img.shape[2] // patch_size) * (img.shape[3] // patch_size)


@torch.library.custom_op("dip::patch_embed_fwd", mutates_args=())
def patch_embed_fwd(img: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, patch_size: int,
                    compute_dtype: torch.dtype) -> torch.Tensor:
    """img (B, C, H, W) any strides → tokens (B, T, D) in ``compute_dtype``."""
    out = torch.empty(img.shape[0], _tokens(img, patch_size), weight.shape[0], device=img.device,
                      dtype=compute_dtype)
    LAUNCHERS["triton"].launch_fwd(img, weight, bias, out, patch_size, compute_dtype)
    return out


@patch_embed_fwd.register_fake
def _(img, weight, bias, patch_size, compute_dtype):
    return img.new_empty(img.shape[0], _tokens(img, patch_size), weight.shape[0], dtype=compute_dtype)


@torch.library.custom_op("dip::patch_embed_bwd_weight", mutates_args=())
def patch_embed_bwd_weight(dout: torch.Tensor, img: torch.Tensor, weight: torch.Tensor, patch_size: int,
                           compute_dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(dweight (D, C·P²), dbias (D,)) in the weight's dtype."""
    dw, db = LAUNCHERS["triton"].launch_bwd_weight(dout, img, weight, patch_size, compute_dtype)
    return dw.to(weight.dtype), db.to(weight.dtype)


@patch_embed_bwd_weight.register_fake
def _(dout, img, weight, patch_size, compute_dtype):
    return torch.empty_like(weight), weight.new_empty(weight.shape[0])


@torch.library.custom_op("dip::patch_embed_bwd_input", mutates_args=())
def patch_embed_bwd_input(dout: torch.Tensor, weight: torch.Tensor, img_like: torch.Tensor, patch_size: int,
                          compute_dtype: torch.dtype) -> torch.Tensor:
    """dimg with the shape and dtype of ``img_like`` (contiguous)."""
    dimg = torch.empty(img_like.shape, device=img_like.device, dtype=img_like.dtype)
    LAUNCHERS["triton"].launch_bwd_input(dout, weight, dimg, patch_size, compute_dtype)
    return dimg


@patch_embed_bwd_input.register_fake
def _(dout, weight, img_like, patch_size, compute_dtype):
    return torch.empty(img_like.shape, device=img_like.device, dtype=img_like.dtype)


def _setup(ctx, inputs, output):
    img, weight, _, patch_size, compute_dtype = inputs
    ctx.patch_size, ctx.compute_dtype = patch_size, compute_dtype
    ctx.save_for_backward(img, weight)


def _backward(ctx, dout):
    img, weight = ctx.saved_tensors
    dout = dout.contiguous()  # the kernels index the token gradient densely
    dimg = None
    if ctx.needs_input_grad[0]:
        dimg = patch_embed_bwd_input(dout, weight, img, ctx.patch_size, ctx.compute_dtype)
    dw, db = patch_embed_bwd_weight(dout, img, weight, ctx.patch_size, ctx.compute_dtype)
    return dimg, dw, db, None, None


patch_embed_fwd.register_autograd(_backward, setup_context=_setup)


def _fused_patch_embed(img, weight, bias, patch_size):
    """Triton twin of ``reference.patch_embed``: img (B, C, H, W) → tokens (B, T, D)."""
    check_patch_grid("img", img, patch_size)
    C = img.shape[1]
    check_tensor("weight", weight, rank=2, device=img.device)
    if weight.shape[1] != C * patch_size**2:
        raise ValueError(f"weight must be (D, C·P²) = (D, {C * patch_size**2}), got {tuple(weight.shape)}")
    check_tensor("bias", bias, shape=(weight.shape[0],), device=img.device)
    on = torch.is_autocast_enabled(img.device.type)
    compute = torch.get_autocast_dtype(img.device.type) if on else torch.promote_types(img.dtype, weight.dtype)
    return patch_embed_fwd(img, weight.contiguous(), bias.contiguous(), patch_size, compute)


# ------------------------------------------------------------------------------------------ CUDA: copy kernels
@torch.library.custom_op("dip::patchify_cuda", mutates_args=())
def patchify_op(img: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) any strides → (B·T, C, P, P) contiguous."""
    B, C, H, W = img.shape
    out = torch.empty(B * _tokens(img, patch_size), C, patch_size, patch_size, device=img.device, dtype=img.dtype)
    return LAUNCHERS["cuda"].launch_copy(img, out, patch_size, True, img.shape)


@patchify_op.register_fake
def _(img, patch_size):
    return img.new_empty(img.shape[0] * _tokens(img, patch_size), img.shape[1], patch_size, patch_size)


@torch.library.custom_op("dip::unpatchify_cuda", mutates_args=())
def unpatchify_op(patches: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """(B·T, C, P, P) any strides → (B, C, H, W) contiguous."""
    C, P = patches.shape[1], patches.shape[-1]
    out = torch.empty(batch, C, height, width, device=patches.device, dtype=patches.dtype)
    return LAUNCHERS["cuda"].launch_copy(patches, out, P, False, out.shape)


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


def _cuda_patchify(img: torch.Tensor, patch_size: int) -> torch.Tensor:
    """CUDA twin of ``reference.patchify``."""
    check_patch_grid("img", img, patch_size)
    check_device("img", img)
    return patchify_op(img, patch_size)


def _cuda_unpatchify(patches: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """CUDA twin of ``reference.unpatchify``."""
    check_tensor("patches", patches, rank=4)
    check_device("patches", patches)
    P = patches.shape[-1]
    if patches.shape[0] != batch * (height // P) * (width // P):
        raise ValueError(f"patches must number batch·(H/P)·(W/P) = {batch * (height // P) * (width // P)}, "
                         f"got {patches.shape[0]}")
    return unpatchify_op(patches, batch, height, width)


def _cuda_patch_embed(img: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, patch_size: int) -> torch.Tensor:
    """CUDA twin of ``reference.patch_embed``: the CUDA patchify, then the embedding GEMM."""
    tokens = _cuda_patchify(img, patch_size).view(img.shape[0], -1, weight.shape[1])
    return F.linear(tokens, weight, bias)


if "triton" in LAUNCHERS:
    register("patch_embed", "triton")(_fused_patch_embed)
if "cuda" in LAUNCHERS:
    register("patchify", "cuda")(_cuda_patchify)
    register("unpatchify", "cuda")(_cuda_unpatchify)
    register("patch_embed", "cuda")(_cuda_patch_embed)
