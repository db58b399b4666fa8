"""The reference ops against independent formulas, and the bf16-autocast precision chain of docs/model.md §7b."""
import importlib.util
import math

import pytest
import torch

from dip.model.layers import TimestepEmbedder
from dip_kernels.block_boundary import block_boundary, modulated_norm
from dip_kernels.detailer import detailer_bottleneck, detailer_decoder, detailer_encoder
from dip_kernels.final_context import final_context
from dip_kernels.qk_norm_rope import qk_norm_rope, rope_2d_table


def rnd(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.5 + 2 * torch.randn(*shape, generator=g)).to(dtype)


def test_rope_table_is_the_interleaved_2d_rotation():
    h, gh, gw = 8, 3, 2
    cos, sin = rope_2d_table(h, gh, gw)
    f = [10000 ** (-4 * k / h) for k in range(h // 4)]
    ys, xs = [16 * i / (gh - 1) for i in range(gh)], [16 * j / (gw - 1) for j in range(gw)]
    for token in range(gh * gw):
        y, x = ys[token // gw], xs[token % gw]  # row-major tokens
        angles = [a for k in range(h // 4) for a in (x * f[k], y * f[k])]
        torch.testing.assert_close(cos[token], torch.tensor([math.cos(a) for a in angles]))
        torch.testing.assert_close(sin[token], torch.tensor([math.sin(a) for a in angles]))
    with pytest.raises(ValueError, match="head_dim % 4"):
        rope_2d_table(6, 2, 2)


def test_qk_norm_rope_is_complex_rotation_of_rmsnormed_heads():
    B, T, H, hd = 2, 6, 3, 8
    qkv = rnd(B, T, 3 * H * hd)
    qw, kw = rnd(hd, seed=1), rnd(hd, seed=2)
    cos, sin = rope_2d_table(hd, 3, 2)
    q, k, v = qk_norm_rope(qkv, qw, kw, cos, sin, H)
    heads = qkv.view(B, T, 3, H, hd)
    rot = torch.polar(torch.ones_like(cos), torch.atan2(sin, cos))  # (T, hd/2) complex
    for out, idx, w in ((q, 0, qw), (k, 1, kw)):
        x = heads[:, :, idx].transpose(1, 2).double()  # (B, H, T, hd)
        x = x / x.square().mean(-1, keepdim=True).add(1e-6).sqrt() * w.double()
        want = torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2)).contiguous()) * rot).flatten(-2)
        torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(v, heads[:, :, 2].transpose(1, 2), rtol=0, atol=0)


def test_time_embedding_cos_first_max_period_10():
    emb = TimestepEmbedder(4, frequency_size=8)
    t = torch.tensor([0.3])
    f = torch.tensor([math.exp(-math.log(10) * k / 4) for k in range(4)])
    torch.testing.assert_close(emb.freqs, f)
    want = torch.cat([torch.cos(0.3 * f), torch.sin(0.3 * f)])[None]
    torch.testing.assert_close(emb(t), emb.mlp(want))


def test_block_boundary_formula_fp32():
    B, T, D = 2, 5, 16
    res, br, w = rnd(B, T, D), rnd(B, T, D, seed=1), rnd(D, seed=2)
    mod = rnd(B, 6 * D, seed=3)
    shift, scale, gate = mod[:, :D], mod[:, D:2 * D], mod[:, 2 * D:3 * D]  # strided views
    r, h = block_boundary(res, br, gate, w, shift, scale)
    want_r = res + gate[:, None] * br
    n = want_r / want_r.square().mean(-1, keepdim=True).add(1e-6).sqrt() * w
    torch.testing.assert_close(r, want_r)
    torch.testing.assert_close(h, n * (1 + scale[:, None]) + shift[:, None], rtol=1e-5, atol=1e-5)
    _, h_ln = block_boundary(res, br, gate, None, shift, scale, norm="layer")
    ln = (want_r - want_r.mean(-1, keepdim=True)) / want_r.var(-1, unbiased=False, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(h_ln, ln * (1 + scale[:, None]) + shift[:, None], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="norm must be"):
        modulated_norm(res, w, shift, scale, norm="group")


def test_precision_chain_under_bf16_autocast():
    """§7b: residual bf16, RMSNorm output fp32 (bf16-rounded normalised value × fp32 weight), modulate fp32."""
    B, T, D = 2, 4, 8
    bf = torch.bfloat16
    res, br, gate = rnd(B, T, D, dtype=bf), rnd(B, T, D, dtype=bf, seed=1), rnd(B, D, dtype=bf, seed=2)
    shift, scale, w = rnd(B, D, dtype=bf, seed=3), rnd(B, D, dtype=bf, seed=4), rnd(D, seed=5)
    with torch.autocast("cpu", dtype=bf):
        r, h = block_boundary(res, br, gate, w, shift, scale)
        s = final_context(res, br, gate, rnd(B, D, dtype=bf, seed=6))
    assert r.dtype == bf and h.dtype == torch.float32 and s.dtype == bf
    want_r = (res + (gate[:, None] * br))  # bf16 rounding after the product and after the sum
    torch.testing.assert_close(r, want_r, rtol=0, atol=0)
    rf = want_r.float()
    normed = (rf * torch.rsqrt(rf.square().mean(-1, keepdim=True) + 1e-6)).to(bf)
    torch.testing.assert_close(h, normed * w * (1 + scale[:, None]) + shift[:, None], rtol=0, atol=0)
    with torch.autocast("cpu", dtype=bf):
        q, k, v = qk_norm_rope(rnd(B, T, 3 * D, dtype=bf), w[:4], w[4:], *rope_2d_table(4, 2, 2), 2)  # 2 heads of 4
    assert q.dtype == k.dtype == torch.float32 and v.dtype == bf


def test_detailer_stages_shapes_and_concat_order():
    x = rnd(3, 4, 8, 8)
    w, b = rnd(6, 4, 3, 3), rnd(6)
    skip, pooled = detailer_encoder(x, w, b)
    assert skip.shape == (3, 6, 8, 8) and pooled.shape == (3, 6, 4, 4)
    torch.testing.assert_close(pooled[0, 0, 0, 0], skip[0, 0, :2, :2].max())
    ctx = rnd(3, 5)
    wb = torch.zeros(6, 11, 1, 1)
    wb[0, 6] = 1.0  # output channel 0 reads the first context channel: context comes after the pooled features
    y = detailer_bottleneck(pooled, ctx, wb, torch.zeros(6))
    torch.testing.assert_close(y[:, 0], torch.nn.functional.silu(ctx[:, 0, None, None]).expand(3, 4, 4))
    up_w = torch.zeros(6, 2, 2, 2)
    wd = torch.zeros(1, 8, 3, 3)
    wd[0, 2, 1, 1] = 1.0  # input channel 2 = first skip channel: [up-sampled, skip] order
    out = detailer_decoder(pooled, skip[:, :6], up_w, torch.zeros(2), wd, torch.zeros(1))
    torch.testing.assert_close(out[:, 0], torch.nn.functional.silu(skip[:, 0]))


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is None or not torch.cuda.is_available(),
                    reason="flash-attn is an optional extra; its path runs only where it imports on a GPU")
def test_flash_attention_matches_sdpa():
    from dip_kernels.attention import flash_attention, sdpa

    q, k, v = (rnd(2, 3, 64, 72, dtype=torch.bfloat16, seed=s).cuda() for s in range(3))
    ref = sdpa(q.double(), k.double(), v.double())
    eager_err = (sdpa(q, k, v).double() - ref).abs().max()
    assert (flash_attention(q, k, v).double() - ref).abs().max() <= 2 * eager_err + 5e-2
