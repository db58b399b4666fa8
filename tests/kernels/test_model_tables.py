"""Whole-model gradient parity for every op table a user can end up with (docs/kernels.md §3): each
architecture row of the ``auto`` preference table (the measured JSON when present), ``kernels="triton"``,
``kernels="cuda"``, and mixed tables that put one kernel among reference ops, at P = 8, 16 and 32 (the 1×1
Detailer bottleneck at P = 8 and 16, 2×2 at P = 32), with and without merged projections and gradient
checkpointing. Weights are randomised to order-1 values (adaLN gates included) so that every path carries
gradient. Every parameter's gradient is held to the parity rule against the fp64 reference.

Narrow widths keep this inside CI's budget on the Triton interpreter and the CUDA emulator: D = 32 with two heads,
a 2P × P image (two tokens per sample, a non-square token grid), Detailer base width 4.
"""
import copy
import functools

import pytest
import torch

from dip import create_model
from dip_kernels import KernelTable
from dip_kernels.preferences import load_preferences
from tests.support.backends import cuda_kernels_run_on
from tests.support.op_cases import kernel_pairs
from tests.support.parity import assert_parity

VARIANTS = {"plain": (False, False), "merged": (True, False), "ckpt": (False, True), "merged+ckpt": (True, True)}


def _full_tables() -> dict:
    """Name → table for every table reachable without naming ops: auto's rows (identical rows merged) and the
    two single-backend choices."""
    tables = {}
    for arch, row in sorted(load_preferences().items()):
        same = [name for name, t in tables.items() if t == row]
        if same:
            tables[f"{same[0]},{arch}"] = tables.pop(same[0])
        else:
            tables[f"auto@{arch}"] = dict(row)
    return {**tables, "triton": "triton", "cuda": "cuda"}


def _configs():
    """(table name, table, P, variant): every full table at every P with every variant, except that the slow
    all-Triton model (the interpreted Detailer convolutions) takes two variants at P = 16 and one at P = 32;
    one-kernel tables at every P, the variant rotating so that each P sees several."""
    out = []
    for name, table in _full_tables().items():
        for P in (8, 16, 32):
            variants = list(VARIANTS)
            if name == "triton" and P > 8:
                variants = ["plain", "merged+ckpt"] if P == 16 else ["merged+ckpt"]
            out += [(name, table, P, v) for v in variants]
    for i, (op, backend) in enumerate(kernel_pairs()):
        for j, P in enumerate((8, 16, 32)):
            out.append((f"{op}={backend}", {op: backend}, P, list(VARIANTS)[(i + j) % len(VARIANTS)]))
    return out


CONFIGS = _configs()


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Order-1 weights everywhere: N(0, 1/fan_in) matrices, norm weights 1 ± 0.3, biases ±0.3."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if p.dim() > 1:
                p.copy_(noise / p[0].numel() ** 0.5)
            elif "norm" in name:
                p.copy_(1 + 0.3 * noise)
            else:
                p.copy_(0.3 * noise)


def _gradients(model, x, t, y, grad):
    model.zero_grad(set_to_none=True)
    model(x, t, y).backward(grad)
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # CPU: interpreter and emulator


@functools.lru_cache(maxsize=4)
def _setup(P: int, variant: str):
    """The randomised model, its inputs, and the eager fp32 and fp64 reference gradients (cached per P, variant)."""
    merged, ckpt = VARIANTS[variant]
    torch.manual_seed(0)
    model = create_model("DiP-T/8", patch_size=P, image_size=2 * P, depth=2, hidden_size=32, num_heads=2,
                         head_base_width=4, kernels="torch", merged_projections=merged, gradient_checkpointing=ckpt)
    _randomise(model, seed=P)
    model.to(DEVICE)
    g = torch.Generator().manual_seed(P)
    B = 1 if P == 32 else 2  # batch 2 checks per-sample indexing; P = 32 keeps one sample for time
    x = torch.randn(B, 3, 2 * P, P, generator=g)
    t = torch.rand(B, generator=g)
    y = torch.tensor([3, model.num_classes][:B])
    grad = torch.randn(x.shape, generator=g)
    x, t, y, grad = (a.to(DEVICE) for a in (x, t, y, grad))
    eager = _gradients(model, x, t, y, grad)
    ref_model = copy.deepcopy(model).double()
    ref = _gradients(ref_model, x.double(), t.double(), y, grad.double())
    return model, (x, t, y, grad), eager, ref


@pytest.mark.parametrize("name,table,P,variant", CONFIGS, ids=[f"{c[0]}-P{c[2]}-{c[3]}" for c in CONFIGS])
def test_every_reachable_table_gives_reference_gradients(name, table, P, variant):
    uses_cuda = table == "cuda" or (isinstance(table, dict) and "cuda" in table.values())
    if uses_cuda and not cuda_kernels_run_on(DEVICE):
        pytest.skip("the CUDA extension needs a CUDA device (or its emulator)")
    model, (x, t, y, grad), eager, ref = _setup(P, variant)
    model.set_kernels(table)
    try:
        report = model.kernel_report(DEVICE.type)
        wanted = table if isinstance(table, dict) else {op: table for op in report}
        ran = {op for op, b in report.items() if b != "torch"}
        assert ran, f"{name}: no kernel ran (report {report})"
        assert ran == {op for op, b in wanted.items() if b != "torch" and report[op] == b}
        got = _gradients(model, x, t, y, grad)
    finally:
        model.set_kernels("torch")
    pixels = x.shape[0] * x.shape[2] * x.shape[3]  # the largest number of terms any gradient sums
    for param in ref:
        assert_parity(f"{name} P={P} {variant}: {param}", got[param], eager[param], ref[param], torch.float32,
                      n=pixels)


def test_auto_tables_are_the_tested_ones():
    """``auto`` resolves through exactly the preference rows this file tests."""
    for arch, row in load_preferences().items():
        table = KernelTable(row)
        assert any(t == row for t in _full_tables().values()), arch
        assert set(table.report("cpu")) >= set(row)
