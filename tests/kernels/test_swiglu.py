"""Op F (SwiGLU), every kernel backend against the fp64 reference, forward and backward."""
import pytest
import torch

from dip_kernels import swiglu as ref_f
from dip_kernels.swiglu import op as custom_ops
from tests.support.backends import backend_ops
from tests.support.parity import compare, inputs, interpreted_only

tri_f = backend_ops("triton")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 5, 300), (1, 1, 7)])
def test_swiglu(kernel_device, dtype, shape):
    a = inputs(*shape, dtype=dtype, device=kernel_device, requires_grad=True)
    b = inputs(*shape, dtype=dtype, device=kernel_device, seed=1, requires_grad=True)
    compare(tri_f.swiglu, ref_f.swiglu, [a, b], [inputs(*shape, device=kernel_device, seed=2)], dtype, ["out"],
            ["da", "db"], [1, 1])


def test_swiglu_on_halves_of_a_merged_projection(kernel_device):
    ab = inputs(2, 3, 2 * 40, device=kernel_device, requires_grad=True)

    def split(ops):
        return lambda t: ops.swiglu(t[..., :40], t[..., 40:])  # row stride 80, no copy

    compare(split(tri_f), split(ref_f), [ab], [torch.ones((), device=kernel_device).expand(2, 3, 40)], torch.float32,
            ["out"], ["dab"], [1])


def test_errors():
    with pytest.raises(ValueError, match=r"b must have shape \(2, 3\)"):
        tri_f.swiglu(inputs(2, 3), inputs(3, 2))


@interpreted_only
def test_opcheck():
    torch.library.opcheck(custom_ops.swiglu_fwd, (inputs(4, 6), inputs(4, 6, seed=1), torch.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_merged_projection_output_in_one_tensor(kernel_device, dtype):
    """The merged W1|W3 output goes in whole; its gradient comes back as one tensor, no zero-filled halves."""
    ab = inputs(2, 3, 2 * 40, dtype=dtype, device=kernel_device, requires_grad=True)
    compare(tri_f.swiglu, ref_f.swiglu, [ab], [inputs(2, 3, 40, device=kernel_device, seed=2)], dtype, ["out"],
            ["dab"], [1])
    with pytest.raises(ValueError, match="even last dim"):
        tri_f.swiglu(inputs(2, 3, 7, device=kernel_device))


@interpreted_only
def test_merged_opcheck():
    torch.library.opcheck(custom_ops.swiglu_merged_fwd, (inputs(4, 12), torch.float32))
