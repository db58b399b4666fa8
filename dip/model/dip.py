"""DiP: a DiT on large pixel patches plus the Patch Detailer Head (docs/model.md §1–§3).

    model(x, t, y) -> v      x (B, C, H, W) noisy image in [-1, 1], t (B,) in [0, 1] (0 = noise), y (B,) int
                             labels in [0, K] (K = num_classes is the null class), v (B, C, H, W) velocity.

Parameter names are those of the released checkpoint (§5). Initialisation is the authors' (§2) and nothing else.
The fusable ops run through ``dip_kernels``: ``kernels=`` picks the backend (``torch`` / ``triton`` / ``cuda`` /
``auto``) and ``kernel_report()`` says which backend each op uses.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from dip_kernels import KernelTable
from dip_kernels.qk_norm_rope import rope_2d_table

from .detailer_head import PatchDetailerHead
from .fused_layout import to_merged, to_released
from .hub import HubConventions
from .layers import DiPBlock, FinalLayer, LabelEmbedder, PatchEmbedder, TimestepEmbedder
from .validation import validate_inputs


class DiP(HubConventions, nn.Module):
    """The DiP denoiser (velocity prediction). Keyword-only configuration; the presets live in ``dip.presets``;
    ``save_pretrained`` / ``from_pretrained`` follow the Hub conventions (dip/model/hub.py)."""

    def __init__(self, *,
                 image_size: int = 256,            # default resolution: sizes the cached RoPE table, not a limit
                 patch_size: int = 16,             # P: DiT patch and Detailer patch
                 in_channels: int = 3,
                 hidden_size: int = 1152,          # D
                 depth: int = 26,
                 num_heads: int = 16,              # head_dim = D / heads, must be a multiple of 4 (2D RoPE)
                 mlp_ratio: float = 4.0,           # SwiGLU hidden = int(2/3 · mlp_ratio · D)
                 num_classes: int = 1000,          # K; label K is the null class; 0 = unconditional
                 head: str = "detailer",           # "detailer" (DiP) or "dit" (the paper's DiT-only baseline)
                 head_base_width: int = 64,        # Detailer width of the first stage, doubling per stage
                 head_max_width: int = 512,        # cap of the Detailer widths
                 head_stages: int | None = None,   # None: min(4, log2 P)
                 rope_theta: float = 10000.0,
                 rope_span: float = 16.0,          # token grid coordinates span [0, rope_span]
                 time_max_period: float = 10.0,
                 eps: float = 1e-6,
                 kernels=None,                     # backend name or {op: backend}; None: dip_kernels.get_backend()
                 gradient_checkpointing: bool = False,
                 merged_projections: bool = False):  # W1|W3 and all adaLN Linears as single GEMMs (same checkpoints)
        super().__init__()
        sizes = dict(image_size=image_size, patch_size=patch_size, in_channels=in_channels, hidden_size=hidden_size,
                     depth=depth, num_heads=num_heads, head_base_width=head_base_width, head_max_width=head_max_width)
        for name, value in sizes.items():
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size must be divisible by num_heads, got {hidden_size} and {num_heads}")
        head_dim = hidden_size // num_heads
        if head_dim % 4:
            raise ValueError(f"head_dim = hidden_size / num_heads must be a multiple of 4 for 2D RoPE, got {head_dim}")
        if image_size % patch_size:
            raise ValueError(f"image_size must be divisible by patch_size {patch_size}, got {image_size}")
        if num_classes < 0:
            raise ValueError(f"num_classes must be ≥ 0 (0 = unconditional), got {num_classes}")
        if head not in ("detailer", "dit"):
            raise ValueError(f"head must be 'detailer' or 'dit', got {head!r}")
        self.image_size, self.patch_size, self.in_channels = image_size, patch_size, in_channels
        self.hidden_size, self.num_heads, self.num_classes, self.head = hidden_size, num_heads, num_classes, head
        self.rope_theta, self.rope_span = rope_theta, rope_span
        self.gradient_checkpointing = gradient_checkpointing
        self.check_inputs = True  # value checks (label range, t range) cost a device sync; off for graph capture
        self.architecture = dict(  # what save_pretrained writes to config.json: everything that shapes the weights
            **sizes, mlp_ratio=mlp_ratio, num_classes=num_classes, head=head, head_stages=head_stages,
            rope_theta=rope_theta, rope_span=rope_span, time_max_period=time_max_period, eps=eps)

        self.s_embedder = PatchEmbedder(patch_size, in_channels, hidden_size)
        self.t_embedder = TimestepEmbedder(hidden_size, max_period=time_max_period)
        self.y_embedder = LabelEmbedder(num_classes, hidden_size)
        mlp_hidden = int(2 / 3 * mlp_ratio * hidden_size)
        self.merged_projections = False
        self.blocks = nn.ModuleList(DiPBlock(hidden_size, num_heads, mlp_hidden, eps) for _ in range(depth))
        if head == "detailer":
            self.local_decoder = PatchDetailerHead(patch_size, hidden_size, in_channels, base_width=head_base_width,
                                                   max_width=head_max_width, stages=head_stages)
        else:
            self.final_layer = FinalLayer(hidden_size, patch_size, in_channels, eps)
        grid = image_size // patch_size
        cos, sin = rope_2d_table(head_dim, grid, grid, theta=rope_theta, span=rope_span)
        self.register_buffer("rope_cos", cos, persistent=False)  # (T, head_dim/2) for the default size
        self.register_buffer("rope_sin", sin, persistent=False)
        self.initialize_weights()
        self.set_kernels(kernels)
        if merged_projections:
            self.merge_projections()

    def merge_projections(self) -> None:
        """W1|W3 of every block and every block's adaLN Linear(c) become single GEMMs (docs/kernels.md §1, model-level
        wins). Values are kept (a seed gives the same model merged or not) and state dicts keep the released
        layout through hooks (``dip.fused_layout``)."""
        if self.merged_projections:
            return
        linears = [block.adaLN_modulation[0] for block in self.blocks]
        first = linears[0]
        self.adaLN_all = nn.utils.skip_init(nn.Linear, first.in_features, len(linears) * first.out_features,
                                            device=first.weight.device, dtype=first.weight.dtype)
        self.adaLN_all.weight.data.copy_(torch.cat([lin.weight.data for lin in linears]))
        self.adaLN_all.bias.data.copy_(torch.cat([lin.bias.data for lin in linears]))
        for block in self.blocks:
            del block.adaLN_modulation
            block.mlp.merge()
        self.merged_projections = True
        self._register_state_dict_hook(_released_names)
        self.register_load_state_dict_pre_hook(_merged_names)

    def released_layout(self, state: dict) -> dict:
        """``{name: tensor}`` of this model's parameters → the released checkpoint layout (docs/model.md §5), in
        place; the identity unless projections are merged."""
        return to_released(state, "", len(self.blocks)) if self.merged_projections else state

    def model_layout(self, state: dict) -> dict:
        """The inverse of ``released_layout``: released names → this model's parameter names, in place."""
        return to_merged(state, "", len(self.blocks)) if self.merged_projections else state

    def initialize_weights(self) -> None:
        """The authors' initialisation (§2): patch embedding xavier-uniform / zero bias, label table and both
        time-MLP weights N(0, 0.02); every other layer keeps PyTorch's default (adaLN and the head's output conv
        are not zero-initialised)."""
        nn.init.xavier_uniform_(self.s_embedder.proj.weight)
        nn.init.zeros_(self.s_embedder.proj.bias)
        nn.init.normal_(self.y_embedder.embedding_table.weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)

    # ------------------------------------------------------------------------------------------ kernels
    def set_kernels(self, backend) -> None:
        """Choose the ops backend: ``torch``, ``triton``, ``cuda``, ``auto``, None (the process default) or a mixed
        table ``{op: backend}`` (``dip_kernels.KernelTable``)."""
        self.kernels = KernelTable(backend)

    def kernel_report(self, device_type: str | None = None) -> dict:
        """``{op: backend used}`` on ``device_type`` (default: where the parameters are)."""
        return self.kernels.report(device_type or self.s_embedder.proj.weight.device.type)

    # ------------------------------------------------------------------------------------------ forward
    def _rope(self, grid_h: int, grid_w: int, device: torch.device):
        if grid_h == grid_w == self.image_size // self.patch_size:
            return self.rope_cos, self.rope_sin
        return rope_2d_table(self.hidden_size // self.num_heads, grid_h, grid_w, theta=self.rope_theta,
                             span=self.rope_span, device=device)

    def _block(self, block: DiPBlock, *args):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None, *,
                features_block: int = 0):
        """x (B, C, H, W), t (B,), y (B,) or None (= the null class) → velocity (B, C, H, W).

        ``features_block`` = k ≥ 1 also returns the residual stream after block k (B, T, D), for REPA (§6).
        """
        y = validate_inputs(self, x, t, y)
        ops = self.kernels.on(x.device.type)
        B, _, H, W = x.shape
        P = self.patch_size
        tokens = self.s_embedder(x, ops)  # (B, T, D)
        t_emb = self.t_embedder(t)  # (B, D)
        c = F.silu(t_emb + self.y_embedder(y))  # (B, D)
        cos, sin = self._rope(H // P, W // P, x.device)
        if self.merged_projections:
            conds = self.adaLN_all(c).chunk(len(self.blocks), dim=-1)  # one GEMM for every block: (B, 6D) each
        else:
            conds = [c] * len(self.blocks)  # each block applies its own adaLN Linear
        h, branch, gate, features = tokens, None, None, None
        for k, (block, cond) in enumerate(zip(self.blocks, conds), start=1):
            h, branch, gate = self._block(block, h, branch, gate, cond, cos, sin, ops)
            if k == features_block:
                features = h + gate.unsqueeze(1) * branch  # the block's output, its last update applied
        if self.head == "dit":
            v = self.final_layer(h, branch, gate, c, ops, H, W)
        else:
            s = ops.final_context(h, branch, gate, t_emb)  # (B, T, D): s = SiLU(x + t_emb)
            v = self.local_decoder(x, s, ops)
        return (v, features) if features_block else v


def _released_names(module: DiP, state: dict, prefix: str, local_metadata) -> dict:
    """state_dict hook of merged models: write the released layout (docs/model.md §5)."""
    return to_released(state, prefix, len(module.blocks))


def _merged_names(module: DiP, state: dict, prefix: str, *args) -> None:
    """load_state_dict pre-hook of merged models: read the released layout."""
    to_merged(state, prefix, len(module.blocks))
