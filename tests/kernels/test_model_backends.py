"""The model with kernels="triton" (interpreted on CPU, compiled on GPU) and kernels="cuda" (the GPU, or the
emulator on CPU) against the reference backend."""

import pytest
import torch

from tests.support.backends import cuda_kernels_run_on
from tests.support.models import model_inputs, tiny_model
from tests.support.parity import assert_parity

TRITON_OPS = {"block_boundary", "modulated_norm", "qk_norm_rope", "final_context", "swiglu", "patch_embed",
              "detailer_stem", "detailer_encoder", "detailer_bottleneck", "detailer_decoder", "detailer_output",
              "detailer_decoder_output"}
CUDA_OPS = {"block_boundary", "modulated_norm", "final_context", "patchify", "unpatchify", "patch_embed",
            "qk_norm_rope", "detailer_stem", "detailer_output", "detailer_decoder_output"}


def run(model, x, t, y, grad):
    model.zero_grad()
    v = model(x, t, y)
    v.backward(grad.to(v.dtype))
    return v.detach(), {n: p.grad.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("backend", ["triton", "cuda"])
@pytest.mark.parametrize("head", ["detailer", "dit"])
def test_kernel_model_matches_reference(kernel_device, backend, head):
    if backend == "cuda" and not cuda_kernels_run_on(kernel_device):
        pytest.skip("the CUDA extension needs a CUDA device (or its emulator)")
    torch.manual_seed(0)
    model = tiny_model(head=head, kernels=backend).to(kernel_device)
    report = model.kernel_report(kernel_device.type)
    want = TRITON_OPS if backend == "triton" else CUDA_OPS  # conftest interprets/emulates without a GPU
    assert {op for op, b in report.items() if b == backend} == want
    x, t, y = model_inputs(model, device=kernel_device)
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(kernel_device)
    v_k, g_k = run(model, x, t, y, grad)
    model.set_kernels("torch")
    v_e, g_e = run(model, x, t, y, grad)
    model.double()
    v_r, g_r = run(model, x.double(), t.double(), y, grad.double())
    assert_parity("velocity", v_k, v_e, v_r, torch.float32)
    rows = x.shape[0] * (x.shape[2] // model.patch_size) ** 2
    for name in g_r:
        assert_parity(name, g_k[name], g_e[name], g_r[name], torch.float32, n=rows)  # sums over token rows


def test_compiled_triton_model_has_no_graph_breaks(kernel_device):
    torch.manual_seed(0)
    model = tiny_model(kernels="triton").to(kernel_device).eval()
    x, t, y = model_inputs(model, device=kernel_device)
    with torch.no_grad():
        want = model(x, t, y)
        got = torch.compile(model, fullgraph=True, dynamic=False)(x, t, y)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
