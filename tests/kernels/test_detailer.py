"""Op D, the Patch Detailer Head's stages, every kernel backend against the fp64 reference: every Triton layer
type and the whole head (forward output and input / weight / bias gradients, √K-scaled parity rule, poisoned
outputs); the CUDA ends (first conv + pool from the image, output conv into the image) on the GPU or the emulator,
and their clean failure without a GPU."""
import pytest
import torch

from dip.model.detailer_head import PatchDetailerHead
from dip_kernels import KernelTable
from dip_kernels import detailer as ref_d
from dip_kernels.detailer import triton as stage_ops
from tests.support.backends import backend_ops
from tests.support.parity import assert_parity, check_against_reference, inputs, interpreted_only, poisoned_allocations
from tests.support.parity import check_against_reference as compare

tri_d, cuda_d = backend_ops("triton"), backend_ops("cuda")


def channels_last(t):
    return t.detach().contiguous(memory_format=torch.channels_last).requires_grad_(t.requires_grad)


def weights(kernel_device, dtype, cout, cin, k, seed):
    """fp32 parameters (master weights), whatever the activation dtype."""
    w = (inputs(cout, cin, k, k, device=kernel_device, seed=seed) / (cin * k * k) ** 0.5).requires_grad_()
    return w, (0.1 * inputs(cout, device=kernel_device, seed=seed + 1)).requires_grad_()


DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("N,cin,cout,S", [(2, 5, 6, 8), (3, 4, 20, 2)])
def test_encoder(kernel_device, dtype, N, cin, cout, S):
    x = channels_last(inputs(N, cin, S, S, dtype=dtype, device=kernel_device, requires_grad=True))
    w, b = weights(kernel_device, dtype, cout, cin, 3, 1)
    outs = compare(kernel_device, dtype, tri_d.detailer_encoder, ref_d.detailer_encoder, [x, w, b],
                   [(N, cout, S, S), (N, cout, S // 2, S // 2)], ["skip", "pooled"], [9 * cin] * 2,
                   ["dx", "dweight", "dbias"], [9 * cout, N * S * S, N * S * S])
    assert outs[0].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("P,B,H,W", [(8, 1, 16, 8), (4, 2, 8, 12)])
def test_stem_reads_the_image(kernel_device, dtype, P, B, H, W):
    img = inputs(B, 3, H, W, device=kernel_device, requires_grad=True)
    w, b = weights(kernel_device, dtype, 6, 3, 3, 2)
    N = B * (H // P) * (W // P)
    compare(kernel_device, dtype, lambda i, w, b: tri_d.detailer_stem(i, P, w, b),
            lambda i, w, b: ref_d.detailer_stem(i, P, w, b), [img, w, b],
            [(N, 6, P, P), (N, 6, P // 2, P // 2)], ["skip", "pooled"], [27, 27],
            ["dimg", "dweight", "dbias"], [54, N * P * P, N * P * P])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("r", [1, 2])
def test_bottleneck(kernel_device, dtype, r):
    N, C, D = 3, 6, 10
    pooled = channels_last(inputs(N, C, r, r, dtype=dtype, device=kernel_device, requires_grad=True))
    ctx = inputs(N, D, dtype=dtype, device=kernel_device, seed=3, requires_grad=True)
    w, b = weights(kernel_device, dtype, C, C + D, 1, 4)
    compare(kernel_device, dtype, tri_d.detailer_bottleneck, ref_d.detailer_bottleneck, [pooled, ctx, w, b],
            [(N, C, r, r)], ["y"], [C + D], ["dpooled", "dcontext", "dweight", "dbias"],
            [C, C * r * r, N * r * r, N * r * r])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("r,cin,cs,cout", [(1, 6, 5, 4), (2, 4, 4, 3), (4, 3, 7, 5)])
def test_decoder(kernel_device, dtype, r, cin, cs, cout):
    N = 2
    x = channels_last(inputs(N, cin, r, r, dtype=dtype, device=kernel_device, requires_grad=True))
    skip = channels_last(inputs(N, cs, 2 * r, 2 * r, dtype=dtype, device=kernel_device, seed=5, requires_grad=True))
    up_w, up_b = weights(kernel_device, dtype, cin, cin, 2, 6)
    w, b = weights(kernel_device, dtype, cout, cin + cs, 3, 8)
    compare(kernel_device, dtype, tri_d.detailer_decoder, ref_d.detailer_decoder, [x, skip, up_w, up_b, w, b],
            [(N, cout, 2 * r, 2 * r)], ["y"], [9 * (cin + cs) + cin],
            ["dx", "dskip", "dup_weight", "dup_bias", "dweight", "dbias"],
            [9 * cout * cin, 9 * cout, N * r * r * 4, N * 4 * r * r, N * 4 * r * r, N * 4 * r * r])


@pytest.mark.parametrize("dtype", DTYPES)
def test_last_stage_fuses_the_output_conv(kernel_device, dtype):
    B, H, W, r, cin, cs, cout = 2, 8, 12, 2, 5, 4, 6
    N = B * (H // (2 * r)) * (W // (2 * r))
    x = channels_last(inputs(N, cin, r, r, dtype=dtype, device=kernel_device, requires_grad=True))
    skip = channels_last(inputs(N, cs, 2 * r, 2 * r, dtype=dtype, device=kernel_device, seed=5, requires_grad=True))
    up_w, up_b = weights(kernel_device, dtype, cin, cin, 2, 6)
    w, b = weights(kernel_device, dtype, cout, cin + cs, 3, 8)
    out_w, out_b = weights(kernel_device, dtype, 3, cout, 1, 10)

    def fn(ops):
        return lambda x, skip, up_w, up_b, w, b, out_w, out_b: ops.detailer_decoder_output(
            x, skip, up_w, up_b, w, b, out_w, out_b, B, H, W)

    compare(kernel_device, dtype, fn(tri_d), fn(ref_d), [x, skip, up_w, up_b, w, b, out_w, out_b], [(B, 3, H, W)],
            ["image"], [cout * 9 * (cin + cs)], ["dx", "dskip", "dup_weight", "dup_bias", "dweight", "dbias",
                                                 "dout_weight", "dout_bias"],
            [27 * cout * cin, 27 * cout, N * 16, N * 16, N * 16, N * 16, N * 16, N * 16])


@pytest.mark.parametrize("dtype", DTYPES)
def test_output_writes_the_image(kernel_device, dtype):
    B, H, W, P, C = 2, 8, 12, 4, 5
    N = B * (H // P) * (W // P)
    y = channels_last(inputs(N, C, P, P, dtype=dtype, device=kernel_device, requires_grad=True))
    w, b = weights(kernel_device, dtype, 3, C, 1, 9)
    compare(kernel_device, dtype, lambda y, w, b: tri_d.detailer_output(y, w, b, B, H, W),
            lambda y, w, b: ref_d.detailer_output(y, w, b, B, H, W), [y, w, b], [(B, 3, H, W)], ["image"], [C],
            ["dy", "dweight", "dbias"], [3, N * P * P, N * P * P])


@pytest.mark.parametrize("P", [8, 16, 32])
def test_whole_head(kernel_device, P):
    torch.manual_seed(0)
    D = 8
    head = PatchDetailerHead(P, D, base_width=4, max_width=16).to(kernel_device)
    B, H, W = 1, 2 * P, P
    img = inputs(B, 3, H, W, device=kernel_device)
    ctx = inputs(B, (H // P) * (W // P), D, device=kernel_device, seed=1, requires_grad=True)
    grad = inputs(B, 3, H, W, device=kernel_device, seed=2)
    params = list(head.parameters())

    def run(backend, dtype=torch.float32):
        head.to(dtype)
        ops = KernelTable(backend).on(kernel_device.type)
        c = ctx.detach().to(dtype).requires_grad_()
        out = head(img.to(dtype), c, ops)
        grads = torch.autograd.grad(out, [c, *params], grad.to(dtype))
        return out.detach(), grads

    with poisoned_allocations():
        out_k, g_k = run("triton")
    out_e, g_e = run("torch")
    out_r, g_r = run("torch", torch.float64)
    head.float()
    assert_parity("velocity", out_k, out_e, out_r, torch.float32, n=9 * 32)
    names = ["dcontext"] + [n for n, _ in head.named_parameters()]
    for name, k, e, r in zip(names, g_k, g_e, g_r):
        assert_parity(name, k, e, r, torch.float32, n=B * H * W * 9)


@pytest.mark.parametrize("P", [8, 16])
def test_the_reference_head_stays_channels_last(P):
    """Every stage input of the reference head (what the CUDA table runs between its ends) is channels_last where
    its layout is unambiguous: a NCHW concatenation used to turn every decoder stage NCHW, and the CUDA output conv
    then read 2-byte elements (seen in the kernel report's per-instantiation launch counts)."""
    head = PatchDetailerHead(P, 8, base_width=4, max_width=16)
    seen = []

    class Recording:
        def __init__(self, ops):
            self.ops = ops

        def __getattr__(self, name):
            def call(*args):
                maps = args[:2] if name.startswith("detailer_decoder") else args[:1]  # the activations
                seen.extend((name, tuple(a.shape), a.stride()) for a in maps if a.shape[-1] > 1)
                return getattr(self.ops, name)(*args)
            return call

    with torch.no_grad():
        head(inputs(2, 3, P, 2 * P), inputs(2, 2, 8, seed=1), Recording(KernelTable("torch").on("cpu")))
    stages = [s for s in seen if s[0] != "detailer_stem"]
    assert stages and all(stride[1] == 1 for _, _, stride in stages), stages


def test_errors():
    x = inputs(2, 4, 8, 8)
    with pytest.raises(ValueError, match=r"encoder weight must be \(Cout, 4, 3, 3\)"):
        tri_d.detailer_encoder(x, inputs(6, 5, 3, 3), inputs(6))
    with pytest.raises(ValueError, match=r"skip must be \(N, C, S, S\) square patches with S=16"):
        tri_d.detailer_decoder(x, inputs(2, 4, 8, 8), inputs(4, 4, 2, 2), inputs(4), inputs(3, 8, 3, 3), inputs(3))
    with pytest.raises(ValueError, match="divisible by patch_size 8"):
        tri_d.detailer_stem(inputs(1, 3, 12, 16), 8, inputs(6, 3, 3, 3), inputs(6))


@interpreted_only
def test_opcheck():
    x = channels_last(inputs(2, 4, 4, 4, requires_grad=True))
    w, b = weights("cpu", torch.float32, 6, 4, 3, 1)
    torch.library.opcheck(stage_ops.encoder_fwd, (x, w, b, 0, torch.float32))
    pooled = channels_last(inputs(2, 6, 1, 1, requires_grad=True))
    wb, bb = weights("cpu", torch.float32, 6, 9, 1, 2)
    torch.library.opcheck(stage_ops.bottleneck_fwd, (pooled, inputs(2, 3, requires_grad=True), wb, bb, torch.float32))
    up_w, up_b = weights("cpu", torch.float32, 6, 6, 2, 3)
    wd, bd = weights("cpu", torch.float32, 4, 6 + 4, 3, 4)
    skip = channels_last(inputs(2, 4, 2, 2, requires_grad=True))
    torch.library.opcheck(stage_ops.decoder_fwd, (pooled, skip, up_w, up_b, wd, bd, torch.float32))
    y = channels_last(inputs(4, 5, 2, 2, requires_grad=True))
    wo, bo = weights("cpu", torch.float32, 3, 5, 1, 5)
    torch.library.opcheck(stage_ops.output_fwd, (y, wo, bo, 1, 4, 4, torch.float32))
    xo = channels_last(inputs(4, 6, 1, 1, requires_grad=True))
    wl, bl = weights("cpu", torch.float32, 5, 6 + 4, 3, 6)
    wo2, bo2 = weights("cpu", torch.float32, 3, 5, 1, 7)
    skip2 = skip.detach().repeat(2, 1, 1, 1).requires_grad_()
    torch.library.opcheck(stage_ops.decoder_output_fwd, (xo, skip2, up_w, up_b, wl, bl, wo2, bo2, 1, 4, 4,
                                                         torch.float32))


def test_fails_cleanly_without_a_gpu(real_cuda_extension):
    with pytest.raises(ValueError, match="the CUDA backend needs CUDA tensors, got img on cpu"):
        cuda_d.detailer_stem(inputs(1, 3, 16, 16), 8, inputs(4, 3, 3, 3), inputs(4))
    with pytest.raises(ValueError, match="the CUDA backend needs CUDA tensors, got y on cpu"):
        cuda_d.detailer_output(inputs(4, 5, 8, 8), inputs(3, 5, 1, 1), inputs(3), 1, 16, 16)


def compare_ends(dev, dtype, kernel_fn, ref_fn, args, grad_shapes, names, sums):
    """Outputs first, then input gradients (``names``/``sums`` in that order)."""
    k = len(grad_shapes)
    check_against_reference(dev, dtype, kernel_fn, ref_fn, args, grad_shapes, names[:k], sums[:k],
                            names[k:], sums[k:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("P", [8, 16])
def test_stem(cuda_kernel_device, dtype, P):
    dev = cuda_kernel_device
    B, H, W, C = 2, 2 * P, 3 * P, 64
    N = B * 6
    img = inputs(B, 3, H, W, device=dev)
    w = (inputs(C, 3, 3, 3, device=dev, seed=1) / 27 ** 0.5).requires_grad_()
    b = (0.1 * inputs(C, device=dev, seed=2)).requires_grad_()
    compare_ends(dev, dtype, lambda i, w, b: cuda_d.detailer_stem(i, P, w, b),
            lambda i, w, b: ref_d.detailer_stem(i, P, w, b), [img, w, b], [(N, C, P, P), (N, C, P // 2, P // 2)],
            ["skip", "pooled", "dweight", "dbias"], [27, 27, N * P * P, N * P * P])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_output(cuda_kernel_device, dtype):
    dev = cuda_kernel_device
    B, H, W, P, C = 2, 32, 48, 16, 64
    N = B * 6
    y = inputs(N, C, P, P, device=dev, dtype=dtype).contiguous(memory_format=torch.channels_last)
    y.requires_grad_()
    w = (inputs(3, C, 1, 1, device=dev, seed=1) / 8).requires_grad_()
    b = inputs(3, device=dev, seed=2, requires_grad=True)
    compare_ends(dev, dtype, lambda y, w, b: cuda_d.detailer_output(y, w, b, B, H, W),
            lambda y, w, b: ref_d.detailer_output(y, w, b, B, H, W), [y, w, b], [(B, 3, H, W)],
            ["image", "dy", "dweight", "dbias"], [C, 3, N * P * P, N * P * P])
