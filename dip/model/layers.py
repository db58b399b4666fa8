"""The DiT backbone's layers (docs/model.md §2). Module and parameter names follow the released checkpoint (§5).

Fusable ops are not called directly: every layer takes ``ops``, the namespace of implementations its model
resolved (``dip_kernels.KernelTable``), so the same module runs the reference or a kernel backend.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


# ------------------------------------------------------------------------------------------------ embedders
class PatchEmbedder(nn.Module):
    """Linear(C·P² → D) with bias on each (c, i, j)-ordered patch vector; no norm, no position embedding (§2)."""

    def __init__(self, patch_size: int, in_channels: int, hidden_size: int):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Linear(in_channels * patch_size**2, hidden_size)

    def forward(self, img: torch.Tensor, ops) -> torch.Tensor:
        """img (B, C, H, W) → tokens (B, T, D)."""
        return ops.patch_embed(img, self.proj.weight, self.proj.bias, self.patch_size)


class TimestepEmbedder(nn.Module):
    """Sinusoidal embedding of continuous t ∈ [0, 1] (t = 0 noise), then Linear, SiLU, Linear (§2).

    Frequencies f_k = exp(-ln(max_period)·k/half), k = 0..half-1, with max_period = 10; emb = [cos(t f), sin(t f)].
    """

    def __init__(self, hidden_size: int, frequency_size: int = 256, max_period: float = 10.0):
        super().__init__()
        half = frequency_size // 2
        self.register_buffer("freqs", torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half),
                             persistent=False)
        self.mlp = nn.Sequential(nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """t (B,) → (B, D)."""
        args = t.float()[:, None] * self.freqs[None]  # (B, half), fp32
        features = torch.cat([args.cos(), args.sin()], dim=-1)  # fp32 (a no-op cast unless the model was cast)
        return self.mlp(features.to(self.mlp[0].weight.dtype))


class LabelEmbedder(nn.Module):
    """Class table of K + 1 rows; row K is the null class of classifier-free guidance (§2). No dropout here."""

    def __init__(self, num_classes: int, hidden_size: int):
        super().__init__()
        self.embedding_table = nn.Embedding(num_classes + 1, hidden_size)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """y (B,) int in [0, K] → (B, D)."""
        return self.embedding_table(y)


# ------------------------------------------------------------------------------------------------ block parts
class RMSNorm(nn.Module):
    """Holds an RMSNorm's learnable weight (init 1, eps 1e-6); the norm itself runs inside the fused ops."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))


class Attention(nn.Module):
    """Multi-head self-attention: qkv Linear without bias, QK RMSNorm, 2D RoPE, SDPA, output Linear (§2)."""

    def __init__(self, hidden_size: int, num_heads: int, eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=False)
        self.q_norm = RMSNorm(head_dim, eps)
        self.k_norm = RMSNorm(head_dim, eps)
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, ops) -> torch.Tensor:
        """h (B, T, D), cos/sin (T, head_dim/2) → (B, T, D)."""
        q, k, v = ops.qk_norm_rope(self.qkv(h), self.q_norm.weight, self.k_norm.weight, cos, sin, self.num_heads,
                                   self.q_norm.eps)  # (B, H, T, h) each
        return self.proj(ops.attention(q, k, v))


class SwiGLU(nn.Module):
    """W2(SiLU(W1 h) ⊙ W3 h), all without bias; hidden = int(2/3 · mlp_ratio · D) (§2). With ``merged``, W1 and W3
    are one Linear ``w13`` (one GEMM; the SwiGLU op reads its two halves in place and writes their gradient as one
    tensor)."""

    def __init__(self, hidden_size: int, mlp_hidden: int):
        super().__init__()
        self.merged = False
        self.w1 = nn.Linear(hidden_size, mlp_hidden, bias=False)
        self.w2 = nn.Linear(mlp_hidden, hidden_size, bias=False)
        self.w3 = nn.Linear(hidden_size, mlp_hidden, bias=False)

    def merge(self) -> None:
        """Replace W1 and W3 by one Linear ``w13`` holding both (same values: merging is a layout change)."""
        self.w13 = nn.utils.skip_init(nn.Linear, self.w1.in_features, 2 * self.w1.out_features, bias=False,
                                      device=self.w1.weight.device, dtype=self.w1.weight.dtype)
        self.w13.weight.data.copy_(torch.cat([self.w1.weight.data, self.w3.weight.data]))
        del self.w1, self.w3
        self.merged = True

    def forward(self, h: torch.Tensor, ops) -> torch.Tensor:
        """h (B, T, D) → (B, T, D)."""
        if self.merged:
            return self.w2(ops.swiglu(self.w13(h)))  # (B, T, 2·hidden) → (B, T, hidden)
        return self.w2(ops.swiglu(self.w1(h), self.w3(h)))


class DiPBlock(nn.Module):
    """One adaLN transformer block (§2):

        x ← x + gate1 · Attn(RMSNorm1(x)·(1 + scale1) + shift1)
        x ← x + gate2 · SwiGLU(RMSNorm2(x)·(1 + scale2) + shift2)

    To fuse each gated residual update with the norm that follows it (op A), the block's last update is left
    pending: ``forward`` takes the previous block's pending (branch, gate) and returns its own, and the model
    closes the last one with the final context (op C) or the baseline's final layer.
    """

    def __init__(self, hidden_size: int, num_heads: int, mlp_hidden: int, eps: float = 1e-6):
        super().__init__()
        self.norm1 = RMSNorm(hidden_size, eps)
        self.attn = Attention(hidden_size, num_heads, eps)
        self.norm2 = RMSNorm(hidden_size, eps)
        self.mlp = SwiGLU(hidden_size, mlp_hidden)
        self.adaLN_modulation = nn.Sequential(nn.Linear(hidden_size, 6 * hidden_size))  # the model may merge it

    def forward(self, x: torch.Tensor, branch: torch.Tensor | None, gate: torch.Tensor | None, cond: torch.Tensor,
                cos: torch.Tensor, sin: torch.Tensor, ops):
        """x (B, T, D) residual, pending (branch (B, T, D), gate (B, D)) or None, cond: c (B, D), or this block's
        precomputed modulation (B, 6D) when the model merges the adaLN GEMMs → (x, branch, gate)."""
        mod = self.adaLN_modulation(cond) if hasattr(self, "adaLN_modulation") else cond  # inside: FSDP gathers here
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.chunk(6, dim=-1)  # (B, D) views
        if branch is None:
            h = ops.modulated_norm(x, self.norm1.weight, shift1, scale1, "rms", self.norm1.eps)
        else:
            x, h = ops.block_boundary(x, branch, gate, self.norm1.weight, shift1, scale1, "rms", self.norm1.eps)
        x, h = ops.block_boundary(x, self.attn(h, cos, sin, ops), gate1, self.norm2.weight, shift2, scale2, "rms",
                                  self.norm2.eps)
        return x, self.mlp(h, ops), gate2


class FinalLayer(nn.Module):
    """The DiT-only baseline head (paper's ablation): LayerNorm without affine, adaLN shift/scale, Linear(D → C·P²)."""

    def __init__(self, hidden_size: int, patch_size: int, in_channels: int, eps: float = 1e-6):
        super().__init__()
        self.patch_size, self.in_channels, self.eps = patch_size, in_channels, eps
        self.linear = nn.Linear(hidden_size, in_channels * patch_size**2)
        self.adaLN_modulation = nn.Sequential(nn.Linear(hidden_size, 2 * hidden_size))

    def forward(self, x: torch.Tensor, branch: torch.Tensor, gate: torch.Tensor, c: torch.Tensor, ops,
                height: int, width: int) -> torch.Tensor:
        """Closes the last block's pending update, then x (B, T, D) → velocity image (B, C, H, W)."""
        shift, scale = self.adaLN_modulation(c).chunk(2, dim=-1)
        _, h = ops.block_boundary(x, branch, gate, None, shift, scale, "layer", self.eps)
        patches = self.linear(h)  # (B, T, C·P²), (c, i, j) order
        P = self.patch_size
        return ops.unpatchify(patches.reshape(-1, self.in_channels, P, P), x.shape[0], height, width)
