"""The backend switch (docs/kernels.md §4): names, process default, environment variable, per-model choice, report."""
import pytest
import torch

import dip_kernels
from dip_kernels import registry
from dip_kernels.cuda_ext import extension, require
from tests.support.models import tiny_model

SEAM_OPS = {"block_boundary", "modulated_norm", "qk_norm_rope", "final_context", "swiglu", "patch_embed", "patchify",
            "detailer_stem", "detailer_decoder_output",
            "unpatchify", "detailer_encoder", "detailer_bottleneck", "detailer_decoder", "detailer_output",
            "attention"}


def test_every_fusable_op_has_a_reference():
    assert set(dip_kernels.ops()) == SEAM_OPS
    assert all("torch" in dip_kernels.implementations(op) for op in SEAM_OPS)


@pytest.mark.parametrize("backend", ["torch", "triton", "cuda", "auto"])
def test_cpu_tensors_use_the_reference_unless_interpreting(backend, monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    monkeypatch.setenv("DIP_CUDA_EMULATE", "0")
    report = tiny_model(kernels=backend).kernel_report("cpu")
    assert set(report.values()) == {"torch"} and set(report) == SEAM_OPS


def test_auto_on_cuda_follows_the_preference_table(monkeypatch):
    def fake_kernel(*args):
        return "fake"

    monkeypatch.setitem(registry._IMPLS["swiglu"], "triton", fake_kernel)
    monkeypatch.setattr(registry, "_cuda_arch", lambda: "sm_90")
    monkeypatch.setitem(dip_kernels.preferences.PREFERENCES, "sm_90", {"swiglu": "triton"})
    table = dip_kernels.KernelTable("auto")
    assert table.report("cuda")["swiglu"] == "triton" and table.report("cuda")["block_boundary"] == "torch"
    assert table.on("cuda").swiglu is fake_kernel and table.on("cpu").swiglu is not fake_kernel
    assert dip_kernels.KernelTable("torch").report("cuda")["swiglu"] == "torch"


def test_interpreter_lets_triton_run_cpu_tensors(monkeypatch):
    def fake_kernel(*args):
        return "fake"

    monkeypatch.setitem(registry._IMPLS["final_context"], "triton", fake_kernel)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dip_kernels.KernelTable("triton").report("cpu")["final_context"] == "triton"
    assert dip_kernels.KernelTable("auto").report("cpu")["final_context"] == "torch"


def test_process_default_and_environment(monkeypatch):
    monkeypatch.setenv("DIP_KERNELS", "torch")
    assert dip_kernels.get_backend() == "torch"
    dip_kernels.set_backend("triton")
    try:
        assert tiny_model().kernels.backend == "triton"
        assert tiny_model(kernels="cuda").kernels.backend == "cuda"
    finally:
        dip_kernels.set_backend(None)
    assert tiny_model().kernels.backend == "torch"
    monkeypatch.setenv("DIP_KERNELS", "fastest")
    with pytest.raises(ValueError, match="kernels backend must be one of"):
        dip_kernels.get_backend()


def test_set_kernels_on_a_built_model():
    m = tiny_model(kernels="torch")
    m.set_kernels("auto")
    assert m.kernels.backend == "auto"
    with pytest.raises(ValueError, match="kernels backend"):
        m.set_kernels("tensorrt")


def test_unknown_op():
    with pytest.raises(ValueError, match="unknown op"):
        dip_kernels.implementations("layer_norm")


@pytest.mark.skipif(extension() is None, reason="the CUDA extension was not built (no nvcc at install)")
def test_cuda_extension_imports_and_fails_cleanly_without_a_gpu(real_cuda_extension):
    ext = extension()
    assert ext.runtime_version() >= 12000
    if torch.cuda.is_available():
        assert require().device_count() >= 1
    else:
        with pytest.raises(RuntimeError, match="cannot run here"):
            require()


def test_preference_table_names_registered_ops_and_backends():
    from dip_kernels.preferences import PREFERENCES

    for arch, table in PREFERENCES.items():
        for op, backend in table.items():
            assert backend in dip_kernels.implementations(op), (arch, op, backend)
