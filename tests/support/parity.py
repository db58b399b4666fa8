"""The parity rule of docs/kernels.md §2 (the one flash-attention uses), shared by every kernel test.

A kernel passes if max|kernel − ref| ≤ 2·max|eager − ref| + atol, where ref is computed in fp64 on upcast
inputs and eager is the reference op run in the inputs' own precision. atol is 1e-4 (fp32) or 5e-2 (bf16/fp16),
scaled by √n for values that are sums over n rows or n = Cin·9 convolution taps.
"""
import math
import os

import pytest
import torch

# tests that run kernels on CPU tensors (opcheck with its CPU inputs) need the interpreter
interpreted_only = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                      reason="runs the kernels on CPU tensors: needs TRITON_INTERPRET=1")

ATOL = {torch.float32: 1e-4, torch.float16: 5e-2, torch.bfloat16: 5e-2}


def inputs(*shape, dtype=torch.float32, device="cpu", seed=0, requires_grad=False):
    """Random values with a non-zero mean (0.5 + 2·randn), never zeros."""
    g = torch.Generator().manual_seed(seed)
    t = (0.5 + 2 * torch.randn(*shape, generator=g)).to(device=device, dtype=dtype)
    return t.requires_grad_(requires_grad)


def assert_parity(name, kernel, eager, ref, dtype, n=1):
    """Assert the rule for one tensor; ``n`` is the number of terms summed into each value (√n scaling)."""
    assert kernel.shape == ref.shape, f"{name}: shape {tuple(kernel.shape)} != {tuple(ref.shape)}"
    assert torch.isfinite(kernel).all(), f"{name}: non-finite values (unwritten or overflow)"
    err = (kernel.double() - ref.double()).abs().max().item()
    eager_err = (eager.double() - ref.double()).abs().max().item()
    bound = 2 * eager_err + ATOL[dtype] * math.sqrt(n)
    if os.environ.get("DIP_PARITY_LOG"):  # for before/after comparisons of a refactor: every checked error
        with open(os.environ["DIP_PARITY_LOG"], "a") as log:
            log.write(f"{os.environ.get('PYTEST_CURRENT_TEST', '').split('::')[-1]}\t{name}\t{err!r}\n")
    assert err <= bound, f"{name}: max error {err:.3e} > bound {bound:.3e} (eager error {eager_err:.3e})"


def run_with_grads(fn, args, grads):
    """outputs of fn(*args) and the gradients of every args that requires grad, for output gradients ``grads``."""
    outs = fn(*args)
    outs = outs if isinstance(outs, tuple) else (outs,)
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    pairs = [(o, g) for o, g in zip(outs, grads) if g is not None]
    got = torch.autograd.grad([o for o, _ in pairs], leaves, [g.to(o.dtype) for o, g in pairs])
    return outs, got


def upcast(args):
    """fp64 leaf copies of tensor args (requires_grad kept)."""
    return [a.detach().double().requires_grad_(a.requires_grad) if isinstance(a, torch.Tensor) else a for a in args]


class poisoned_allocations:
    """Inside the block, new float tensors from torch.empty / empty_like / new_empty are NaN-filled, so an
    element a kernel fails to write makes the result non-finite (docs/kernels.md §2)."""

    def __enter__(self):
        self.saved = torch.empty, torch.empty_like, torch.Tensor.new_empty

        def poison(fn):
            def make(*args, **kwargs):
                t = fn(*args, **kwargs)
                return t.fill_(float("nan")) if t.is_floating_point() else t
            return make

        torch.empty, torch.empty_like = poison(self.saved[0]), poison(self.saved[1])
        torch.Tensor.new_empty = poison(self.saved[2])
        return self

    def __exit__(self, *exc):
        torch.empty, torch.empty_like, torch.Tensor.new_empty = self.saved
        return False


def check_against_reference(device, dtype, kernel_fn, ref_fn, args, grad_shapes, out_names, out_n, grad_names,
                            grad_n):
    """Run ``kernel_fn`` (with poisoned allocations), ``ref_fn`` in low precision and ``ref_fn`` in fp64, and assert
    the parity rule on every output and input gradient (``*_n``: terms summed into each value).

    bf16 runs the way training does: bf16 activations, fp32 parameters, bf16 autocast. The fp64 reference takes the
    inputs as autocast hands them to the kernels (rounded to bf16): input quantisation is not kernel error, and it
    would otherwise flip max-pool winners between near-equal values. Returns the kernel's outputs."""
    grads = [inputs(*s, device=device, seed=50 + i) for i, s in enumerate(grad_shapes)]
    low = torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)
    with poisoned_allocations(), low:
        outs, got = run_with_grads(kernel_fn, args, grads)
    with low:
        e_outs, eager = run_with_grads(ref_fn, args, grads)
    quantised = [a.detach().to(dtype).requires_grad_(a.requires_grad) for a in args]
    r_outs, ref = run_with_grads(ref_fn, upcast(quantised), [g.double() for g in grads])
    for name, k, e, r, n in zip(out_names, outs, e_outs, r_outs, out_n):
        assert_parity(name, k, e, r, dtype, n=n)
    for name, k, e, r, n in zip(grad_names, got, eager, ref, grad_n):
        assert_parity(name, k, e, r, dtype, n=n)
    return outs


def compare(fn_kernel, fn_ref, args, grads, dtype, out_names, grad_names, sums):
    """Outputs and input gradients of ``fn_kernel`` against ``fn_ref`` (in the inputs' precision and in fp64) under
    the parity rule; ``sums``: terms summed into each gradient value. Returns the kernel's outputs."""
    outs, got = run_with_grads(fn_kernel, args, grads)
    e_outs, eager = run_with_grads(fn_ref, args, grads)
    r_outs, ref = run_with_grads(fn_ref, upcast(args), [g.double() for g in grads])
    for name, k, e, r in zip(out_names, outs, e_outs, r_outs):
        assert_parity(name, k, e, r, dtype)
    for name, k, e, r, n in zip(grad_names, got, eager, ref, sums):
        assert_parity(name, k, e, r, dtype, n=n)
    return outs
