"""Op E — patch embedding, patchify, unpatchify — every kernel backend against the fp64 reference: the Triton
embedding with the gather fused into the GEMM; the CUDA copies (exact), their gradients, clean failure without a
GPU."""
import pytest
import torch

from dip_kernels import patch_embed as ref_e
from dip_kernels.patch_embed import op as custom_ops
from tests.support.backends import backend_ops
from tests.support.parity import assert_parity, inputs, interpreted_only, run_with_grads, upcast

tri_e, cuda_e = backend_ops("triton"), backend_ops("cuda")


def embed(ops, P):
    return lambda img, w, b: ops.patch_embed(img, w, b, P)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,C,H,W,P,D", [(2, 3, 16, 24, 8, 20), (1, 3, 8, 8, 4, 37), (3, 2, 4, 12, 2, 5)])
@pytest.mark.parametrize("image_grad", [False, True])
def test_patch_embed(kernel_device, dtype, B, C, H, W, P, D, image_grad):
    img = inputs(B, C, H, W, dtype=dtype, device=kernel_device, requires_grad=image_grad)
    w = (0.1 * inputs(D, C * P * P, device=kernel_device, seed=1)).to(dtype).requires_grad_()
    b = inputs(D, dtype=dtype, device=kernel_device, seed=2, requires_grad=True)
    T = (H // P) * (W // P)
    grads = [inputs(B, T, D, device=kernel_device, seed=3)]
    args = [img, w, b]
    outs, got = run_with_grads(embed(tri_e, P), args, grads)
    e_outs, eager = run_with_grads(embed(ref_e, P), args, grads)
    r_outs, ref = run_with_grads(embed(ref_e, P), upcast(args), [g.double() for g in grads])
    assert_parity("tokens", outs[0], e_outs[0], r_outs[0], dtype, n=C * P * P)
    names = (["dimg"] if image_grad else []) + ["dweight", "dbias"]
    sums = ([D] if image_grad else []) + [B * T, B * T]
    for name, k, e, r, n in zip(names, got, eager, ref, sums):
        assert_parity(name, k, e, r, dtype, n=n)


def test_strided_image_and_autocast(kernel_device):
    img = inputs(2, 16, 16, 3, device=kernel_device).permute(0, 3, 1, 2)  # channels_last-like strides, no copy
    w, b = 0.1 * inputs(7, 3 * 64, device=kernel_device, seed=1), inputs(7, device=kernel_device, seed=2)
    torch.testing.assert_close(tri_e.patch_embed(img, w, b, 8), ref_e.patch_embed(img, w, b, 8), rtol=1e-5,
                               atol=1e-4)
    with torch.autocast(kernel_device.type, dtype=torch.bfloat16):
        assert tri_e.patch_embed(img, w, b, 8).dtype == torch.bfloat16


def test_errors():
    with pytest.raises(ValueError, match="divisible by patch_size 8, got 12×16"):
        tri_e.patch_embed(inputs(1, 3, 12, 16), inputs(4, 192), inputs(4), 8)
    with pytest.raises(ValueError, match=r"weight must be \(D, C·P²\) = \(D, 192\)"):
        tri_e.patch_embed(inputs(1, 3, 16, 16), inputs(4, 100), inputs(4), 8)


@interpreted_only
def test_opcheck():
    img = inputs(1, 3, 8, 8, requires_grad=True)
    torch.library.opcheck(custom_ops.patch_embed_fwd, (img, inputs(5, 48, requires_grad=True),
                                                  inputs(5, requires_grad=True), 4, torch.float32))


def test_fails_cleanly_without_a_gpu(real_cuda_extension):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises((ValueError, RuntimeError), match="CUDA"):
        cuda_e.patchify(inputs(1, 3, 16, 16), 8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_patchify_round_trip_is_exact(cuda_kernel_device, dtype):
    dev = cuda_kernel_device
    img = inputs(2, 3, 32, 48, dtype=dtype, device=dev)
    strided = img.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)  # channels_last strides
    for x in (img, strided):
        p = cuda_e.patchify(x, 16)
        torch.testing.assert_close(p, ref_e.patchify(x, 16), rtol=0, atol=0)
        cl = p.contiguous(memory_format=torch.channels_last)  # element-wise path; contiguous: 16-byte path
        for patches in (cl, p):
            torch.testing.assert_close(cuda_e.unpatchify(patches, 2, 32, 48), img, rtol=0, atol=0)


def test_gradients_are_the_inverse_copies(cuda_kernel_device):
    dev = cuda_kernel_device
    img = inputs(2, 3, 16, 32, device=dev, requires_grad=True)
    g = inputs(16, 3, 8, 8, device=dev, seed=1)  # 2 images × (16/8)·(32/8) patches
    (got,) = torch.autograd.grad(cuda_e.patchify(img, 8), img, g)
    torch.testing.assert_close(got, ref_e.unpatchify(g, 2, 16, 32), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_patch_embed(cuda_kernel_device, dtype):
    dev = cuda_kernel_device
    img = inputs(2, 3, 32, 32, device=dev)
    w = (0.05 * inputs(64, 768, device=dev, seed=1)).requires_grad_()
    b = inputs(64, device=dev, seed=2, requires_grad=True)
    grads = [inputs(2, 4, 64, device=dev, seed=3)]
    with torch.autocast(dev.type, dtype=dtype, enabled=dtype != torch.float32):
        outs, got = run_with_grads(lambda i, w, b: cuda_e.patch_embed(i, w, b, 16), [img, w, b], grads)
        e_outs, eager = run_with_grads(lambda i, w, b: ref_e.patch_embed(i, w, b, 16), [img, w, b], grads)
    r_outs, ref = run_with_grads(lambda i, w, b: ref_e.patch_embed(i, w, b, 16), upcast([img, w, b]),
                                 [g.double() for g in grads])
    assert_parity("tokens", outs[0], e_outs[0], r_outs[0], dtype, n=768)
    for name, k, e, r in zip(["dweight", "dbias"], got, eager, ref):
        assert_parity(name, k, e, r, dtype, n=8)
