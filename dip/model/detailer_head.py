"""The Patch Detailer Head: a per-patch convolutional U-Net conditioned on the patch's DiT token (docs/model.md §3).

Generalisation (ours, §3 last paragraph): ``stages`` = min(4, log2 P) by default, widths base·2^k capped at
``max_width``; the bottleneck width is the last stage's width. P=16 and P=32 with the defaults reproduce the
paper's table (6,968,067 parameters at D=1152).

Parameter names are the released ones (``local_decoder.enc1.0.weight`` …, §5); the modules only hold the
parameters, and the stage ops of ``dip_kernels.detailer`` run them.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


def _conv_silu(cin: int, cout: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2), nn.SiLU())


class PatchDetailerHead(nn.Module):
    """U-Net on every noisy P×P patch (zero padding at its border), conditioned on s_i through the bottleneck.

    enc_k: conv3×3 + SiLU (skip) then maxpool 2×2; bottleneck: conv1×1 on [pooled, s_i tiled] + SiLU;
    up_k: ConvTranspose 2×2/2; dec_k: conv3×3 on [up, skip] + SiLU; out_conv: conv1×1 to the image channels.
    """

    def __init__(self, patch_size: int, context_dim: int, in_channels: int = 3, *, base_width: int = 64,
                 max_width: int = 512, stages: int | None = None, channels_last: bool = True):
        super().__init__()
        levels = int(math.log2(patch_size)) if patch_size > 0 else 0
        if patch_size < 2 or 2**levels != patch_size:
            raise ValueError(f"patch_size must be a power of two ≥ 2 for the Detailer head, got {patch_size}")
        self.stages = min(4, levels) if stages is None else stages
        if not 1 <= self.stages <= levels:
            raise ValueError(f"head stages must be in [1, log2(P)={levels}] for patch_size {patch_size}, "
                             f"got {stages}")
        self.patch_size, self.context_dim = patch_size, context_dim
        self.channels_last = channels_last  # NHWC activations: faster with cuDNN and oneDNN (bench_detailer.py)
        widths = [min(base_width * 2**k, max_width) for k in range(self.stages)]
        cin = in_channels
        for k, w in enumerate(widths, start=1):
            setattr(self, f"enc{k}", _conv_silu(cin, w, 3))
            cin = w
        self.bottleneck = _conv_silu(widths[-1] + context_dim, widths[-1], 1)
        for k in range(self.stages, 0, -1):
            cout = widths[max(k - 2, 0)]
            setattr(self, f"up{k}", nn.ConvTranspose2d(cin, cin, 2, stride=2))
            setattr(self, f"dec{k}", _conv_silu(cin + widths[k - 1], cout, 3))
            cin = cout
        self.out_conv = nn.Conv2d(cin, in_channels, 1)

    def forward(self, img: torch.Tensor, context: torch.Tensor, ops) -> torch.Tensor:
        """img (B, C, H, W) noisy image, context (B, T, D) final DiT tokens → velocity image (B, C, H, W)."""
        B, _, H, W = img.shape
        skips = []
        for k in range(1, self.stages + 1):
            conv = getattr(self, f"enc{k}")[0]
            if k == 1:  # reads the image's patches directly
                skip, h = ops.detailer_stem(img, self.patch_size, conv.weight, conv.bias, self.channels_last)
            else:
                skip, h = ops.detailer_encoder(h, conv.weight, conv.bias)
            skips.append(skip)
        conv = self.bottleneck[0]
        h = ops.detailer_bottleneck(h, context.reshape(-1, self.context_dim), conv.weight, conv.bias)
        for k in range(self.stages, 1, -1):
            up, conv = getattr(self, f"up{k}"), getattr(self, f"dec{k}")[0]
            h = ops.detailer_decoder(h, skips[k - 1], up.weight, up.bias, conv.weight, conv.bias)
        up, conv, out = self.up1, self.dec1[0], self.out_conv  # the last stage writes the velocity image
        return ops.detailer_decoder_output(h, skips[0], up.weight, up.bias, conv.weight, conv.bias, out.weight,
                                           out.bias, B, H, W)
