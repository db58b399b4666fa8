"""Op E in CUDA (patchify / unpatchify / patch embedding): exact copies, gradients, clean failure without a GPU."""
import pytest
import torch

from dip_kernels import patchify as ref_e
from dip_kernels import patchify_cuda as cuda_e
from parity import assert_parity, inputs, run_with_grads, upcast


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
def test_patch_embed(cuda_kernel_device, dtype):
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
