"""Op A (Triton, and CUDA where a GPU is present) against the fp64 reference with the parity rule, forward and
backward (docs/kernels.md §2, §3)."""
import pytest
import torch

from dip_kernels import block_boundary as ref_ops
from dip_kernels.block_boundary import op as custom_ops
from dip_kernels.cuda_ext import extension
from tests.support.backends import backend_module, backend_ops
from tests.support.parity import assert_parity, inputs, interpreted_only, run_with_grads, upcast

tri_ops, cuda_ops = backend_ops("triton"), backend_ops("cuda")
BACKENDS = {"triton": tri_ops, "cuda": cuda_ops}


@pytest.fixture(params=["triton", "cuda"])
def kernels(request, kernel_device):
    """The op module of each kernel backend that can run on the test's device."""
    return backend_module(request, kernel_device, BACKENDS)


def boundary_fn(ops, norm, with_res, D):
    def fn(res, br, mod, w):
        shift, scale, gate = mod[:, :D], mod[:, D:2 * D], mod[:, 2 * D:3 * D]  # strided views of (B, 6D)
        if with_res:
            return ops.block_boundary(res, br, gate, w, shift, scale, norm)
        return (ops.modulated_norm(res, w, shift, scale, norm),)
    return fn


def check(kernel_device, dtype, B, T, D, norm, with_res, stride0=False, ops=tri_ops):
    res = inputs(B, T, D, dtype=dtype, device=kernel_device, requires_grad=True)
    br = inputs(B, T, D, dtype=dtype, device=kernel_device, seed=1, requires_grad=with_res)
    mod = (0.1 * inputs(B, 6 * D, device=kernel_device, seed=2)).to(dtype).requires_grad_()
    w = inputs(D, device=kernel_device, seed=3, requires_grad=True) if norm == "rms" else None
    args = [res, br, mod, w]
    if stride0:  # what out.sum().backward() produces
        grads = [torch.ones((), device=kernel_device).expand(B, T, D)] * 2
    else:
        grads = [inputs(B, T, D, device=kernel_device, seed=4 + i) for i in range(2)]
    grads = grads if with_res else grads[1:]
    outs, got = run_with_grads(boundary_fn(ops, norm, with_res, D), args, grads)
    e_outs, eager = run_with_grads(boundary_fn(ref_ops, norm, with_res, D), args, grads)
    r_outs, ref = run_with_grads(boundary_fn(ref_ops, norm, with_res, D), upcast(args), [g.double() for g in grads])
    for name, k, e, r in zip(["r", "h"] if with_res else ["h"], outs, e_outs, r_outs):
        assert_parity(name, k, e, r, dtype)
    names = ["dresidual"] + (["dbranch"] if with_res else []) + ["dmod"] + (["dweight"] if w is not None else [])
    sums = [D] + ([D] if with_res else []) + [T * D] + ([B * T] if w is not None else [])
    for name, k, e, r, n in zip(names, got, eager, ref, sums):
        assert_parity(name, k, e, r, dtype, n=n)
    if dtype != torch.float32 and with_res:
        assert outs[0].dtype == dtype and outs[1].dtype == dtype


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm", ["rms", "layer"])
@pytest.mark.parametrize("with_res", [True, False])
def test_block_boundary(kernel_device, kernels, dtype, norm, with_res):
    check(kernel_device, dtype, B=2, T=7, D=72, norm=norm, with_res=with_res, ops=kernels)


@pytest.mark.parametrize("B,T,D", [(1, 5, 37), (3, 3, 144), (1, 1, 160), (1, 2, 4104)])  # 4104: > 1024 vectors
def test_odd_shapes(kernel_device, kernels, B, T, D):
    check(kernel_device, torch.float32, B, T, D, "rms", True, ops=kernels)


def test_stride0_upstream_gradients(kernel_device, kernels):
    check(kernel_device, torch.float32, 2, 5, 40, "rms", True, stride0=True, ops=kernels)


def test_bf16_autocast_emits_bf16(kernel_device):
    x = inputs(2, 3, 8, device=kernel_device)
    mod = inputs(2, 6 * 8, device=kernel_device)
    with torch.autocast(kernel_device.type, dtype=torch.bfloat16):
        h = tri_ops.modulated_norm(x, torch.ones(8, device=kernel_device), mod[:, :8], mod[:, 8:16])
    assert h.dtype == torch.bfloat16


def test_bad_arguments_raise_before_launch():
    x, mod = inputs(2, 3, 8), inputs(2, 48)
    with pytest.raises(ValueError, match=r"shift must have shape \(2, 8\)"):
        tri_ops.modulated_norm(x, None, mod[:1, :8], mod[:, 8:16])
    with pytest.raises(ValueError, match="x must have rank 3"):
        tri_ops.modulated_norm(x[0], None, mod[:, :8], mod[:, 8:16])
    with pytest.raises(TypeError, match="branch must be float32"):
        tri_ops.block_boundary(x, x.long(), mod[:, :8], None, mod[:, :8], mod[:, 8:16])
    with pytest.raises(ValueError, match="weight must be None"):
        tri_ops.modulated_norm(x, torch.ones(8), mod[:, :8], mod[:, 8:16], norm="layer")
    with pytest.raises(ValueError, match="weight must be on"):
        tri_ops.modulated_norm(x, torch.ones(8, device="meta"), mod[:, :8], mod[:, 8:16])


@interpreted_only
def test_opcheck():
    x, br = inputs(2, 3, 8), inputs(2, 3, 8, seed=1)
    mod, w = inputs(2, 48, seed=2), inputs(8, seed=3)
    args = (x, br, mod[:, 16:24], w, mod[:, :8], mod[:, 8:16], 0, 1e-6, torch.float32, "triton")
    torch.library.opcheck(custom_ops.block_boundary_fwd, args)
    torch.library.opcheck(custom_ops.block_boundary_fwd, (x, None, None, None, mod[:, :8], mod[:, 8:16], 1, 1e-6,
                                                       torch.float32, "triton"))


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.mem_get_info()[0] < 60 * 2**30,
                    reason="needs a GPU with 60 GB free: offsets past 2^31 elements")
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_offsets_past_2_31_elements(backend):
    """B·T·D > 2^31: the last sample's rows must match the reference computed on that sample alone."""
    B, T, D = 2, 932_500, 1152  # 2.15e9 elements per activation
    dev, bf = torch.device("cuda"), torch.bfloat16
    res = torch.randn(B, T, D, device=dev, dtype=bf).requires_grad_()
    br = torch.randn(B, T, D, device=dev, dtype=bf).requires_grad_()
    mod = (0.1 * torch.randn(B, 6 * D, device=dev)).to(bf).requires_grad_()
    w = torch.ones(D, device=dev, requires_grad=True)
    if backend == "cuda" and extension() is None:
        pytest.skip("the CUDA extension was not built")
    r, h = BACKENDS[backend].block_boundary(res, br, mod[:, 2 * D:3 * D], w, mod[:, :D], mod[:, D:2 * D])
    tail = slice(T - 4096, T)
    want_r, want_h = ref_ops.block_boundary(res[1:, tail], br[1:, tail], mod[1:, 2 * D:3 * D], w, mod[1:, :D],
                                            mod[1:, D:2 * D])
    torch.testing.assert_close(r[1:, tail], want_r, rtol=0, atol=0)
    torch.testing.assert_close(h[1:, tail].float(), want_h.float(), rtol=2e-2, atol=2e-2)  # bf16 output rounding
    dres, dbr = torch.autograd.grad([r, h], [res, br], [torch.ones_like(r), torch.ones_like(h)])
    wr, wb = torch.autograd.grad([want_r, want_h], [res, br], [torch.ones_like(want_r), torch.ones_like(want_h)])
    torch.testing.assert_close(dres[1:, tail].float(), wr[1:, tail].float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(dbr[1:, tail].float(), wb[1:, tail].float(), rtol=2e-2, atol=2e-2)


def test_cuda_backend_fails_cleanly_without_a_gpu(real_cuda_extension):
    x, mod = inputs(2, 3, 8), inputs(2, 48)
    with pytest.raises(ValueError, match="the CUDA backend needs CUDA tensors, got x on cpu"):
        cuda_ops.modulated_norm(x, None, mod[:, :8], mod[:, 8:16])


@pytest.mark.skipif(not torch.cuda.is_available() or extension() is None, reason="needs the CUDA extension and a GPU")
def test_cuda_kernels_capture_in_a_cuda_graph():
    """The kernels launch on the current stream and allocate nothing themselves: a graph replays them."""
    dev = torch.device("cuda")
    x = inputs(4, 256, 1152, device=dev, dtype=torch.bfloat16)
    br = inputs(4, 256, 1152, device=dev, seed=1, dtype=torch.bfloat16)
    mod, w = inputs(4, 6 * 1152, device=dev, seed=2, dtype=torch.bfloat16), inputs(1152, device=dev, seed=3)
    args = (x, br, mod[:, :1152], w, mod[:, 1152:2304], mod[:, 2304:3456])
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        cuda_ops.block_boundary(*args)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        r, h = cuda_ops.block_boundary(*args)
    x.add_(1.0)  # new inputs in the same buffers
    graph.replay()
    want_r, want_h = cuda_ops.block_boundary(*args)
    torch.testing.assert_close(r, want_r, rtol=0, atol=0)
    torch.testing.assert_close(h, want_h, rtol=0, atol=0)
