"""Op E's Triton kernels and their launchers: the patch embedding as one GEMM whose A operand is gathered straight
from the image (docs/kernels.md §1, op E): no unfold/patchify copy; bias added in the epilogue.

    tokens[m, n] = Σ_k img[b, c, gy·P + i, gx·P + j] · W[n, k] + bias[n]
    m = b·T + gy·GW + gx (row-major tokens),  k = c·P² + i·P + j (the (c, i, j) patch-vector order)

Backward: dW = dTokensᵀ·A and dbias = Σ_m dTokens re-gather A from the image (one kernel over 128 × 128 output
tiles, the token rows split so the tiles fill the GPU, fp32 partials summed by a deterministic second pass, no
atomics); dImg = dTokens·W is scattered back through the same address map
(patches do not overlap, so plain stores), computed only when the image requires a gradient.

Operands are cast to the compute dtype (bf16 under bf16 autocast) in registers after loading; accumulation is
fp32. Interpreted, operands are rounded to the compute dtype by hand and multiplied in fp32 (docs/kernels.md §5).
The custom ops are in ``op.py``.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..checks import device_guard, gpu_sms
from ..triton_support import cast_to, dot_args, operand


def _tiles(device: torch.device):
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_warps): tensor-core tiles on GPU, tiny tiles when interpreted."""
    return (128, 128, 32, 8) if gpu_sms(device) else (16, 16, 16, 1)


def _wgrad_tiles(device: torch.device):
    """The weight gradient's (rows per step, D tile, C·P² tile, warps): a 128 × 128 output tile."""
    return (64, 128, 128, 8) if gpu_sms(device) else (16, 16, 16, 1)


@triton.jit
def _patch_rows(m, T, GW, P, s_b, s_h, s_w):
    """Image offset of each token's patch origin (int64)."""
    m = m.to(tl.int64)
    tok = m % T
    return (m // T) * s_b + (tok // GW) * P * s_h + (tok % GW) * P * s_w


@triton.jit
def _patch_cols(k, P, s_c, s_h, s_w):
    """Image offset of patch-vector entry k = c·P² + i·P + j inside a patch."""
    return (k // (P * P)) * s_c + ((k // P) % P) * s_h + (k % P) * s_w


@triton.jit
def _fwd_kernel(img_ptr, w_ptr, bias_ptr, out_ptr, M, N, K, T, GW, P, s_b, s_c, s_h, s_w,
                COMPUTE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_off = _patch_rows(rm, T, GW, P, s_b, s_h, s_w)
    acc = tl.zeros([BLOCK_M, BLOCK_N], dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        rk = k0 + tl.arange(0, BLOCK_K)
        a = tl.load(img_ptr + row_off[:, None] + _patch_cols(rk, P, s_c, s_h, s_w)[None, :],
                    mask=(rm < M)[:, None] & (rk < K)[None, :], other=0.0)
        w = tl.load(w_ptr + rn[None, :].to(tl.int64) * K + rk[:, None], mask=(rk < K)[:, None] & (rn < N)[None, :],
                    other=0.0)
        acc = tl.dot(operand(a, COMPUTE, UPCAST), operand(w, COMPUTE, UPCAST), acc, input_precision=PRECISION)
    acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + rm[:, None].to(tl.int64) * N + rn[None, :]
    tl.store(out, cast_to(acc, out_ptr.dtype.element_ty), mask=(rm < M)[:, None] & (rn < N)[None, :])


@triton.jit
def _bwd_weight_kernel(dout_ptr, img_ptr, dw_ptr, db_ptr, M, N, K, T, GW, P, s_b, s_c, s_h, s_w, M_PER_SPLIT,
                       COMPUTE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    """fp32 partials of dW (split, N, K) and dbias (split, N) over the rows [split·M_PER_SPLIT, …): each program owns
    a BLOCK_N × BLOCK_K output tile of one split (wide tiles: dTokens is read K / BLOCK_K times, the image
    N / BLOCK_N times)."""
    rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    split = tl.program_id(2)
    col_off = _patch_cols(rk, P, s_c, s_h, s_w)
    acc = tl.zeros([BLOCK_N, BLOCK_K], dtype=tl.float32)
    acc_b = tl.zeros([BLOCK_N], dtype=tl.float32)
    m_end = tl.minimum(split * M_PER_SPLIT + M_PER_SPLIT, M)
    for m0 in range(split * M_PER_SPLIT, m_end, BLOCK_M):
        rm = m0 + tl.arange(0, BLOCK_M)
        g = tl.load(dout_ptr + rm[None, :].to(tl.int64) * N + rn[:, None],
                    mask=(rn < N)[:, None] & (rm < m_end)[None, :], other=0.0)  # (BLOCK_N, BLOCK_M) = dTokensᵀ tile
        a = tl.load(img_ptr + _patch_rows(rm, T, GW, P, s_b, s_h, s_w)[:, None] + col_off[None, :],
                    mask=(rm < m_end)[:, None] & (rk < K)[None, :], other=0.0)
        acc = tl.dot(operand(g, COMPUTE, UPCAST), operand(a, COMPUTE, UPCAST), acc, input_precision=PRECISION)
        acc_b += tl.sum(g.to(tl.float32), axis=1)
    part = split.to(tl.int64) * N
    tl.store(dw_ptr + (part + rn[:, None]) * K + rk[None, :], acc, mask=(rn < N)[:, None] & (rk < K)[None, :])
    if tl.program_id(1) == 0:
        tl.store(db_ptr + part + rn, acc_b, mask=rn < N)


@triton.jit
def _bwd_input_kernel(dout_ptr, w_ptr, dimg_ptr, M, N, K, T, GW, P, s_b, s_c, s_h, s_w,
                      COMPUTE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_M, BLOCK_K], dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        rn = n0 + tl.arange(0, BLOCK_N)
        g = tl.load(dout_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], mask=(rm < M)[:, None] & (rn < N)[None, :],
                    other=0.0)
        w = tl.load(w_ptr + rn[:, None].to(tl.int64) * K + rk[None, :], mask=(rn < N)[:, None] & (rk < K)[None, :],
                    other=0.0)
        acc = tl.dot(operand(g, COMPUTE, UPCAST), operand(w, COMPUTE, UPCAST), acc, input_precision=PRECISION)
    dst = dimg_ptr + _patch_rows(rm, T, GW, P, s_b, s_h, s_w)[:, None] + _patch_cols(rk, P, s_c, s_h, s_w)[None, :]
    tl.store(dst, cast_to(acc, dimg_ptr.dtype.element_ty), mask=(rm < M)[:, None] & (rk < K)[None, :])


def _geometry(img: torch.Tensor, P: int):
    B, C, H, W = img.shape
    return B * (H // P) * (W // P), C * P * P, (H // P) * (W // P), W // P


def launch_fwd(img, weight, bias, out, patch_size, compute_dtype) -> None:
    """tokens (B, T, D) ← the image's patch vectors · Wᵀ + bias."""
    M, K, T, GW = _geometry(img, patch_size)
    N = weight.shape[0]
    bm, bn, bk, warps = _tiles(img.device)
    with device_guard(img):
        _fwd_kernel[(triton.cdiv(M, bm), triton.cdiv(N, bn))](
            img, weight, bias, out, M, N, K, T, GW, patch_size, *img.stride(), **dot_args(compute_dtype),
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps)


def _wgrad_split(M: int, tiles: int, block_m: int, device) -> int:
    """Row splits of the weight gradient: output tiles × splits ≤ one program per SM (a 128 × 128 fp32 tile over 8
    warps takes ~164 registers a thread: one program fits an SM; 2 splits with the small geometry, so the
    interpreter tests the partial sums), each split at least 4 row blocks."""
    sms = gpu_sms(device)
    wanted = max(1, sms // tiles) if sms else 2
    return max(1, min(wanted, triton.cdiv(M, 4 * block_m)))


def launch_bwd_weight(dout, img, weight, patch_size, compute_dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 (dweight (D, C·P²), dbias (D,)) from the dense token gradient, re-gathering the image: split over the
    token rows into partials summed in a deterministic second pass."""
    M, K, T, GW = _geometry(img, patch_size)
    N = weight.shape[0]
    bm, bn, bk, warps = _wgrad_tiles(img.device)
    grid_nk = (triton.cdiv(N, bn), triton.cdiv(K, bk))
    splits = _wgrad_split(M, grid_nk[0] * grid_nk[1], bm, img.device)
    per_split = triton.cdiv(triton.cdiv(M, splits), bm) * bm
    splits = triton.cdiv(M, per_split)
    dw = torch.empty(splits, N, K, device=img.device, dtype=torch.float32)
    db = torch.empty(splits, N, device=img.device, dtype=torch.float32)
    with device_guard(img):
        _bwd_weight_kernel[(*grid_nk, splits)](
            dout, img, dw, db, M, N, K, T, GW, patch_size, *img.stride(), per_split, **dot_args(compute_dtype),
            BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_warps=warps)
    return dw.sum(0), db.sum(0)


def launch_bwd_input(dout, weight, dimg, patch_size, compute_dtype) -> None:
    """dimg ← dTokens · W scattered back through the patch address map."""
    M, K, T, GW = _geometry(dimg, patch_size)
    N = weight.shape[0]
    bm, bn, bk, warps = _tiles(dimg.device)
    with device_guard(dimg):
        _bwd_input_kernel[(triton.cdiv(M, bm), triton.cdiv(K, bk))](
            dout, weight, dimg, M, N, K, T, GW, patch_size, *dimg.stride(), **dot_args(compute_dtype),
            BLOCK_M=bm, BLOCK_N=bk, BLOCK_K=bk, num_warps=warps)
