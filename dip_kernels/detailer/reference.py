"""Op D, the Patch Detailer Head's stages in reference PyTorch (docs/model.md §3; docs/kernels.md §1 row D).

Every patch is an independent tiny image (zero padding at its border). Op boundaries, chosen so that a kernel
backend can fuse inside each stage without sharing buffers across ops (docs/kernels.md §4: ops are functional):

- ``detailer_stem``: the first encoder stage reading the noisy (B, C, H, W) image itself (no patchify copy in a
  kernel backend; the reference patchifies).
- ``detailer_encoder``: 3×3 conv + bias + SiLU → the skip, and its 2×2 max-pool (a second output).
- ``detailer_bottleneck``: 1×1 conv + bias + SiLU on [pooled features, the patch's DiT token tiled to r×r].
- ``detailer_decoder``: ConvTranspose 2×2/2 + bias, [up-sampled, skip] (in that order), 3×3 conv + bias + SiLU.
- ``detailer_output``: the 1×1 output conv + bias written straight into the (B, 3, H, W) velocity image.
- ``detailer_decoder_output``: the last decoder stage followed by the output conv, one op so that a kernel
  backend can run the output conv in the decoder's epilogue.

Inputs may be NCHW or channels_last; every op keeps the memory format it is given: the concatenations that feed a
conv are built in the layout of their spatial operand (a channels_last skip or pooled map), because ``torch.cat`` of
mixed layouts — the up-sampled map of a 1×1 input, whose layout is ambiguous, or the stride-0 tiled context — is
NCHW, and every later stage would follow it (the CUDA output conv would then read 2-byte elements).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..patch_embed.reference import patchify, unpatchify
from ..registry import register


def _in_layout_of(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t`` channels_last when ``like`` is unambiguously channels_last (a no-op when it already is), else as is."""
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return t.contiguous(memory_format=torch.channels_last)
    return t


@register("detailer_encoder", "torch")
def detailer_encoder(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (N, Cin, S, S) → skip = SiLU(conv3×3(x)) (N, Cout, S, S) and pooled = maxpool2×2(skip) (N, Cout, S/2, S/2)."""
    skip = F.silu(F.conv2d(x, weight, bias, padding=1))
    return skip, F.max_pool2d(skip, 2)


@register("detailer_stem", "torch")
def detailer_stem(img: torch.Tensor, patch_size: int, weight: torch.Tensor, bias: torch.Tensor,
                  channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """img (B, C, H, W) → ``detailer_encoder`` of its (B·T, C, P, P) patches (NHWC memory when ``channels_last``)."""
    x = patchify(img, patch_size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return detailer_encoder(x, weight, bias)


@register("detailer_bottleneck", "torch")
def detailer_bottleneck(pooled: torch.Tensor, context: torch.Tensor, weight: torch.Tensor,
                        bias: torch.Tensor) -> torch.Tensor:
    """pooled (N, C, r, r), context (N, D) tiled to (N, D, r, r) → SiLU(conv1×1([pooled, context])) (N, C, r, r)."""
    r = pooled.shape[-1]
    tiled = context.to(pooled.dtype)[:, :, None, None].expand(-1, -1, r, r)
    return F.silu(F.conv2d(_in_layout_of(torch.cat([pooled, tiled], dim=1), pooled), weight, bias))


@register("detailer_decoder", "torch")
def detailer_decoder(x: torch.Tensor, skip: torch.Tensor, up_weight: torch.Tensor, up_bias: torch.Tensor,
                     weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x (N, Cin, r, r), skip (N, Cs, 2r, 2r) → SiLU(conv3×3([convT2×2(x), skip])) (N, Cout, 2r, 2r)."""
    up = _in_layout_of(F.conv_transpose2d(x, up_weight, up_bias, stride=2), skip)
    return F.silu(F.conv2d(torch.cat([up, skip], dim=1), weight, bias, padding=1))


@register("detailer_decoder_output", "torch")
def detailer_decoder_output(x: torch.Tensor, skip: torch.Tensor, up_weight: torch.Tensor, up_bias: torch.Tensor,
                            weight: torch.Tensor, bias: torch.Tensor, out_weight: torch.Tensor,
                            out_bias: torch.Tensor, batch: int, height: int, width: int) -> torch.Tensor:
    """``detailer_output(detailer_decoder(...))``: the last stage and the velocity image (B, 3, H, W)."""
    y = detailer_decoder(x, skip, up_weight, up_bias, weight, bias)
    return detailer_output(y, out_weight, out_bias, batch, height, width)


@register("detailer_output", "torch")
def detailer_output(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, batch: int, height: int,
                    width: int) -> torch.Tensor:
    """y (B·T, C, P, P) → conv1×1 → velocity patches (B·T, 3, P, P) → image (B, 3, H, W)."""
    return unpatchify(F.conv2d(y, weight, bias), batch, height, width)
