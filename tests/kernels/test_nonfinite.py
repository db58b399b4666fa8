"""NaN and inf survive every kernel that stores bf16 (Triton interpreted / CUDA emulated without a GPU, compiled on
one): a diverging run must not look healthy. Special values — NaN payloads 0x7FFFFFFF (the GPU's canonical NaN),
0x7FC00000, 0xFFC00001, and ±inf — go into one element of an input (forward) or of the upstream gradient
(backward) under bf16 autocast; wherever the fp32 reference is NaN the kernel must be NaN, wherever it is ±inf the
kernel must be non-finite."""
import pytest
import torch
import triton
import triton.language as tl

from dip_kernels import implementations
from dip_kernels.triton_support import cast_to
from tests.support.backends import cuda_kernels_run_on
from tests.support.op_cases import case, kernel_pairs, leaves_of
from tests.support.parity import inputs

SPECIALS = {"nan_7fffffff": 0x7FFFFFFF, "nan_7fc00000": 0x7FC00000, "nan_ffc00001": 0xFFC00001, "+inf": 0x7F800000,
            "-inf": 0xFF800000}
PAIRS = kernel_pairs()
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # numpy, on purpose


def special(bits: int) -> torch.Tensor:
    """The float32 with these raw bits (a 1-element tensor)."""
    return torch.tensor([bits - (1 << 32) if bits >= 1 << 31 else bits], dtype=torch.int32).view(torch.float32)


def _outputs_and_grads(impl, c, leaves, grads, autocast):
    with torch.autocast(next(iter(leaves.values())).device.type, dtype=torch.bfloat16, enabled=autocast):
        outs = c.call(impl, leaves)
    wanted = [t for t in leaves.values() if t.requires_grad]
    got = torch.autograd.grad(list(outs), wanted, [g.to(o.dtype) for o, g in zip(outs, grads)], allow_unused=True)
    return [o.float() for o in outs], [g for g in got if g is not None]


def _assert_propagates(what, kernel, reference):
    for k, (got, ref) in enumerate(zip(kernel, reference)):
        assert torch.isnan(got[torch.isnan(ref)]).all(), f"{what}: tensor {k} lost a NaN"
        assert (~torch.isfinite(got[torch.isinf(ref)])).all(), f"{what}: tensor {k} lost an inf"
    assert any((~torch.isfinite(r)).any() for r in reference), f"{what}: the special value reached nothing"


def _run(kernel_device, op, backend, value, into_gradient):
    if backend == "cuda" and not cuda_kernels_run_on(kernel_device):
        pytest.skip("the CUDA extension needs a CUDA device (or its emulator)")
    c = case(op)
    leaves, ref_leaves = leaves_of(c, kernel_device), leaves_of(c, kernel_device)
    grads = [inputs(*s, device=kernel_device, seed=40 + i) for i, s in enumerate(c.out_shapes)]
    for t in [grads[0]] if into_gradient else [next(iter(ls.values())).detach() for ls in (leaves, ref_leaves)]:
        t.view(-1)[1] = special(value).to(kernel_device)  # element 1: the one after a 16-byte-aligned start
    outs, got = _outputs_and_grads(implementations(op)[backend], c, leaves, grads, autocast=True)
    r_outs, ref = _outputs_and_grads(implementations(op)["torch"], c, ref_leaves, grads, autocast=False)
    if into_gradient:
        _assert_propagates(f"{op}/{backend} gradient", got, ref)
    else:
        _assert_propagates(f"{op}/{backend} forward", outs, r_outs)


@pytest.mark.parametrize("op,backend", PAIRS, ids=[f"{op}-{b}" for op, b in PAIRS])
@pytest.mark.parametrize("value", list(SPECIALS.values()), ids=list(SPECIALS))
def test_forward_keeps_nan_and_inf(kernel_device, op, backend, value):
    _run(kernel_device, op, backend, value, into_gradient=False)


@pytest.mark.parametrize("op,backend", PAIRS, ids=[f"{op}-{b}" for op, b in PAIRS])
@pytest.mark.parametrize("value", [SPECIALS["nan_7fffffff"], SPECIALS["+inf"]], ids=["nan", "inf"])
def test_backward_keeps_nan_and_inf(kernel_device, op, backend, value):
    _run(kernel_device, op, backend, value, into_gradient=True)


@triton.jit
def _store_kernel(x_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n)
    tl.store(y_ptr + offs, cast_to(x, y_ptr.dtype.element_ty), mask=offs < n)


def test_bf16_store_is_the_hardware_conversion(kernel_device):
    """The kernels' bf16 store bit for bit against torch's conversion (round to nearest even, NaN stays NaN, ±inf
    and overflow to inf): ties both ways, NaN payloads, infinities, the largest float."""
    x = torch.cat([special(b) for b in (0x3F808000, 0x3F818000, 0x3F80C001, 0xBF808000, 0x7FFFFFFF, 0x7FC00000,
                                        0xFFC00001, 0x7F800001, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x00000001)])
    x = x.to(kernel_device)
    got = torch.empty(x.shape, dtype=torch.bfloat16, device=kernel_device)
    _store_kernel[(1,)](x, got, x.numel(), BLOCK=16)
    want = x.to(torch.bfloat16)
    nan = torch.isnan(want)
    assert torch.isnan(got[nan]).all(), "a NaN was stored as a number"
    assert torch.equal(got[~nan].view(torch.int16), want[~nan].view(torch.int16))
