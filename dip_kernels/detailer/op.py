"""Op D's entry points (docs/kernels.md §1, op D; docs/architecture.md): the Patch Detailer Head's stages with their
arguments checked before any launch, registered for the backends that can run here.

The head differs from the other ops in one way, by design: its custom ops live with each backend (``triton.py``:
one forward and one backward op per stage, each a composition of several ``conv_triton`` launches with the buffers
managed inside; ``cuda.py``: the two memory-bound ends, the middle on cuDNN). A stage's Triton and CUDA versions
do not share buffers, saved tensors or backward structure, so there is no common custom-op layer to put here; the
checks, the dtype policy and the registration are shared.
"""
from __future__ import annotations

import torch

from ..checks import activation_dtype, check_patch_grid, check_tensor, to_nhwc
from ..cuda_ext import check_device
from ..registry import load_launchers, register
from . import reference

LAUNCHERS = load_launchers(__package__)
def _check_conv(name: str, weight: torch.Tensor, bias: torch.Tensor, cin: int, k: int, device) -> tuple:
    """(weight, bias) checked, dense (the kernels read both with unit strides)."""
    check_tensor(f"{name} weight", weight, rank=4, device=device)
    if weight.shape[1:] != (cin, k, k):
        raise ValueError(f"{name} weight must be (Cout, {cin}, {k}, {k}), got {tuple(weight.shape)}")
    check_tensor(f"{name} bias", bias, shape=(weight.shape[0],), device=device)
    return weight.contiguous(), bias.contiguous()


def _check_patches(name: str, x: torch.Tensor, size: int | None = None) -> None:
    check_tensor(name, x, rank=4)
    if x.shape[2] != x.shape[3] or (size is not None and x.shape[2] != size):
        raise ValueError(f"{name} must be (N, C, S, S) square patches{'' if size is None else f' with S={size}'}, "
                         f"got {tuple(x.shape)}")


def _check_decoder(x, skip, up_weight, up_bias, weight, bias) -> tuple:
    """(up_weight, up_bias, weight, bias) checked, dense."""
    _check_patches("x", x)
    _check_patches("skip", skip, 2 * x.shape[2])
    check_tensor("up weight", up_weight, shape=(x.shape[1], up_weight.shape[1], 2, 2), device=x.device)
    check_tensor("up bias", up_bias, shape=(up_weight.shape[1],), device=x.device)
    return (up_weight.contiguous(), up_bias.contiguous(),
            *_check_conv("decoder", weight, bias, up_weight.shape[1] + skip.shape[1], 3, x.device))


def _check_image_patches(name: str, y: torch.Tensor, P: int, batch: int, height: int, width: int) -> None:
    """ValueError unless ``y``'s N patches of size P tile a (batch, ·, height, width) image."""
    if height % P or width % P or y.shape[0] != batch * (height // P) * (width // P):
        raise ValueError(f"{name} must hold batch·(H/P)·(W/P) = {batch}·{height // P}·{width // P} patches of size "
                         f"{P}, got {tuple(y.shape)}")


# ---------------------------------------------------------------------------------------------------- Triton
def triton_stem(img, patch_size, weight, bias, channels_last=True):
    """Triton twin of ``reference.detailer_stem``: reads the image's patches in place (NHWC out)."""
    check_patch_grid("img", img, patch_size)
    weight, bias = _check_conv("stem", weight, bias, img.shape[1], 3, img.device)
    skip, pooled, _, _ = LAUNCHERS["triton"].encoder_fwd(img, weight, bias, patch_size, activation_dtype(img, weight))
    return skip, pooled


def triton_encoder(x, weight, bias):
    """Triton twin of ``reference.detailer_encoder``."""
    _check_patches("x", x)
    weight, bias = _check_conv("encoder", weight, bias, x.shape[1], 3, x.device)
    skip, pooled, _, _ = LAUNCHERS["triton"].encoder_fwd(to_nhwc(x), weight, bias, 0, activation_dtype(x, weight))
    return skip, pooled


def triton_bottleneck(pooled, context, weight, bias):
    """Triton twin of ``reference.detailer_bottleneck``."""
    _check_patches("pooled", pooled)
    check_tensor("context", context, shape=(pooled.shape[0], weight.shape[1] - pooled.shape[1]), device=pooled.device)
    weight, bias = _check_conv("bottleneck", weight, bias, pooled.shape[1] + context.shape[1], 1, pooled.device)
    y, _ = LAUNCHERS["triton"].bottleneck_fwd(to_nhwc(pooled), context, weight, bias, activation_dtype(pooled, weight))
    return y


def triton_decoder(x, skip, up_weight, up_bias, weight, bias):
    """Triton twin of ``reference.detailer_decoder``."""
    up_weight, up_bias, weight, bias = _check_decoder(x, skip, up_weight, up_bias, weight, bias)
    y, _, _ = LAUNCHERS["triton"].decoder_fwd(to_nhwc(x), to_nhwc(skip), up_weight, up_bias, weight, bias,
                                              activation_dtype(x, weight))
    return y


def triton_decoder_output(x, skip, up_weight, up_bias, weight, bias, out_weight, out_bias, batch, height, width):
    """Triton twin of ``reference.detailer_decoder_output``: the last decoder with the output conv fused into its
    epilogue, writing the velocity image."""
    up_weight, up_bias, weight, bias = _check_decoder(x, skip, up_weight, up_bias, weight, bias)
    out_weight, out_bias = _check_conv("output", out_weight, out_bias, weight.shape[0], 1, x.device)
    _check_image_patches("x", x, 2 * x.shape[2], batch, height, width)
    img, _, _ = LAUNCHERS["triton"].decoder_output_fwd(to_nhwc(x), to_nhwc(skip), up_weight, up_bias, weight, bias,
                                                       out_weight, out_bias, batch, height, width,
                                                       activation_dtype(x, weight))
    return img


def triton_output(y, weight, bias, batch, height, width):
    """Triton twin of ``reference.detailer_output``: the velocity image written directly."""
    _check_patches("y", y)
    weight, bias = _check_conv("output", weight, bias, y.shape[1], 1, y.device)
    _check_image_patches("y", y, y.shape[2], batch, height, width)
    return LAUNCHERS["triton"].output_fwd(to_nhwc(y), weight, bias, batch, height, width, activation_dtype(y, weight))


# ---------------------------------------------------------------------------------------------------- CUDA
def cuda_stem(img, patch_size, weight, bias, channels_last=True):
    """CUDA twin of ``reference.detailer_stem`` (the reference runs when the image itself needs a gradient: the
    kernels give none)."""
    check_device("img", img)
    check_patch_grid("img", img, patch_size)
    weight, bias = _check_conv("stem", weight, bias, img.shape[1], 3, img.device)
    if img.requires_grad:
        return reference.detailer_stem(img, patch_size, weight, bias, channels_last)
    dtype = activation_dtype(img, weight)
    # the weight cast keeps the graph to the fp32 parameter; the kernel wants (C, Cin·9) fp32
    skip, pooled, _, _ = LAUNCHERS["cuda"].stem_fwd(img.to(dtype), weight.float().contiguous(), bias.float(),
                                                    patch_size, dtype)
    return skip, pooled


def _cuda_output_conv(y, weight, bias, batch, height, width):
    check_device("y", y)
    weight, bias = _check_conv("output", weight, bias, y.shape[1], 1, y.device)
    _check_image_patches("y", y, y.shape[2], batch, height, width)
    dtype = activation_dtype(y, weight)
    w = weight.float().reshape(weight.shape[0], -1)
    return LAUNCHERS["cuda"].output_fwd(y.to(dtype), w, bias.float(), batch, height, width)  # read through its strides


def cuda_output(y, weight, bias, batch, height, width):
    """CUDA twin of ``reference.detailer_output``: the velocity image written directly."""
    _check_patches("y", y)
    return _cuda_output_conv(y, weight, bias, batch, height, width)


def cuda_decoder_output(x, skip, up_weight, up_bias, weight, bias, out_weight, out_bias, batch, height, width):
    """CUDA twin of ``reference.detailer_decoder_output``: the cuDNN decoder, then the CUDA output conv."""
    y = reference.detailer_decoder(x, skip, up_weight, up_bias, weight, bias)
    return _cuda_output_conv(y, out_weight, out_bias, batch, height, width)


if "triton" in LAUNCHERS:
    for _op, _fn in (("detailer_stem", triton_stem), ("detailer_encoder", triton_encoder),
                     ("detailer_bottleneck", triton_bottleneck), ("detailer_decoder", triton_decoder),
                     ("detailer_decoder_output", triton_decoder_output), ("detailer_output", triton_output)):
        register(_op, "triton")(_fn)
if "cuda" in LAUNCHERS:
    for _op, _fn in (("detailer_stem", cuda_stem), ("detailer_output", cuda_output),
                     ("detailer_decoder_output", cuda_decoder_output)):
        register(_op, "cuda")(_fn)
