"""Property tests: every kernel (Triton interpreted / CUDA emulated without a GPU, compiled on one) forward and
backward, with random memory layouts of every input and every upstream gradient, against the fp64 reference
under the parity rule (docs/kernels.md §3). Layouts: transposed memory, row-strided views of wider
buffers, stride-0 expanded rows, storage offsets that break 16-byte alignment, channels_last."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dip_kernels import implementations
from tests.support.backends import cuda_kernels_run_on
from tests.support.op_cases import LAYOUTS, applicable, case, kernel_pairs, leaves_of, relayout
from tests.support.parity import assert_parity, inputs

PAIRS = kernel_pairs()


def _layouts(draw, shapes):
    return [draw(st.sampled_from([lay for lay in LAYOUTS if applicable(lay, s)])) for s in shapes]


def _run(impl, c, leaves, in_layouts, grads):
    laid = {n: relayout(leaf, lay) for (n, leaf), lay in zip(leaves.items(), in_layouts)}
    outs = c.call(impl, laid)
    names = [n for n, leaf in leaves.items() if leaf.requires_grad]
    got = torch.autograd.grad(list(outs), [leaves[n] for n in names], [g.to(o.dtype) for o, g in zip(outs, grads)],
                              allow_unused=True)
    return outs, {n: torch.zeros_like(leaves[n]) if g is None else g for n, g in zip(names, got)}


@pytest.mark.parametrize("op,backend", PAIRS, ids=[f"{op}-{b}" for op, b in PAIRS])
@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_any_layout_matches_the_reference(kernel_device, op, backend, data):
    if backend == "cuda" and not cuda_kernels_run_on(kernel_device):
        pytest.skip("the CUDA extension needs a CUDA device (or its emulator)")
    c = case(op)
    shapes = [s for s, _, _ in c.leaves.values()]
    in_layouts = _layouts(data.draw, shapes)
    grad_layouts = _layouts(data.draw, c.out_shapes)
    grads = [relayout(inputs(*s, device=kernel_device, seed=40 + i), lay)
             for i, (s, lay) in enumerate(zip(c.out_shapes, grad_layouts))]
    kernel, reference = implementations(op)[backend], implementations(op)["torch"]
    outs, got = _run(kernel, c, leaves_of(c, kernel_device), in_layouts, grads)
    e_outs, eager = _run(reference, c, leaves_of(c, kernel_device), in_layouts, grads)
    r_outs, ref = _run(reference, c, leaves_of(c, kernel_device, torch.float64), in_layouts,
                       [g.double() for g in grads])
    where = f"{op}/{backend} inputs {in_layouts} gradients {grad_layouts}"
    for k, (o, e, r) in enumerate(zip(outs, e_outs, r_outs)):
        assert_parity(f"{where}: output {k}", o, e, r, torch.float32, n=c.out_sums[k] if c.out_sums else 1)
    for name in ref:
        assert_parity(f"{where}: d{name}", got[name], eager[name], ref[name], torch.float32, n=c.leaves[name][2])


def test_every_kernel_is_covered():
    """Each op with a Triton or CUDA kernel registered has a case here (a new kernel needs one)."""
    from dip_kernels import ops
    kernels = {op for op in ops() if set(implementations(op)) & {"triton", "cuda"}} - {"attention"}
    assert {op for op, _ in PAIRS} == kernels
