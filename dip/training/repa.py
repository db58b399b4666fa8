"""REPA, the representation-alignment regulariser of DiP's training (docs/model.md §6), and a DINOv2 ViT that
loads the released ``dinov2_vitb14_pretrain.pth`` offline.

    loss_repa = mean over tokens of (1 − cos(projector(h_k), z)),   weight 0.5
h_k: the residual stream after block k (k = 8 at XL); z: the frozen encoder's patch tokens of the clean image
(in [0, 1], ImageNet mean/std, bicubic resize to 14·H/P so its tokens align 1:1 with the DiT tokens).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..io.checkpoints import read_file

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Projector(nn.Module):
    """MLP D → D, SiLU, D → D, SiLU, D → encoder width (§6). Trained with the model, not EMA'd."""

    def __init__(self, hidden_size: int, encoder_dim: int = 768):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size),
                                 nn.SiLU(), nn.Linear(hidden_size, encoder_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.mlp(h)


def encoder_input(x: torch.Tensor, tokens_per_side: int, patch: int = 14) -> torch.Tensor:
    """Clean images in [-1, 1] → the encoder's input: [0, 1], ImageNet-normalised, bicubic to patch·tokens²."""
    x = (x.float() + 1) / 2
    x = F.interpolate(x, size=(patch * tokens_per_side, patch * tokens_per_side), mode="bicubic",
                      align_corners=False)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def repa_loss(projected: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over samples and tokens of 1 − cos(projected, target); both (B, T, C)."""
    return (1 - F.cosine_similarity(projected.float(), target.float(), dim=-1)).mean()


# ---------------------------------------------------------------------------------------------------- DINOv2
class _LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, N, C))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn, self.mlp = _Attention(dim, heads), _Mlp(dim, 4 * dim)
        self.ls1, self.ls2 = _LayerScale(dim), _LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class _PatchEmbed(nn.Module):
    def __init__(self, patch: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DINOv2(nn.Module):
    """A DINOv2 ViT (defaults: ViT-B/14, 518² pre-training grid) whose parameter names match the released
    checkpoints; ``forward`` returns the final-norm patch tokens (``x_norm_patchtokens``), with the position
    embedding bicubic-interpolated to the input's grid."""

    def __init__(self, dim: int = 768, depth: int = 12, heads: int = 12, patch: int = 14, pretrain_grid: int = 37):
        super().__init__()
        self.patch, self.dim = patch, dim
        self.patch_embed = _PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pretrain_grid**2, dim))
        self.blocks = nn.ModuleList(_Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    @classmethod
    def from_pretrained(cls, path) -> "DINOv2":
        """Load a released DINOv2 state dict (e.g. ``dinov2_vitb14_pretrain.pth``, ``weights_only=True``); the size
        (width, depth, patch, pre-training grid; 64-wide heads) is read off the tensors."""
        state = read_file(path)
        if "cls_token" not in state or "patch_embed.proj.weight" not in state:
            raise ValueError(f"{path} is not a DINOv2 state dict (no cls_token / patch_embed.proj.weight)")
        dim = state["cls_token"].shape[-1]
        depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        grid = int((state["pos_embed"].shape[1] - 1) ** 0.5)
        model = cls(dim=dim, depth=depth, heads=max(1, dim // 64), patch=state["patch_embed.proj.weight"].shape[-1],
                    pretrain_grid=grid)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path} is not a DINOv2 state dict for this size: {err}") from None
        return model.eval().requires_grad_(False)

    def _position(self, grid_h: int, grid_w: int) -> torch.Tensor:
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        side = int(patch_pos.shape[1] ** 0.5)
        if (grid_h, grid_w) != (side, side):
            patch_pos = patch_pos.reshape(1, side, side, self.dim).permute(0, 3, 1, 2)
            patch_pos = F.interpolate(patch_pos.float(), size=(grid_h, grid_w), mode="bicubic", align_corners=False)
            patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, self.dim).to(cls_pos.dtype)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, 3, 14·h, 14·w), normalised → patch tokens (B, h·w, dim)."""
        grid_h, grid_w = x.shape[2] // self.patch, x.shape[3] // self.patch
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self._position(grid_h, grid_w)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)[:, 1:]
