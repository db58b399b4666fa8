"""Implicit-GEMM convolution kernels for the Patch Detailer Head (docs/kernels.md §1 row D), NHWC, on tensor cores.

Every patch is a tiny S×S image with zero padding at its border. Two generic kernels cover every layer, forward
and backward:

``conv_fwd``: out[m, j] = Σ_{tap, c} src[pixel(m)·stride + tap − pad, c] · W[tap, c, j]  (+ bias, SiLU)
    - up to two sources read as one channel range [A | B]: a concatenation that is never materialised (decoder:
      [up-sampled, skip]; bottleneck: [pooled, the patch's DiT token broadcast over pixels by stride 0);
    - every operand is addressed as (image, patch-grid row, patch-grid column, pixel row, pixel column, channel),
      so a source or destination may be an NHWC patch tensor or the (B, C, H, W) image itself (the first conv reads
      the noisy image, the output conv writes the velocity image: no patchify/unpatchify copies);
    - epilogue: bias, the pre-activation stored for the backward, SiLU, the output, and the 2×2 max-pool as a
      second output (output rows are ordered window-major, so a tile holds whole windows);
    - ``SCATTER2``: columns j = (a, b, c) of a ConvTranspose 2×2/2 are scattered to pixel (2y + a, 2x + b);
    - the dgrad of a conv is this kernel on the pre-activation gradient with flipped, transposed weights (negative
      strides), and the dgrad of the ConvTranspose is a 2×2 stride-2 conv.
``conv_wgrad``: dW[tap, c, j] = Σ_m src[pixel(m) + tap − pad, c] · g[m, j], split over m into fp32 partials
    that a second pass sums (deterministic; no atomics).
``act_bwd``: SiLU backward from the saved pre-activation, plus the max-pool backward: the gradient goes to the
    first maximum of each window (as PyTorch does), decided in the forward on the fp32 activations and saved as
    an int8 index (so bf16 ties cannot send it elsewhere).

Offsets are 64-bit. Operands are cast to the compute dtype (bf16 under autocast) in registers; accumulation is
fp32. Interpreted (no GPU), operands are rounded to the compute dtype by hand and multiplied in fp32, because the
interpreter's bf16 conversions and dots are wrong (docs/kernels.md §5).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..checks import gpu_sms, nhwc_empty
from ..triton_support import cast_to, dot_args, operand


class Operand(NamedTuple):
    """Addressing of an NHWC-like operand: offset = patch base + y·sy + x·sx + c·sc, where patch n sits at
    (n // T)·sb + ((n % T) // GW)·sgy + ((n % T) % GW)·sgx."""

    t: torch.Tensor
    T: int
    GW: int
    sb: int
    sgy: int
    sgx: int
    sy: int
    sx: int
    sc: int
    C: int

    def args(self):
        return (self.t, self.T, self.GW, self.sb, self.sgy, self.sgx, self.sy, self.sx, self.sc)


def patches(x: torch.Tensor) -> Operand:
    """(N, C, S, S) patch tensor of any strides (channels_last is NHWC)."""
    sn, sc, sy, sx = x.stride()
    return Operand(x, 1, 1, sn, 0, 0, sy, sx, sc, x.shape[1])


def image(img: torch.Tensor, patch_size: int) -> Operand:
    """The (B, C, H, W) image seen as its (B·T, C, P, P) patches, row-major over the patch grid."""
    B, C, H, W = img.shape
    sb, sc, sh, sw = img.stride()
    P = patch_size
    return Operand(img, (H // P) * (W // P), W // P, sb, P * sh, P * sw, sh, sw, sc, C)


def broadcast(ctx: torch.Tensor) -> Operand:
    """(N, D) per-patch vectors broadcast over every pixel (stride 0): the bottleneck's tiled DiT token."""
    return Operand(ctx, 1, 1, ctx.stride(0), 0, 0, 0, 0, ctx.stride(1), ctx.shape[1])


def _fwd_tiles(device, two_sources: bool):
    """Forward tiles. Two sources (the decoder's [up-sampled | skip]) keep two pipelines' addresses live: 4 warps
    need 252 registers per thread on sm_90 and spill 64 B on sm_80, 8 warps need 120 (docs/kernels.md §8)."""
    if not gpu_sms(device):
        return dict(BLOCK_M=64, BLOCK_N=16, BLOCK_K=16)  # interpreted: few, wide programs (each costs milliseconds)
    return dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, num_warps=8 if two_sources else 4, num_stages=3)


def _wgrad_tiles(device):
    return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=4, num_stages=3) if gpu_sms(device) else \
        dict(BLOCK_M=64, BLOCK_N=16, BLOCK_K=16)


# ---------------------------------------------------------------------------------------------------- kernels
@triton.jit
def _patch_base(n, T, GW, sb, sgy, sgx):
    n = n.to(tl.int64)
    tok = n % T
    return (n // T) * sb + (tok // GW) * sgy + (tok % GW) * sgx


@triton.jit
def _pixels(m, SO, HALF, NP, ORDER: tl.constexpr):
    """(patch, y, x) of output rows m. ORDER 0: patch-major, pixels row-major; 1: window-major (the 4 pixels of
    each 2×2 window consecutive, for the pool epilogue); 2: pixel-major (row m = pixel·NP + patch, so a tile sees
    one pixel position of many patches and every tap is valid or padded for the whole tile: padded taps are
    skipped, e.g. 5 of 9 at 2×2 and 44 of 144 at 4×4)."""
    m = m.to(tl.int64)
    if ORDER == 2:
        p = m // NP
        return m % NP, p // SO, p % SO
    per = SO * SO
    n = m // per
    q = m % per
    if ORDER == 1:
        w = q // 4
        sub = q % 4
        y = (w // HALF) * 2 + sub // 2
        x = (w % HALF) * 2 + sub % 2
    else:
        y = q // SO
        x = q % SO
    return n, y, x


@triton.jit
def _fwd_loop(acc, s_ptr, s_base, s_sy, s_sx, s_sc, C, W_C0, w_ptr, W_BASE, w_sy, w_sx, w_sk, w_sn, rn, nmask,
              y, x, mmask, ky0, ky1, kx0, kx1, SI, STRIDE: tl.constexpr, PAD: tl.constexpr, COMPUTE: tl.constexpr,
              UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc += one source's C channels (weight rows W_C0 …) over the taps [ky0, ky1) × [kx0, kx1), as a single loop
    over (tap, channel block): one software pipeline for the whole reduction instead of one per tap."""
    k_blocks = tl.cdiv(C, BLOCK_K)
    kw = kx1 - kx0
    rk = tl.arange(0, BLOCK_K)
    for it in range(0, (ky1 - ky0) * kw * k_blocks):
        t = it // k_blocks
        ky = ky0 + t // kw
        kx = kx0 + t % kw
        c = (it % k_blocks) * BLOCK_K + rk
        iy = y * STRIDE + (ky - PAD)
        ix = x * STRIDE + (kx - PAD)
        valid = mmask & (iy >= 0) & (iy < SI) & (ix >= 0) & (ix < SI)
        src = tl.load(s_ptr + (s_base + iy * s_sy + ix * s_sx)[:, None] + c[None, :] * s_sc,
                      mask=valid[:, None] & (c < C)[None, :], other=0.0)
        w = tl.load(w_ptr + W_BASE + ky * w_sy + kx * w_sx + (W_C0 + c)[:, None] * w_sk + rn[None, :] * w_sn,
                    mask=(c < C)[:, None] & nmask[None, :], other=0.0)
        acc = tl.dot(operand(src, COMPUTE, UPCAST), operand(w, COMPUTE, UPCAST), acc, input_precision=PRECISION)
    return acc


@triton.jit
def _conv_fwd_kernel(a_ptr, a_T, a_GW, a_sb, a_sgy, a_sgx, a_sy, a_sx, a_sc, CA,
                     b_ptr, b_T, b_GW, b_sb, b_sgy, b_sgx, b_sy, b_sx, b_sc, CB,
                     w_ptr, W_BASE, w_sy, w_sx, w_sk, w_sn, bias_ptr, wo_ptr, bo_ptr, NOUT,
                     o_ptr, o_T, o_GW, o_sb, o_sgy, o_sgx, o_sy, o_sx, o_sc,
                     pre_ptr, pool_ptr, idx_ptr, M, NCOL, COUT, SO, SI, HALF, NP,
                     KS: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, HAS_B: tl.constexpr,
                     HAS_BIAS: tl.constexpr, SILU: tl.constexpr, STORE_PRE: tl.constexpr, POOL: tl.constexpr,
                     ORDER: tl.constexpr, SCATTER2: tl.constexpr, FUSE_OUT: tl.constexpr, COMPUTE: tl.constexpr,
                     UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, BLOCK_O: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    mmask, nmask = rm < M, rn < NCOL
    n, y, x = _pixels(rm, SO, HALF, NP, ORDER)
    a_base = _patch_base(n, a_T, a_GW, a_sb, a_sgy, a_sgx)
    b_base = _patch_base(n, b_T, b_GW, b_sb, b_sgy, b_sgx)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    # the taps that are unpadded for at least one row of the tile: a rectangle [ky0, ky1) × [kx0, kx1) (padded taps
    # of pixel-major tiles are skipped: e.g. 5 of 9 at 2×2)
    y_lo = tl.min(tl.where(mmask, y, SO), axis=0)
    y_hi = tl.max(tl.where(mmask, y, 0), axis=0)
    x_lo = tl.min(tl.where(mmask, x, SO), axis=0)
    x_hi = tl.max(tl.where(mmask, x, 0), axis=0)
    ky0 = tl.maximum(PAD - y_hi * STRIDE, 0)
    ky1 = tl.maximum(tl.minimum(SI + PAD - y_lo * STRIDE, KS), ky0)
    kx0 = tl.maximum(PAD - x_hi * STRIDE, 0)
    kx1 = tl.maximum(tl.minimum(SI + PAD - x_lo * STRIDE, KS), kx0)
    acc = _fwd_loop(acc, a_ptr, a_base, a_sy, a_sx, a_sc, CA, 0, w_ptr, W_BASE, w_sy, w_sx, w_sk, w_sn, rn, nmask,
                    y, x, mmask, ky0, ky1, kx0, kx1, SI, STRIDE, PAD, COMPUTE, UPCAST, PRECISION, BLOCK_K)
    if HAS_B:
        acc = _fwd_loop(acc, b_ptr, b_base, b_sy, b_sx, b_sc, CB, CA, w_ptr, W_BASE, w_sy, w_sx, w_sk, w_sn, rn,
                        nmask, y, x, mmask, ky0, ky1, kx0, kx1, SI, STRIDE, PAD, COMPUTE, UPCAST, PRECISION, BLOCK_K)
    if SCATTER2:  # columns (a, b, c) of a ConvTranspose 2×2/2
        co = rn % COUT
        col_off = (rn // (2 * COUT)) * o_sy + ((rn // COUT) % 2) * o_sx + co * o_sc
        pix_off = (2 * y) * o_sy + (2 * x) * o_sx
    else:
        co = rn
        col_off = co * o_sc
        pix_off = y * o_sy + x * o_sx
    if HAS_BIAS:
        acc += tl.load(bias_ptr + co, mask=nmask, other=0.0).to(tl.float32)[None, :]
    mask = mmask[:, None] & nmask[None, :]
    if STORE_PRE:  # contiguous NHWC (N, SO, SO, NCOL)
        pix = (n * SO + y) * SO + x
        tl.store(pre_ptr + pix[:, None] * NCOL + rn[None, :], cast_to(acc, pre_ptr.dtype.element_ty), mask=mask)
    if SILU:
        acc = acc * tl.sigmoid(acc)
    o_base = _patch_base(n, o_T, o_GW, o_sb, o_sgy, o_sgx)
    if FUSE_OUT:  # the output 1×1 conv on this tile's activations (all channels are here), written to the image
        ro = tl.arange(0, BLOCK_O)
        wo = tl.load(wo_ptr + rn[:, None] * NOUT + ro[None, :], mask=nmask[:, None] & (ro < NOUT)[None, :], other=0.0)
        img = tl.dot(operand(tl.where(mask, acc, 0.0), COMPUTE, UPCAST), operand(wo, COMPUTE, UPCAST),
                     tl.zeros([BLOCK_M, BLOCK_O], dtype=tl.float32), input_precision=PRECISION)
        img += tl.load(bo_ptr + ro, mask=ro < NOUT, other=0.0).to(tl.float32)[None, :]
        tl.store(o_ptr + (o_base + pix_off)[:, None] + (ro * o_sc)[None, :], cast_to(img, o_ptr.dtype.element_ty),
                 mask=mmask[:, None] & (ro < NOUT)[None, :])
    else:
        out = cast_to(acc, o_ptr.dtype.element_ty)
        tl.store(o_ptr + (o_base + pix_off)[:, None] + col_off[None, :], out, mask=mask)
    if POOL:  # window-major rows: each group of 4 is a window; pooled and argmax are contiguous NHWC
        v = tl.reshape(acc, (BLOCK_M // 4, 4, BLOCK_N))  # fp32 activations: the argmax is decided before rounding
        sub = tl.reshape(tl.broadcast_to((rm % 4)[:, None], (BLOCK_M, BLOCK_N)), (BLOCK_M // 4, 4, BLOCK_N))
        nan = v != v  # a NaN is the maximum, as in PyTorch (a diverging run must not pool it away)
        first_nan = tl.min(tl.where(nan, sub, 4), axis=1)
        best = tl.max(tl.where(nan, float("-inf"), v), axis=1)
        first = tl.min(tl.where(v == best[:, None, :], sub, 4), axis=1)  # the first maximum, as PyTorch
        best = tl.where(first_nan < 4, tl.sum(tl.where(nan, v, 0.0), axis=1), best)
        first = tl.where(first_nan < 4, first_nan, first)
        win = (tl.program_id(0) * (BLOCK_M // 4) + tl.arange(0, BLOCK_M // 4)).to(tl.int64)
        wmask = (win < M // 4)[:, None] & nmask[None, :]
        tl.store(pool_ptr + win[:, None] * NCOL + rn[None, :], cast_to(best, pool_ptr.dtype.element_ty), mask=wmask)
        tl.store(idx_ptr + win[:, None] * NCOL + rn[None, :], first.to(tl.int8), mask=wmask)


@triton.jit
def _valid_range(offset, SO, SI, STRIDE: tl.constexpr):
    """[lo, hi) of the output coordinates y with 0 ≤ y·STRIDE + offset < SI (a tap's unpadded rows or columns)."""
    lo = tl.maximum((STRIDE - 1 - offset) // STRIDE, 0)  # offset ≤ 0 here, or lo = 0
    lo = tl.where(offset >= 0, 0, lo)
    top = SI - 1 - offset
    hi = tl.where(top >= 0, tl.minimum(top // STRIDE + 1, SO), 0)
    return lo, tl.maximum(hi, lo)


@triton.jit
def _wgrad_loop(acc, s_ptr, s_T, s_GW, s_sb, s_sgy, s_sgx, s_sy, s_sx, s_sc, cc, cmask,
                g_ptr, g_T, g_GW, g_sb, g_sgy, g_sgx, g_sy, g_sx, g_col, nmask, m_start, m_end, NP, y0, x0, VW, dy, dx,
                STRIDE: tl.constexpr, G_SCATTER2: tl.constexpr, COMPUTE: tl.constexpr, UPCAST: tl.constexpr,
                PRECISION: tl.constexpr, BLOCK_M: tl.constexpr):
    """acc += Σ over the valid (pixel, patch) rows [m_start, m_end) of one source's channels cc (a BLOCK_K vector)
    times the gradient columns: no branch inside, so the loads are software-pipelined (cp.async)."""
    for m0 in range(m_start, m_end, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        mmask = rm < m_end
        pixel = rm // NP
        n = rm % NP
        y = y0 + pixel // VW
        x = x0 + pixel % VW
        s_off = _patch_base(n, s_T, s_GW, s_sb, s_sgy, s_sgx) + (y * STRIDE + dy) * s_sy + (x * STRIDE + dx) * s_sx
        src = tl.load(s_ptr + s_off[None, :] + cc[:, None] * s_sc, mask=mmask[None, :] & cmask[:, None], other=0.0)
        if G_SCATTER2:
            g_pix = (2 * y) * g_sy + (2 * x) * g_sx
        else:
            g_pix = y * g_sy + x * g_sx
        g_off = _patch_base(n, g_T, g_GW, g_sb, g_sgy, g_sgx) + g_pix
        g = tl.load(g_ptr + g_off[:, None] + g_col[None, :], mask=mmask[:, None] & nmask[None, :], other=0.0)
        acc = tl.dot(operand(src, COMPUTE, UPCAST), operand(g, COMPUTE, UPCAST), acc, input_precision=PRECISION)
    return acc


@triton.jit
def _conv_wgrad_kernel(a_ptr, a_T, a_GW, a_sb, a_sgy, a_sgx, a_sy, a_sx, a_sc, CA,
                       b_ptr, b_T, b_GW, b_sb, b_sgy, b_sgx, b_sy, b_sx, b_sc, CB,
                       g_ptr, g_T, g_GW, g_sb, g_sgy, g_sgx, g_sy, g_sx, g_sc,
                       part_ptr, M, NCOL, COUT, SO, SI, NP, SPLITS,
                       KS: tl.constexpr, STRIDE: tl.constexpr, PAD: tl.constexpr, HAS_B: tl.constexpr,
                       G_SCATTER2: tl.constexpr, COMPUTE: tl.constexpr, UPCAST: tl.constexpr,
                       PRECISION: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """One (tap, input-channel block, output-column block, split) tile of dW. Only the output pixels where this
    tap is not padded are visited (a rectangle of pixel positions × every patch, pixel-major), in equal shares per
    split; a channel block reads source a, source b, or (straddling the boundary) both, decided once per program."""
    CIN = CA + CB
    k_blocks = tl.cdiv(CIN, BLOCK_K)
    tap = tl.program_id(0) // k_blocks
    c0 = (tl.program_id(0) % k_blocks) * BLOCK_K
    c = c0 + tl.arange(0, BLOCK_K)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    nmask = rn < NCOL
    if G_SCATTER2:
        g_col = (rn // (2 * COUT)) * g_sy + ((rn // COUT) % 2) * g_sx + (rn % COUT) * g_sc
    else:
        g_col = rn * g_sc
    dy = tap // KS - PAD
    dx = tap % KS - PAD
    y0, y1 = _valid_range(dy, SO, SI, STRIDE)
    x0, x1 = _valid_range(dx, SO, SI, STRIDE)
    VW = tl.maximum(x1 - x0, 1)
    valid_rows = ((y1 - y0) * (x1 - x0)).to(tl.int64) * NP
    per_split = tl.cdiv(tl.cdiv(valid_rows, SPLITS), BLOCK_M) * BLOCK_M
    m_start = tl.program_id(2) * per_split
    m_end = tl.minimum(m_start + per_split, valid_rows)
    acc = tl.zeros([BLOCK_K, BLOCK_N], dtype=tl.float32)
    if c0 < CA:
        acc = _wgrad_loop(acc, a_ptr, a_T, a_GW, a_sb, a_sgy, a_sgx, a_sy, a_sx, a_sc, c, c < CA,
                          g_ptr, g_T, g_GW, g_sb, g_sgy, g_sgx, g_sy, g_sx, g_col, nmask, m_start, m_end, NP, y0, x0,
                          VW, dy, dx, STRIDE, G_SCATTER2, COMPUTE, UPCAST, PRECISION, BLOCK_M)
    if HAS_B:
        if c0 + BLOCK_K > CA:
            acc = _wgrad_loop(acc, b_ptr, b_T, b_GW, b_sb, b_sgy, b_sgx, b_sy, b_sx, b_sc, c - CA,
                              (c >= CA) & (c < CIN), g_ptr, g_T, g_GW, g_sb, g_sgy, g_sgx, g_sy, g_sx, g_col, nmask,
                              m_start, m_end, NP, y0, x0, VW, dy, dx, STRIDE, G_SCATTER2, COMPUTE, UPCAST, PRECISION,
                              BLOCK_M)
    row = ((tl.program_id(2) * KS * KS + tap) * CIN + c).to(tl.int64)
    tl.store(part_ptr + row[:, None] * NCOL + rn[None, :], acc, mask=(c < CIN)[:, None] & nmask[None, :])


@triton.jit
def _act_bwd_kernel(g_ptr, pool_g_ptr, idx_ptr, pre_ptr, dpre_ptr, db_ptr, M, C, SO, HALF,
                    POOL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """dpre = (g + the pooled gradient routed to each window's saved argmax) · SiLU'(pre); contiguous NHWC. The bias
    gradient's fp32 partial sums over this program's rows go to db (programs, C): the bias reduction rides on this
    pass instead of re-reading dpre."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rc = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    n, y, x = _pixels(rm, SO, HALF, 1, POOL)  # window-major when pooling, else patch-major
    offs = ((n * SO + y) * SO + x)[:, None] * C + rc[None, :]
    mask = (rm < M)[:, None] & (rc < C)[None, :]
    d = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if POOL:
        win = (tl.program_id(0) * (BLOCK_M // 4) + tl.arange(0, BLOCK_M // 4)).to(tl.int64)
        wmask = (win < M // 4)[:, None] & (rc < C)[None, :]
        dp = tl.load(pool_g_ptr + win[:, None] * C + rc[None, :], mask=wmask, other=0.0).to(tl.float32)
        first = tl.load(idx_ptr + win[:, None] * C + rc[None, :], mask=wmask, other=0).to(tl.int32)
        sub = tl.reshape(tl.broadcast_to((rm % 4)[:, None], (BLOCK_M, BLOCK_C)), (BLOCK_M // 4, 4, BLOCK_C))
        d += tl.reshape(tl.where(sub == first[:, None, :], dp[:, None, :], 0.0), (BLOCK_M, BLOCK_C))
    z = tl.load(pre_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(z)
    dz = tl.where(mask, d * sig * (1.0 + z * (1.0 - sig)), 0.0)
    tl.store(dpre_ptr + offs, cast_to(dz, dpre_ptr.dtype.element_ty), mask=mask)
    tl.store(db_ptr + tl.program_id(0).to(tl.int64) * C + rc, tl.sum(dz, axis=0), mask=rc < C)


# ---------------------------------------------------------------------------------------------------- launchers
def conv_fwd(a: Operand, b: Operand | None, w: torch.Tensor, w_strides: tuple, bias: torch.Tensor | None,
             out: Operand, *, patches: int, so: int, si: int, ncol: int, cout: int, ks: int, stride: int, pad: int,
             silu: bool, compute: torch.dtype, pre: torch.Tensor | None = None, pool: torch.Tensor | None = None,
             argmax: torch.Tensor | None = None, scatter2: bool = False, w_base: int = 0,
             fuse_out: tuple | None = None) -> None:
    """Launch ``_conv_fwd_kernel``: out (and pre, pool with its int8 argmax) ← conv of [a | b] (module doc).
    ``fuse_out`` = (weight (ncol, n_out) in the compute dtype, bias): ``out`` receives that 1×1 conv of the
    activations instead of the activations (one program holds all ncol channels).

    ``w_strides`` = (ky, kx, input channel, output column) strides of ``w``, ``w_base`` its starting offset.
    """
    M = patches * so * so
    b = b or a._replace(C=0)
    tiles = _fwd_tiles(a.t.device, b.C > 0)
    if fuse_out is not None:
        tiles["BLOCK_N"] = triton.next_power_of_2(max(ncol, 16))
    grid = (triton.cdiv(M, tiles["BLOCK_M"]), triton.cdiv(ncol, tiles["BLOCK_N"]))
    dummy = out.t
    wo, bo = fuse_out if fuse_out is not None else (dummy, dummy)
    _conv_fwd_kernel[grid](
        *a.args(), a.C, *b.args(), b.C, w, w_base, *w_strides, bias if bias is not None else dummy, wo, bo,
        wo.shape[1] if fuse_out is not None else 0, *out.args(),
        pre if pre is not None else dummy, pool if pool is not None else dummy, argmax if pool is not None else dummy,
        M, ncol, cout, so, si, max(so // 2, 1), patches, KS=ks, STRIDE=stride, PAD=pad, HAS_B=int(b.C > 0),
        HAS_BIAS=int(bias is not None), SILU=int(silu), STORE_PRE=int(pre is not None), POOL=int(pool is not None),
        ORDER=1 if pool is not None and so >= 2 else (2 if ks > 1 else 0), SCATTER2=int(scatter2),
        FUSE_OUT=int(fuse_out is not None), BLOCK_O=16, **dot_args(compute), **tiles)


def conv_wgrad(a: Operand, b: Operand | None, g: Operand, *, patches: int, so: int, si: int, ncol: int, cout: int,
               ks: int, stride: int, pad: int, compute: torch.dtype, g_scatter2: bool = False) -> torch.Tensor:
    """dW (ks·ks, Cin, ncol) fp32 = Σ over output pixels of [a | b] at each tap times g (see the module doc)."""
    M = patches * so * so
    b = b or a._replace(C=0)
    cin = a.C + b.C
    tiles = _wgrad_tiles(a.t.device)
    tiles_kn = ks * ks * triton.cdiv(cin, tiles["BLOCK_K"]) * triton.cdiv(ncol, tiles["BLOCK_N"])
    sms = gpu_sms(a.t.device)
    if sms:
        splits = max(1, min(2 * sms // tiles_kn, triton.cdiv(M, 4 * tiles["BLOCK_M"])))  # ≤ 2 programs per SM
    else:
        splits = min(2, triton.cdiv(M, tiles["BLOCK_M"]))
    per_split = triton.cdiv(triton.cdiv(M, splits), tiles["BLOCK_M"]) * tiles["BLOCK_M"]
    splits = triton.cdiv(M, per_split)
    part = torch.empty(splits, ks * ks, cin, ncol, device=a.t.device, dtype=torch.float32)
    grid = (ks * ks * triton.cdiv(cin, tiles["BLOCK_K"]), triton.cdiv(ncol, tiles["BLOCK_N"]), splits)
    _conv_wgrad_kernel[grid](*a.args(), a.C, *b.args(), b.C, *g.args(), part, M, ncol, cout, so, si, patches,
                             splits,
                             KS=ks, STRIDE=stride, PAD=pad, HAS_B=int(b.C > 0), G_SCATTER2=int(g_scatter2),
                             **dot_args(compute), **tiles)
    return part.sum(0)


def act_bwd(g: torch.Tensor, pool_g: torch.Tensor | None, argmax: torch.Tensor | None, pre: torch.Tensor,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradient of the pre-activation, (N, C, S, S) channels_last, from the output gradient g (plus the pooled
    output's gradient ``pool_g`` routed through the forward's ``argmax`` when the layer pools), and the bias
    gradient (C,) in fp32 (deterministic partials summed here). g, pool_g and argmax must be contiguous NHWC."""
    N, C, S, _ = pre.shape
    dpre = nhwc_empty(N, C, S, pre, dtype)
    M = N * S * S
    block_m, block_c = (64, 64) if gpu_sms(pre.device) else (64, 16)
    pool = pool_g is not None
    db = torch.empty(triton.cdiv(M, block_m), C, device=pre.device, dtype=torch.float32)
    _act_bwd_kernel[(triton.cdiv(M, block_m), triton.cdiv(C, block_c))](
        g, pool_g if pool else g, argmax if pool else g, pre, dpre, db, M, C, S, max(S // 2, 1), POOL=int(pool),
        BLOCK_M=block_m, BLOCK_C=block_c)
    return dpre, db.sum(0)
