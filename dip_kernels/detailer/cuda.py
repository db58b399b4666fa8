"""The Patch Detailer Head's two memory-bound ends with the CUDA extension (csrc/detailer_ends.cu), behind the op
boundaries of ``dip_kernels.detailer``; the tensor-core middle layers stay with cuDNN (the reference) here and
with Triton in the ``triton`` backend.

- ``detailer_stem``: the first conv + bias + SiLU reading the image patch by patch, with the max-pool (and its
  argmax) as second outputs; backward gives the weight and bias gradients (the noisy image needs none; when it
  does require a gradient the reference path runs instead).
- ``detailer_output`` and the output half of ``detailer_decoder_output``: the 1×1 output conv from channels_last
  features straight into the velocity image, and its backward.
Custom ops ``dip::detailer_stem_cuda_*`` and ``dip::detailer_output_cuda_*`` with fakes; weight and bias
gradients are fp32 per-block partials summed deterministically here.
"""
from __future__ import annotations

import torch

from ..checks import device_guard, nhwc_empty, pooled_stage_grads
from ..cuda_ext import DTYPE_CODES, multiprocessors, require, stream_of


def _blocks(work: int, device, per_sm: int) -> int:
    return max(1, min(work, per_sm * multiprocessors(device)))


SHARED_PER_SM = {(9, 0): 228 * 1024, (8, 0): 164 * 1024}  # bytes per SM; other architectures: 100 KB


def _resident(smem: int, device, most: int) -> int:
    """Blocks of ``smem`` dynamic shared-memory bytes resident per SM (1 KB reserved per block), at most ``most``
    (the emulator sizes as an H100)."""
    cap = torch.cuda.get_device_capability(device) if device.type == "cuda" else (9, 0)
    return max(1, min(most, SHARED_PER_SM.get(cap, 100 * 1024) // (smem + 1024)))


def _image_args(img: torch.Tensor, P: int) -> tuple:
    """(tokens per image, patch-grid width, strides b, c, h, w, P) for the kernels' image addressing."""
    _, _, H, W = img.shape
    return ((H // P) * (W // P), W // P, *img.stride(), P)


# ---------------------------------------------------------------------------------------------------- stem
@torch.library.custom_op("dip::detailer_stem_cuda_fwd", mutates_args=())
def stem_fwd(img: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, patch_size: int,
             dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(skip, pooled, pre-activation, int8 argmax), all channels_last (N, C, ·, ·); img already in ``dtype``."""
    B, cin, H, W = img.shape
    P, C = patch_size, weight.shape[0]
    N = B * (H // P) * (W // P)
    skip, pre = nhwc_empty(N, C, P, img, dtype), nhwc_empty(N, C, P, img, dtype)
    pooled, argmax = nhwc_empty(N, C, P // 2, img, dtype), nhwc_empty(N, C, P // 2, img, torch.int8)
    with device_guard(img):
        require().stem_fwd(DTYPE_CODES[dtype], img.data_ptr(), *_image_args(img, P), weight.data_ptr(),
                           bias.data_ptr(), skip.data_ptr(), pooled.data_ptr(), pre.data_ptr(), argmax.data_ptr(), N,
                           cin, C, _blocks(N, img.device, 8), stream_of(img))
    return skip, pooled, pre, argmax


@stem_fwd.register_fake
def _(img, weight, bias, patch_size, dtype):
    B, _, H, W = img.shape
    N, C, P = B * (H // patch_size) * (W // patch_size), weight.shape[0], patch_size
    return (nhwc_empty(N, C, P, img, dtype), nhwc_empty(N, C, P // 2, img, dtype), nhwc_empty(N, C, P, img, dtype),
            nhwc_empty(N, C, P // 2, img, torch.int8))


@torch.library.custom_op("dip::detailer_stem_cuda_bwd", mutates_args=())
def stem_bwd(d_skip: torch.Tensor, d_pooled: torch.Tensor, argmax: torch.Tensor, pre: torch.Tensor,
             img: torch.Tensor, weight: torch.Tensor, patch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(dweight (C, Cin, 3, 3), dbias (C,)) in fp32."""
    N, C, P, _ = pre.shape
    cin = img.shape[1]
    smem = 4 * (cin * (P + 2) ** 2 + P * P * C)  # the kernel's image tile and dpre (csrc/detailer_ends.cu)
    blocks = _blocks(N, img.device, _resident(smem, img.device, 8))
    p_w = torch.empty(blocks, C * cin * 9, device=img.device, dtype=torch.float32)
    p_b = torch.empty(blocks, C, device=img.device, dtype=torch.float32)
    with device_guard(img):
        require().stem_bwd(DTYPE_CODES[pre.dtype], d_skip.data_ptr(), *d_skip.stride(), d_pooled.data_ptr(),
                           *d_pooled.stride(), argmax.data_ptr(),
                           pre.data_ptr(), img.data_ptr(), *_image_args(img, patch_size), p_w.data_ptr(),
                           p_b.data_ptr(), N, cin, C, blocks, stream_of(img))
    return p_w.sum(0).view(C, cin, 3, 3).to(weight.dtype), p_b.sum(0).to(weight.dtype)


@stem_bwd.register_fake
def _(d_skip, d_pooled, argmax, pre, img, weight, patch_size):
    return torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _stem_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the unused outputs (pre, argmax)
    img, weight, _, patch_size, _ = inputs
    ctx.patch_size = patch_size
    ctx.save_for_backward(img, weight, output[2], output[3])


def _stem_backward(ctx, d_skip, d_pooled, _d_pre, _d_argmax):
    img, weight, pre, argmax = ctx.saved_tensors
    grads = pooled_stage_grads(d_skip, d_pooled, pre, argmax)
    if grads is None:
        return (None,) * 5
    dw, db = stem_bwd(grads[0], grads[1], argmax, pre, img, weight, ctx.patch_size)  # read through their strides
    return None, dw, db, None, None


stem_fwd.register_autograd(_stem_backward, setup_context=_stem_setup)


# ---------------------------------------------------------------------------------------------------- output
@torch.library.custom_op("dip::detailer_output_cuda_fwd", mutates_args=())
def output_fwd(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, batch: int, height: int,
               width: int) -> torch.Tensor:
    """conv1×1 of (B·T, C, P, P) features of any strides (NHWC: 16-byte reads) into the (B, Cout, H, W) image, in
    y's dtype."""
    N, C, P, _ = y.shape
    cout = weight.shape[0]
    img = torch.empty(batch, cout, height, width, device=y.device, dtype=y.dtype)
    with device_guard(y):
        require().output_fwd(DTYPE_CODES[y.dtype], y.data_ptr(), *y.stride(), weight.data_ptr(), bias.data_ptr(),
                             img.data_ptr(),
                             *_image_args(img, P), N * P * P, C, cout, stream_of(y))
    return img


@output_fwd.register_fake
def _(y, weight, bias, batch, height, width):
    return y.new_empty(batch, weight.shape[0], height, width)


@torch.library.custom_op("dip::detailer_output_cuda_bwd", mutates_args=())
def output_bwd(d_img: torch.Tensor, y: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor]:
    """(dy channels_last, dweight (Cout, C) fp32, dbias (Cout,) fp32)."""
    N, C, P, _ = y.shape
    cout = weight.shape[0]
    dy = nhwc_empty(N, C, P, y, y.dtype)
    V = 16 // y.element_size() if C % (16 // y.element_size()) == 0 and y.stride(1) == 1 else 1  # channel vector
    smem = 4 * (256 // (C // V)) * cout * (C + 1)  # its per-slot gradient sums (csrc/detailer_ends.cu)
    blocks = _blocks(N * P * P, y.device, _resident(smem, y.device, 8))
    p_w = torch.empty(blocks, cout, C, device=y.device, dtype=torch.float32)
    p_b = torch.empty(blocks, cout, device=y.device, dtype=torch.float32)
    with device_guard(y):
        require().output_bwd(DTYPE_CODES[y.dtype], d_img.data_ptr(), *_image_args(d_img, P), y.data_ptr(),
                             *y.stride(), weight.data_ptr(), dy.data_ptr(), p_w.data_ptr(), p_b.data_ptr(), N * P * P,
                             C, cout, blocks, stream_of(y))
    return dy, p_w.sum(0), p_b.sum(0)


@output_bwd.register_fake
def _(d_img, y, weight):
    N, C, P, _ = y.shape
    return nhwc_empty(N, C, P, y, y.dtype), weight.new_empty(weight.shape), weight.new_empty(weight.shape[0])


def _output_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the unused outputs (pre, argmax)
    y, weight = inputs[0], inputs[1]
    ctx.save_for_backward(y, weight)


def _output_backward(ctx, d_img):
    if d_img is None:
        return (None,) * 6
    y, weight = ctx.saved_tensors
    dy, dw, db = output_bwd(d_img.to(y.dtype), y, weight)
    return dy, dw, db, None, None, None


output_fwd.register_autograd(_output_backward, setup_context=_output_setup)
