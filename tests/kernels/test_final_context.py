"""Op C (final context), every kernel backend against the fp64 reference, forward and backward."""
import pytest
import torch

from dip_kernels import final_context as ref_c
from dip_kernels.final_context import op as custom_ops
from tests.support.backends import backend_module, backend_ops
from tests.support.parity import compare, inputs, interpreted_only

tri_c, cuda_c = backend_ops("triton"), backend_ops("cuda")


def context_fn(ops, D):
    def fn(x, br, mod, temb):
        return ops.final_context(x, br, mod[:, 5 * D:], temb)  # gate2: a strided view of (B, 6D)
    return fn


@pytest.fixture(params=["triton", "cuda"])
def context_kernels(request, kernel_device):
    """The op module of each kernel backend that can run on the test's device."""
    return backend_module(request, kernel_device, {"triton": tri_c, "cuda": cuda_c})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,T,D", [(2, 7, 72), (1, 5, 37), (1, 3, 2056)])  # 2056 bf16: > 256 vectors per thread
def test_final_context(kernel_device, context_kernels, dtype, B, T, D):
    x = inputs(B, T, D, dtype=dtype, device=kernel_device, requires_grad=True)
    br = inputs(B, T, D, dtype=dtype, device=kernel_device, seed=1, requires_grad=True)
    mod = (0.3 * inputs(B, 6 * D, device=kernel_device, seed=2)).to(dtype).requires_grad_()
    temb = inputs(B, D, dtype=dtype, device=kernel_device, seed=3, requires_grad=True)
    grads = [inputs(B, T, D, device=kernel_device, seed=4)]
    outs = compare(context_fn(context_kernels, D), context_fn(ref_c, D), [x, br, mod, temb], grads, dtype, ["s"],
                   ["dx", "dbranch", "dmod", "dt_emb"], [1, 1, T, T])
    assert outs[0].dtype == dtype


def test_final_context_stride0_grad(kernel_device, context_kernels):
    args = [inputs(2, 3, 8, device=kernel_device, seed=s, requires_grad=True) for s in range(2)]
    args += [inputs(2, 48, device=kernel_device, seed=2, requires_grad=True),
             inputs(2, 8, device=kernel_device, seed=3, requires_grad=True)]
    ones = torch.ones((), device=kernel_device).expand(2, 3, 8)
    compare(context_fn(context_kernels, 8), context_fn(ref_c, 8), args, [ones], torch.float32, ["s"],
            ["dx", "dbranch", "dmod", "dt_emb"], [1, 1, 3, 3])


def test_errors():
    with pytest.raises(ValueError, match=r"t_emb must have shape \(2, 8\)"):
        tri_c.final_context(inputs(2, 3, 8), inputs(2, 3, 8), inputs(2, 8), inputs(1, 8))


@interpreted_only
def test_opcheck(real_cuda_extension):
    x, br, g, te = inputs(2, 3, 8), inputs(2, 3, 8, seed=1), inputs(2, 8, seed=2), inputs(2, 8, seed=3)
    torch.library.opcheck(custom_ops.final_context_fwd, (x, br, g, te, torch.float32, "triton"))
    with pytest.raises(ValueError, match="the CUDA backend needs CUDA tensors"):
        cuda_c.final_context(x, br, g, te)
