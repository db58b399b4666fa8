"""The Detailer head's ends in CUDA (first conv + pool from the image, output conv into the image) against the
fp64 reference, forward and backward, on the GPU or the emulator; clean failure without a GPU."""
import pytest
import torch

from dip_kernels import detailer as ref_d
from dip_kernels import detailer_cuda as cuda_d
from parity import check_against_reference, inputs


def test_fails_cleanly_without_a_gpu(real_cuda_extension):
    with pytest.raises(ValueError, match="the CUDA backend needs CUDA tensors, got img on cpu"):
        cuda_d.detailer_stem(inputs(1, 3, 16, 16), 8, inputs(4, 3, 3, 3), inputs(4))
    with pytest.raises(ValueError, match="the CUDA backend needs CUDA tensors, got y on cpu"):
        cuda_d.detailer_output(inputs(4, 5, 8, 8), inputs(3, 5, 1, 1), inputs(3), 1, 16, 16)


def compare(dev, dtype, kernel_fn, ref_fn, args, grad_shapes, names, sums):
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
    compare(dev, dtype, lambda i, w, b: cuda_d.detailer_stem(i, P, w, b),
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
    compare(dev, dtype, lambda y, w, b: cuda_d.detailer_output(y, w, b, B, H, W),
            lambda y, w, b: ref_d.detailer_output(y, w, b, B, H, W), [y, w, b], [(B, 3, H, W)],
            ["image", "dy", "dweight", "dbias"], [C, 3, N * P * P, N * P * P])
