"""Op B (Triton QK-norm + 2D RoPE) against the fp64 reference, forward and backward."""
import pytest
import torch

from dip_kernels import qk_norm_rope as ref_b
from dip_kernels.qk_norm_rope import op as custom_ops
from dip_kernels.qk_norm_rope import rope_2d_table
from tests.support.backends import backend_module, backend_ops
from tests.support.parity import assert_parity, inputs, interpreted_only, run_with_grads, upcast

tri_b, cuda_b = backend_ops("triton"), backend_ops("cuda")


def fn(ops, H, cos, sin):
    return lambda qkv, qw, kw: ops.qk_norm_rope(qkv, qw, kw, cos, sin, H)


@pytest.fixture(params=["triton", "cuda"])
def rope_kernels(request, kernel_device):
    """The op module of each kernel backend that can run on the test's device."""
    return backend_module(request, kernel_device, {"triton": tri_b, "cuda": cuda_b})


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,gh,gw,H,hd", [(2, 3, 3, 2, 72), (1, 1, 5, 3, 8), (1, 4, 5, 1, 20),
                                           (1, 1, 2, 1, 264)])  # 264: lanes loop over the head
def test_qk_norm_rope(kernel_device, rope_kernels, dtype, B, gh, gw, H, hd):
    T = gh * gw
    qkv = inputs(B, T, 3 * H * hd, dtype=dtype, device=kernel_device, requires_grad=True)
    qw = inputs(hd, device=kernel_device, seed=1, requires_grad=True)
    kw = inputs(hd, device=kernel_device, seed=2, requires_grad=True)
    cos, sin = rope_2d_table(hd, gh, gw, device=kernel_device)
    grads = [inputs(B, H, T, hd, device=kernel_device, seed=3 + i) for i in range(3)]
    args = [qkv, qw, kw]
    outs, got = run_with_grads(fn(rope_kernels, H, cos, sin), args, grads)
    e_outs, eager = run_with_grads(fn(ref_b, H, cos, sin), args, grads)
    r_outs, ref = run_with_grads(fn(ref_b, H, cos.double(), sin.double()), upcast(args), [g.double() for g in grads])
    for name, k, e, r in zip("qkv", outs, e_outs, r_outs):
        assert_parity(name, k, e, r, dtype)
        assert k.is_contiguous() and k.dtype == dtype
    for name, k, e, r, n in zip(["dqkv", "dq_weight", "dk_weight"], got, eager, ref, [hd, B * T * H, B * T * H]):
        assert_parity(name, k, e, r, dtype, n=n)


def test_unused_output_gradient(kernel_device):
    qkv = inputs(1, 4, 3 * 8, device=kernel_device, requires_grad=True)
    cos, sin = rope_2d_table(8, 2, 2, device=kernel_device)
    ones = torch.ones(8, device=kernel_device)
    q, k, v = tri_b.qk_norm_rope(qkv, ones, ones, cos, sin, 1)
    q.sum().backward()  # stride-0 gradient for q, none for k and v
    assert torch.all(qkv.grad[..., 8:] == 0) and qkv.grad[..., :8].abs().sum() > 0


def test_errors():
    cos, sin = rope_2d_table(8, 2, 2)
    with pytest.raises(ValueError, match="multiple of 6"):
        tri_b.qk_norm_rope(inputs(1, 4, 25), torch.ones(8), torch.ones(8), cos, sin, 2)
    with pytest.raises(ValueError, match=r"cos must have shape \(4, 4\)"):
        tri_b.qk_norm_rope(inputs(1, 4, 24), torch.ones(8), torch.ones(8), cos[:2], sin, 1)


@interpreted_only
def test_opcheck(real_cuda_extension):
    cos, sin = rope_2d_table(8, 2, 2)
    torch.library.opcheck(custom_ops.qk_norm_rope_fwd, (inputs(2, 4, 48), inputs(8, seed=1), inputs(8, seed=2), cos,
                                                        sin, 2, 1e-6, torch.float32, "triton"))
    with pytest.raises(ValueError, match="the CUDA backend needs CUDA tensors"):
        cuda_b.qk_norm_rope(inputs(2, 4, 48), inputs(8), inputs(8), cos, sin, 2)
