"""Op D in Triton: the Patch Detailer Head's stages as functional custom ops (docs/kernels.md §1 row D, §4).

Op boundaries are those of ``dip_kernels.detailer`` (one forward op and one backward op per stage; no buffer
crosses an op boundary). Activations are (N, C, S, S) tensors in channels_last memory (NHWC), which the
reference ops accept too. Inside each stage (kernels in ``conv_triton``):

- stem / encoder: conv3×3 + bias + SiLU with the 2×2 max-pool as a second output; the stem reads the noisy
  image itself. Saved for the backward: the input, the pre-activation and each window's int8 argmax.
- bottleneck: conv1×1 over [pooled, the DiT token] as two K sources (the token broadcast by stride 0).
- decoder: ConvTranspose 2×2/2 as a GEMM scattering into the up-sampled positions, then conv3×3 + SiLU over
  [up-sampled, skip] as two K sources (the concatenation is never materialised).
- output: conv1×1 writing the (B, C, H, W) velocity image directly.
Backward per stage: SiLU (and max-pool) backward from the saved pre-activation, dgrad as a conv with flipped,
transposed weights, wgrad as split-K fp32 partials summed deterministically, bias gradients as fp32 sums.

- last stage: the last decoder with the output conv1×1 in its epilogue (its activations are never stored).
Padded taps are skipped (pixel-major tiles, see ``conv_triton``). Not yet done: autotuned tile shapes
(they need the GPU).
"""
from __future__ import annotations

import torch

from ..checks import nhwc_empty, pooled_stage_grads, to_nhwc
from .conv_triton import Operand, act_bwd, broadcast, conv_fwd, conv_wgrad, image, patches


def _conv_weight(w: torch.Tensor, dtype: torch.dtype):
    """(Cout, Cin, k, k) → (k, k, Cin, Cout) in ``dtype`` and its (ky, kx, in, out) strides."""
    wk = w.permute(2, 3, 1, 0).contiguous().to(dtype)
    return wk, (wk.stride(0), wk.stride(1), wk.stride(2), 1)


def _dgrad_weight(wk: torch.Tensor):
    """Flipped taps and swapped channel roles of a prepared (k, k, Cin, Cout) weight: (base, strides)."""
    k = wk.shape[0]
    return (k - 1) * (wk.stride(0) + wk.stride(1)), (-wk.stride(0), -wk.stride(1), 1, wk.stride(2))


def _weight_grad(dw: torch.Tensor, k: int, cin: int, cout: int, dtype: torch.dtype) -> torch.Tensor:
    """(k·k, Cin, Cout) fp32 sums → (Cout, Cin, k, k) in the weight's dtype."""
    return dw.view(k, k, cin, cout).permute(3, 2, 0, 1).contiguous().to(dtype)


def _bias_grad(dpre: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.sum(dpre, (0, 2, 3), dtype=torch.float32).to(dtype)


def _geometry(x: torch.Tensor, patch_size: int):
    """(patches N, size S) of a (N, C, S, S) tensor, or of an image's patches when patch_size > 0."""
    if patch_size:
        B, _, H, W = x.shape
        return B * (H // patch_size) * (W // patch_size), patch_size
    return x.shape[0], x.shape[-1]


def _source(x: torch.Tensor, patch_size: int):
    return image(x, patch_size) if patch_size else patches(x)


def _split_channels(N: int, ca: int, cb: int, S: int, like: torch.Tensor, dtype: torch.dtype):
    """One NHWC buffer of ca + cb channels and its two channel views (gradients of a two-source conv)."""
    whole = nhwc_empty(N, ca + cb, S, like, dtype)
    return whole, whole[:, :ca], whole[:, ca:]


# ---------------------------------------------------------------------------------------------------- encoder
@torch.library.custom_op("dip::detailer_encoder_fwd", mutates_args=())
def encoder_fwd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, patch_size: int,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(skip, pooled, pre-activation, int8 argmax of each pooling window) of conv3×3 + SiLU + maxpool on patches,
    or on an image's patches."""
    N, S = _geometry(x, patch_size)
    cout = weight.shape[0]
    skip, pooled, pre, argmax = _encoder_outputs(N, cout, S, x, dtype)
    wk, ws = _conv_weight(weight, dtype)
    conv_fwd(_source(x, patch_size), None, wk, ws, bias, patches(skip), patches=N, so=S, si=S, ncol=cout, cout=cout,
             ks=3, stride=1, pad=1, silu=True, compute=dtype, pre=pre, pool=pooled, argmax=argmax)
    return skip, pooled, pre, argmax


def _encoder_outputs(N: int, cout: int, S: int, like: torch.Tensor, dtype: torch.dtype):
    return (nhwc_empty(N, cout, S, like, dtype), nhwc_empty(N, cout, S // 2, like, dtype),
            nhwc_empty(N, cout, S, like, dtype), nhwc_empty(N, cout, S // 2, like, torch.int8))


@encoder_fwd.register_fake
def _(x, weight, bias, patch_size, dtype):
    N, S = _geometry(x, patch_size)
    return _encoder_outputs(N, weight.shape[0], S, x, dtype)


@torch.library.custom_op("dip::detailer_encoder_bwd", mutates_args=())
def encoder_bwd(d_skip: torch.Tensor, d_pooled: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                pre: torch.Tensor, argmax: torch.Tensor, patch_size: int,
                input_grad: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx or empty, dweight, dbias)."""
    N, S = _geometry(x, patch_size)
    cout, cin = weight.shape[:2]
    dpre, db = act_bwd(to_nhwc(d_skip), to_nhwc(d_pooled), argmax, pre, pre.dtype)
    wk, _ = _conv_weight(weight, pre.dtype)
    if input_grad:
        dx = torch.empty_like(x) if patch_size else nhwc_empty(N, cin, S, x, x.dtype)
        base, strides = _dgrad_weight(wk)
        conv_fwd(patches(dpre), None, wk, strides, None, _source(dx, patch_size), patches=N, so=S, si=S, ncol=cin,
                 cout=cin, ks=3, stride=1, pad=1, silu=False, compute=pre.dtype, w_base=base)
    else:
        dx = x.new_empty(0)
    dw = conv_wgrad(_source(x, patch_size), None, patches(dpre), patches=N, so=S, si=S, ncol=cout, cout=cout, ks=3,
                    stride=1, pad=1, compute=pre.dtype)
    return dx, _weight_grad(dw, 3, cin, cout, weight.dtype), db.to(weight.dtype)


@encoder_bwd.register_fake
def _(d_skip, d_pooled, x, weight, pre, argmax, patch_size, input_grad):
    N, S = _geometry(x, patch_size)
    if not input_grad:
        dx = x.new_empty(0)
    else:
        dx = torch.empty_like(x) if patch_size else nhwc_empty(N, weight.shape[1], S, x, x.dtype)
    return dx, torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _encoder_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the unused outputs (pre, up, argmax)
    x, weight, _, patch_size, _ = inputs
    _, _, pre, argmax = output
    ctx.patch_size = patch_size
    ctx.save_for_backward(x, weight, pre, argmax)


def _encoder_backward(ctx, d_skip, d_pooled, _d_pre, _d_argmax):
    x, weight, pre, argmax = ctx.saved_tensors
    grads = pooled_stage_grads(d_skip, d_pooled, pre, argmax)
    if grads is None:
        return (None,) * 5
    dx, dw, db = encoder_bwd(*grads, x, weight, pre, argmax, ctx.patch_size, ctx.needs_input_grad[0])
    return dx if ctx.needs_input_grad[0] else None, dw, db, None, None


encoder_fwd.register_autograd(_encoder_backward, setup_context=_encoder_setup)


# ---------------------------------------------------------------------------------------------------- bottleneck
@torch.library.custom_op("dip::detailer_bottleneck_fwd", mutates_args=())
def bottleneck_fwd(pooled: torch.Tensor, context: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(y, pre-activation) of SiLU(conv1×1([pooled, context broadcast])), context (N, D) read with stride 0."""
    N, C, r, _ = pooled.shape
    cout = weight.shape[0]
    y, pre = nhwc_empty(N, cout, r, pooled, dtype), nhwc_empty(N, cout, r, pooled, dtype)
    wk, ws = _conv_weight(weight, dtype)
    conv_fwd(patches(pooled), broadcast(context), wk, ws, bias, patches(y), patches=N, so=r, si=r, ncol=cout,
             cout=cout, ks=1, stride=1, pad=0, silu=True, compute=dtype, pre=pre)
    return y, pre


@bottleneck_fwd.register_fake
def _(pooled, context, weight, bias, dtype):
    N, _, r, _ = pooled.shape
    return nhwc_empty(N, weight.shape[0], r, pooled, dtype), nhwc_empty(N, weight.shape[0], r, pooled, dtype)


@torch.library.custom_op("dip::detailer_bottleneck_bwd", mutates_args=())
def bottleneck_bwd(dy: torch.Tensor, pooled: torch.Tensor, context: torch.Tensor, weight: torch.Tensor,
                   pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d_pooled, d_context, dweight, dbias)."""
    N, C, r, _ = pooled.shape
    D, cout = context.shape[1], weight.shape[0]
    dpre, db = act_bwd(to_nhwc(dy), None, None, pre, pre.dtype)
    wk, _ = _conv_weight(weight, pre.dtype)
    d_in, d_pooled, d_ctx = _split_channels(N, C, D, r, pooled, pre.dtype)
    base, strides = _dgrad_weight(wk)
    conv_fwd(patches(dpre), None, wk, strides, None, patches(d_in), patches=N, so=r, si=r, ncol=C + D, cout=C + D,
             ks=1, stride=1, pad=0, silu=False, compute=pre.dtype, w_base=base)
    dw = conv_wgrad(patches(pooled), broadcast(context), patches(dpre), patches=N, so=r, si=r, ncol=cout, cout=cout,
                    ks=1, stride=1, pad=0, compute=pre.dtype)
    d_context = torch.sum(d_ctx, (2, 3), dtype=torch.float32).to(context.dtype)
    return (d_pooled.to(pooled.dtype), d_context, _weight_grad(dw, 1, C + D, cout, weight.dtype),
            db.to(weight.dtype))


@bottleneck_bwd.register_fake
def _(dy, pooled, context, weight, pre):
    N, C, r, _ = pooled.shape
    d_pooled = _split_channels(N, C, context.shape[1], r, pooled, pre.dtype)[1].to(pooled.dtype)
    return d_pooled, torch.empty_like(context), torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _bottleneck_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the unused outputs (pre, up, argmax)
    pooled, context, weight, _, _ = inputs
    ctx.save_for_backward(pooled, context, weight, output[1])


def _bottleneck_backward(ctx, dy, _d_pre):
    if dy is None:
        return None, None, None, None, None
    pooled, context, weight, pre = ctx.saved_tensors
    return (*bottleneck_bwd(dy, pooled, context, weight, pre), None)


bottleneck_fwd.register_autograd(_bottleneck_backward, setup_context=_bottleneck_setup)


# ---------------------------------------------------------------------------------------------------- decoder
def _up_weight(up_weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ConvTranspose weight (Cin, Cup, 2, 2) → (Cin, 2, 2, Cup): GEMM columns (a, b, c)."""
    return up_weight.permute(0, 2, 3, 1).contiguous().to(dtype)


def _decoder_forward(x, skip, up_weight, up_bias, weight, bias, dtype, out: Operand | None, fuse_out=None):
    """ConvTranspose into ``up``, then conv3×3 + SiLU over [up, skip] into ``out`` (or, with ``fuse_out``, the output
    conv of it into the image operand ``out``). Returns (y or None, up, pre)."""
    N, cin, r, _ = x.shape
    cup, cout = up_weight.shape[1], weight.shape[0]
    up = nhwc_empty(N, cup, 2 * r, x, dtype)
    conv_fwd(patches(x), None, _up_weight(up_weight, dtype), (0, 0, 4 * cup, 1), up_bias, patches(up), patches=N,
             so=r, si=r, ncol=4 * cup, cout=cup, ks=1, stride=1, pad=0, silu=False, compute=dtype, scatter2=True)
    pre = nhwc_empty(N, cout, 2 * r, x, dtype)
    y = None if out is not None else nhwc_empty(N, cout, 2 * r, x, dtype)
    wk, ws = _conv_weight(weight, dtype)
    conv_fwd(patches(up), patches(skip), wk, ws, bias, out if out is not None else patches(y), patches=N, so=2 * r,
             si=2 * r, ncol=cout, cout=cout, ks=3, stride=1, pad=1, silu=True, compute=dtype, pre=pre,
             fuse_out=fuse_out)
    return y, up, pre


@torch.library.custom_op("dip::detailer_decoder_fwd", mutates_args=())
def decoder_fwd(x: torch.Tensor, skip: torch.Tensor, up_weight: torch.Tensor, up_bias: torch.Tensor,
                weight: torch.Tensor, bias: torch.Tensor,
                dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, up-sampled, pre-activation): y = SiLU(conv3×3([convT2×2(x), skip]))."""
    return _decoder_forward(x, skip, up_weight, up_bias, weight, bias, dtype, None)


@decoder_fwd.register_fake
def _(x, skip, up_weight, up_bias, weight, bias, dtype):
    N, _, r, _ = x.shape
    cup, cout = up_weight.shape[1], weight.shape[0]
    return (nhwc_empty(N, cout, 2 * r, x, dtype), nhwc_empty(N, cup, 2 * r, x, dtype),
            nhwc_empty(N, cout, 2 * r, x, dtype))


def _decoder_grads(dy, x, skip, up_weight, weight, up, pre):
    """(dx, d_skip, d_up_weight, d_up_bias, dweight, dbias) from the gradient of the decoder's output."""
    N, cin, r, _ = x.shape
    cup, cs, cout = up.shape[1], skip.shape[1], weight.shape[0]
    dt = pre.dtype
    dpre, db = act_bwd(to_nhwc(dy), None, None, pre, dt)
    wk, _ = _conv_weight(weight, dt)
    d_in, d_up, d_skip = _split_channels(N, cup, cs, 2 * r, x, dt)
    base, strides = _dgrad_weight(wk)
    conv_fwd(patches(dpre), None, wk, strides, None, patches(d_in), patches=N, so=2 * r, si=2 * r, ncol=cup + cs,
             cout=cup + cs, ks=3, stride=1, pad=1, silu=False, compute=dt, w_base=base)
    dw = conv_wgrad(patches(up), patches(skip), patches(dpre), patches=N, so=2 * r, si=2 * r, ncol=cout, cout=cout,
                    ks=3, stride=1, pad=1, compute=dt)
    # ConvTranspose backward: dgrad is a 2×2 stride-2 conv of d_up, wgrad gathers d_up at (2y + a, 2x + b)
    wt = _up_weight(up_weight, dt)  # (Cin, 2, 2, Cup)
    dx = nhwc_empty(N, cin, r, x, x.dtype)
    conv_fwd(patches(d_up), None, wt, (wt.stride(1), wt.stride(2), 1, wt.stride(0)), None, patches(dx), patches=N,
             so=r, si=2 * r, ncol=cin, cout=cin, ks=2, stride=2, pad=0, silu=False, compute=dt)
    d_upw = conv_wgrad(patches(x), None, patches(d_up), patches=N, so=r, si=r, ncol=4 * cup, cout=cup, ks=1, stride=1,
                       pad=0, compute=dt, g_scatter2=True)
    d_upw = d_upw.view(cin, 2, 2, cup).permute(0, 3, 1, 2).contiguous().to(up_weight.dtype)
    return (dx, d_skip.to(skip.dtype), d_upw, _bias_grad(d_up, up_weight.dtype),
            _weight_grad(dw, 3, cup + cs, cout, weight.dtype), db.to(weight.dtype))


def _decoder_grad_fakes(x, skip, up_weight, weight, up, pre):
    N, cin, r, _ = x.shape
    d_skip = _split_channels(N, up.shape[1], skip.shape[1], 2 * r, x, pre.dtype)[2].to(skip.dtype)
    return (nhwc_empty(N, cin, r, x, x.dtype), d_skip, torch.empty_like(up_weight),
            up_weight.new_empty(up_weight.shape[1]), torch.empty_like(weight), weight.new_empty(weight.shape[0]))


@torch.library.custom_op("dip::detailer_decoder_bwd", mutates_args=())
def decoder_bwd(dy: torch.Tensor, x: torch.Tensor, skip: torch.Tensor, up_weight: torch.Tensor,
                weight: torch.Tensor, up: torch.Tensor, pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor, torch.Tensor,
                                                                                    torch.Tensor, torch.Tensor]:
    """(dx, d_skip, d_up_weight, d_up_bias, dweight, dbias)."""
    return _decoder_grads(dy, x, skip, up_weight, weight, up, pre)


@decoder_bwd.register_fake
def _(dy, x, skip, up_weight, weight, up, pre):
    return _decoder_grad_fakes(x, skip, up_weight, weight, up, pre)


def _decoder_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the unused outputs (pre, up, argmax)
    x, skip, up_weight, _, weight, _, _ = inputs
    _, up, pre = output
    ctx.save_for_backward(x, skip, up_weight, weight, up, pre)


def _decoder_backward(ctx, dy, _d_up, _d_pre):
    if dy is None:
        return (None,) * 7
    return (*decoder_bwd(dy, *ctx.saved_tensors), None)


decoder_fwd.register_autograd(_decoder_backward, setup_context=_decoder_setup)


# ---------------------------------------------------------------------------------------------------- output
@torch.library.custom_op("dip::detailer_output_fwd", mutates_args=())
def output_fwd(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, batch: int, height: int, width: int,
               dtype: torch.dtype) -> torch.Tensor:
    """conv1×1 of (B·T, C, P, P) features written into the (B, Cout, H, W) image."""
    N, _, P, _ = y.shape
    cout = weight.shape[0]
    img = torch.empty(batch, cout, height, width, device=y.device, dtype=dtype)
    wk, ws = _conv_weight(weight, dtype)
    conv_fwd(patches(y), None, wk, ws, bias, image(img, P), patches=N, so=P, si=P, ncol=cout, cout=cout, ks=1,
             stride=1, pad=0, silu=False, compute=dtype)
    return img


@output_fwd.register_fake
def _(y, weight, bias, batch, height, width, dtype):
    return y.new_empty(batch, weight.shape[0], height, width, dtype=dtype)


def _output_grads(d_img, y, weight, dtype):
    """(dy, dweight, dbias) of the output conv, reading the image gradient through the patch addressing."""
    N, C, P, _ = y.shape
    cout = weight.shape[0]
    g = image(d_img, P)
    wk, _ = _conv_weight(weight, dtype)
    dy = nhwc_empty(N, C, P, y, y.dtype)
    base, strides = _dgrad_weight(wk)
    conv_fwd(g, None, wk, strides, None, patches(dy), patches=N, so=P, si=P, ncol=C, cout=C, ks=1, stride=1, pad=0,
             silu=False, compute=dtype, w_base=base)
    dw = conv_wgrad(patches(y), None, g, patches=N, so=P, si=P, ncol=cout, cout=cout, ks=1, stride=1, pad=0,
                    compute=dtype)
    return dy, _weight_grad(dw, 1, C, cout, weight.dtype), _bias_grad(d_img, weight.dtype)


@torch.library.custom_op("dip::detailer_output_bwd", mutates_args=())
def output_bwd(d_img: torch.Tensor, y: torch.Tensor, weight: torch.Tensor,
               dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dy, dweight, dbias)."""
    return _output_grads(d_img, y, weight, dtype)


@output_bwd.register_fake
def _(d_img, y, weight, dtype):
    N, C, P, _ = y.shape
    return nhwc_empty(N, C, P, y, y.dtype), torch.empty_like(weight), weight.new_empty(weight.shape[0])


def _output_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the unused outputs (pre, up, argmax)
    y, weight, _, _, _, _, dtype = inputs
    ctx.dtype = dtype
    ctx.save_for_backward(y, weight)


def _output_backward(ctx, d_img):
    if d_img is None:
        return (None,) * 7
    y, weight = ctx.saved_tensors
    return (*output_bwd(d_img, y, weight, ctx.dtype), None, None, None, None)


output_fwd.register_autograd(_output_backward, setup_context=_output_setup)


# ---------------------------------------------------------------------------------------------------- last stage
@torch.library.custom_op("dip::detailer_decoder_output_fwd", mutates_args=())
def decoder_output_fwd(x: torch.Tensor, skip: torch.Tensor, up_weight: torch.Tensor, up_bias: torch.Tensor,
                       weight: torch.Tensor, bias: torch.Tensor, out_weight: torch.Tensor, out_bias: torch.Tensor,
                       batch: int, height: int, width: int,
                       dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image, up-sampled, pre-activation): the last decoder with the output 1×1 conv in its epilogue, writing the
    (B, C, H, W) velocity image; its activations are never stored (the backward recomputes them from ``pre``)."""
    img = torch.empty(batch, out_weight.shape[0], height, width, device=x.device, dtype=dtype)
    wo = out_weight.view(out_weight.shape[0], -1).t().contiguous().to(dtype)  # (Cout, n_out)
    _, up, pre = _decoder_forward(x, skip, up_weight, up_bias, weight, bias, dtype, image(img, 2 * x.shape[2]),
                                  fuse_out=(wo, out_bias))
    return img, up, pre


@decoder_output_fwd.register_fake
def _(x, skip, up_weight, up_bias, weight, bias, out_weight, out_bias, batch, height, width, dtype):
    N, _, r, _ = x.shape
    cup, cout = up_weight.shape[1], weight.shape[0]
    return (x.new_empty(batch, out_weight.shape[0], height, width, dtype=dtype), nhwc_empty(N, cup, 2 * r, x, dtype),
            nhwc_empty(N, cout, 2 * r, x, dtype))


@torch.library.custom_op("dip::detailer_decoder_output_bwd", mutates_args=())
def decoder_output_bwd(d_img: torch.Tensor, x: torch.Tensor, skip: torch.Tensor, up_weight: torch.Tensor,
                       weight: torch.Tensor, out_weight: torch.Tensor, up: torch.Tensor,
                       pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                   torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, d_skip, d_up_weight, d_up_bias, dweight, dbias, d_out_weight, d_out_bias)."""
    y = to_nhwc(torch.nn.functional.silu(pre.float()).to(pre.dtype))  # the activations the forward did not store
    dy, d_out_w, d_out_b = _output_grads(d_img, y, out_weight, pre.dtype)
    return (*_decoder_grads(dy, x, skip, up_weight, weight, up, pre), d_out_w, d_out_b)


@decoder_output_bwd.register_fake
def _(d_img, x, skip, up_weight, weight, out_weight, up, pre):
    return (*_decoder_grad_fakes(x, skip, up_weight, weight, up, pre), torch.empty_like(out_weight),
            out_weight.new_empty(out_weight.shape[0]))


def _decoder_output_setup(ctx, inputs, output):
    ctx.set_materialize_grads(False)  # no zero-filled gradients for the unused outputs (pre, up, argmax)
    x, skip, up_weight, _, weight, _, out_weight, _, _, _, _, _ = inputs
    _, up, pre = output
    ctx.save_for_backward(x, skip, up_weight, weight, out_weight, up, pre)


def _decoder_output_backward(ctx, d_img, _d_up, _d_pre):
    if d_img is None:
        return (None,) * 12
    return (*decoder_output_bwd(d_img, *ctx.saved_tensors), None, None, None, None)


decoder_output_fwd.register_autograd(_decoder_output_backward, setup_context=_decoder_output_setup)
