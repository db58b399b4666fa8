"""One small case per registered op, and value-preserving memory layouts for its inputs and upstream gradients.

Shared by the layout property tests and the NaN/inf tests: every op is called the way the model calls it, with
fp32 leaves whose values stay fixed while the tensors the op actually sees are re-laid out (transposed memory,
row-strided views of wider buffers, stride-0 expanded rows, storage offsets that break 16-byte alignment,
channels_last). The re-layouts are differentiable copies/views, so gradients are compared on the leaves.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from dip_kernels import implementations
from dip_kernels.qk_norm_rope import rope_2d_table
from tests.support.parity import inputs

LAYOUTS = ("dense", "transposed", "row_strided", "expanded", "offset", "channels_last")


@dataclass
class Case:
    """An op's arguments: ``leaves`` (name → shape, value scale, √n of its gradient sums), the call, and the
    shapes of the outputs that take an upstream gradient."""

    leaves: dict
    call: Callable            # call(impl, tensors: dict) → tuple of outputs
    out_shapes: list
    out_sums: list = field(default_factory=list)  # terms summed into each output value (√n parity scaling)
    frozen: tuple = ()        # leaves that take no gradient (as the model calls the op)


def _conv_w(cout, cin, k):
    return ((cout, cin, k, k), 1.0 / (cin * k * k) ** 0.5, 1)


def _tuple(x):
    return x if isinstance(x, tuple) else (x,)


def case(op: str) -> Case:
    """The case of ``op`` (small shapes; D not a power of two, odd token counts)."""
    B, T, D, H = 2, 3, 24, 2
    rows = B * T
    if op in ("block_boundary", "modulated_norm"):
        leaves = {"residual": ((B, T, D), 1.0, D), "branch": ((B, T, D), 1.0, D), "gate": ((B, D), 0.1, T),
                  "weight": ((D,), 1.0, rows), "shift": ((B, D), 0.1, T), "scale": ((B, D), 0.1, T * D)}
        if op == "modulated_norm":
            del leaves["branch"], leaves["gate"]
            return Case(leaves, lambda f, t: _tuple(f(t["residual"], t["weight"], t["shift"], t["scale"])),
                        [(B, T, D)], [D])
        return Case(leaves, lambda f, t: f(t["residual"], t["branch"], t["gate"], t["weight"], t["shift"],
                                           t["scale"]), [(B, T, D)] * 2, [1, D])
    if op == "final_context":
        leaves = {"residual": ((B, T, D), 1.0, 1), "branch": ((B, T, D), 1.0, 1), "gate": ((B, D), 0.1, T),
                  "t_emb": ((B, D), 1.0, T)}
        return Case(leaves, lambda f, t: _tuple(f(t["residual"], t["branch"], t["gate"], t["t_emb"])), [(B, T, D)])
    if op == "qk_norm_rope":
        hd, gh, gw = 8, 1, 3
        cos, sin = rope_2d_table(hd, gh, gw)
        leaves = {"qkv": ((B, T, 3 * H * hd), 1.0, hd), "q_weight": ((hd,), 1.0, rows * H),
                  "k_weight": ((hd,), 1.0, rows * H)}
        return Case(leaves, lambda f, t: f(t["qkv"], t["q_weight"], t["k_weight"], cos.to(t["qkv"].device),
                                           sin.to(t["qkv"].device), H), [(B, H, T, hd)] * 3, [hd] * 3)
    if op == "swiglu":
        leaves = {"a": ((B, T, 20), 1.0, 1), "b": ((B, T, 20), 1.0, 1)}
        return Case(leaves, lambda f, t: _tuple(f(t["a"], t["b"])), [(B, T, 20)])
    P, C, Hh, Ww = 4, 3, 8, 12
    N = B * (Hh // P) * (Ww // P)
    if op == "patch_embed":
        leaves = {"img": ((B, C, Hh, Ww), 1.0, D), "weight": ((D, C * P * P), 0.1, N), "bias": ((D,), 0.1, N)}
        return Case(leaves, lambda f, t: _tuple(f(t["img"], t["weight"], t["bias"], P)), [(B, N // B, D)],
                    [C * P * P])
    if op == "patchify":
        return Case({"img": ((B, C, Hh, Ww), 1.0, 1)}, lambda f, t: _tuple(f(t["img"], P)), [(N, C, P, P)])
    if op == "unpatchify":
        return Case({"patches": ((N, C, P, P), 1.0, 1)}, lambda f, t: _tuple(f(t["patches"], B, Hh, Ww)),
                    [(B, C, Hh, Ww)])
    c1, c2, dc = 4, 6, 5
    if op == "detailer_stem":
        leaves = {"img": ((B, C, Hh, Ww), 1.0, 9 * c1), "weight": _conv_w(c1, C, 3), "bias": ((c1,), 0.1, 1)}
        leaves["weight"] = (*leaves["weight"][:2], N * P * P)
        leaves["bias"] = ((c1,), 0.1, N * P * P)
        return Case(leaves, lambda f, t: f(t["img"], P, t["weight"], t["bias"]),
                    [(N, c1, P, P), (N, c1, P // 2, P // 2)], [9 * C] * 2, frozen=("img",))
    S = 4
    if op == "detailer_encoder":
        leaves = {"x": ((N, c1, S, S), 1.0, 9 * c2), "weight": (*_conv_w(c2, c1, 3)[:2], N * S * S),
                  "bias": ((c2,), 0.1, N * S * S)}
        return Case(leaves, lambda f, t: f(t["x"], t["weight"], t["bias"]),
                    [(N, c2, S, S), (N, c2, S // 2, S // 2)], [9 * c1] * 2)
    if op == "detailer_bottleneck":
        r = 1
        leaves = {"pooled": ((N, c2, r, r), 1.0, c2), "context": ((N, dc), 1.0, c2),
                  "weight": (*_conv_w(c2, c2 + dc, 1)[:2], N), "bias": ((c2,), 0.1, N)}
        return Case(leaves, lambda f, t: _tuple(f(t["pooled"], t["context"], t["weight"], t["bias"])),
                    [(N, c2, r, r)], [c2 + dc])
    r, cs, cout = 2, 4, 3
    dec = {"x": ((N, c2, r, r), 1.0, 9 * cout * 4), "skip": ((N, cs, 2 * r, 2 * r), 1.0, 9 * cout),
           "up_weight": ((c2, c2, 2, 2), 0.3, N * r * r), "up_bias": ((c2,), 0.1, N * 4 * r * r),
           "weight": (*_conv_w(cout, c2 + cs, 3)[:2], N * 4 * r * r), "bias": ((cout,), 0.1, N * 4 * r * r)}
    dec_args = ("x", "skip", "up_weight", "up_bias", "weight", "bias")
    if op == "detailer_decoder":
        return Case(dec, lambda f, t: _tuple(f(*(t[k] for k in dec_args))), [(N, cout, 2 * r, 2 * r)],
                    [9 * (c2 + cs)])
    Hd, Wd = 2 * r * (Hh // P), 2 * r * (Ww // P)  # the image the last stage writes: patches of 2r
    if op == "detailer_decoder_output":
        leaves = {**dec, "out_weight": ((C, cout, 1, 1), 0.5, N * 4 * r * r), "out_bias": ((C,), 0.1, N * 16)}
        return Case(leaves, lambda f, t: _tuple(f(*(t[k] for k in dec_args), t["out_weight"], t["out_bias"], B,
                                                  Hd, Wd)), [(B, C, Hd, Wd)], [9 * (c2 + cs) * cout])
    if op == "detailer_output":
        leaves = {"y": ((N, c2, 2 * r, 2 * r), 1.0, C), "weight": ((C, c2, 1, 1), 0.5, N * 16),
                  "bias": ((C,), 0.1, N * 16)}
        return Case(leaves, lambda f, t: _tuple(f(t["y"], t["weight"], t["bias"], B, Hd, Wd)), [(B, C, Hd, Wd)],
                    [c2])
    raise KeyError(op)


OPS = ("block_boundary", "modulated_norm", "final_context", "qk_norm_rope", "swiglu", "patch_embed", "patchify",
       "unpatchify", "detailer_stem", "detailer_encoder", "detailer_bottleneck", "detailer_decoder",
       "detailer_decoder_output", "detailer_output")


def kernel_pairs(backends=("triton", "cuda")) -> list:
    """Every (op, backend) with a kernel implementation registered in this process."""
    return [(op, b) for op in OPS for b in backends if b in implementations(op)]


def applicable(layout: str, shape: tuple) -> bool:
    """Whether ``layout`` means something for a tensor of ``shape``."""
    if layout == "channels_last":
        return len(shape) == 4
    if layout in ("transposed", "expanded"):
        return len(shape) >= 2 and shape[0] > 1
    return True


def relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """The values of ``t`` (or, for ``expanded``, its first row repeated) in ``layout`` memory; differentiable."""
    if layout == "dense":
        return t
    if layout == "transposed":  # reversed memory order: every stride differs from the dense ones
        rev = tuple(range(t.dim() - 1, -1, -1))
        return t.permute(rev).contiguous().permute(rev)
    if layout == "row_strided":  # a view of a wider buffer (the last dim padded, or every other element for 1-D)
        if t.dim() == 1:
            return torch.stack([t, torch.zeros_like(t)], dim=1)[:, 0]
        return F.pad(t, (0, 3))[..., : t.shape[-1]]
    if layout == "expanded":  # stride 0 along the first dim
        return t[:1].expand(t.shape)
    if layout == "offset":  # storage offset of one element: no longer 16-byte aligned
        return torch.cat([t.new_zeros(1), t.flatten()])[1:].view(t.shape)
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last)
    raise ValueError(layout)


def leaves_of(c: Case, device, dtype=torch.float32, seed=0) -> dict:
    """Fresh leaves with non-zero-mean values (parity.inputs) times each leaf's scale, requiring grad."""
    return {name: (scale * inputs(*shape, device=device, seed=seed + i)).to(dtype).requires_grad_(name not in c.frozen)
            for i, (name, (shape, scale, _)) in enumerate(c.leaves.items())}
