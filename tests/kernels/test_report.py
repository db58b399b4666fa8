"""CI gates from the compile-as-launched kernel report (benchmarks/tools/kernel_report.py, docs/kernels.md §8): what the
GPU would run, read from the cubins Triton and nvcc build here without a GPU, at DiP-XL/16 batch 32 (one block
captured; every block launches the same kernels). Every kernel also compiles for sm_80."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MEMORY_BOUND = ("block_boundary", "qk_norm_rope", "final_context", "swiglu")  # ops A, B, C, F


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "report.json"
    done = subprocess.run([sys.executable, "-m", "benchmarks.tools.kernel_report", "--depth", "1", "--archs", "90,80",
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def _rows(report, arch="sm_90", backend="triton", ops=MEMORY_BOUND):
    return [r for r in report["archs"][arch] if r["backend"] == backend and r["op"] in ops]


def _cuda_vector_rows(report):
    """The 16-byte-vector bf16 instantiations of the CUDA kernels of A, B, C, E (what bf16 training runs)."""
    return [r for r in _rows(report, backend="cuda", ops=("block_boundary", "qk_norm_rope", "final_context",
                                                          "patchify")) if r["kernel"].endswith("<bf16, 8>")]


def test_every_kernel_compiles_for_both_architectures(report):
    for arch in ("sm_90", "sm_80"):
        assert len(_rows(report, arch, ops=MEMORY_BOUND + ("detailer", "patch_embed"))) >= 20, arch


def test_no_spills_in_the_memory_bound_kernels(report):
    rows = _rows(report) + _cuda_vector_rows(report)
    assert rows and all(r["spill"] == 0 for r in rows), [(r["op"], r["kernel"], r["spill"]) for r in rows]


def test_memory_bound_kernels_move_16_bytes_per_access(report):
    for r in _rows(report) + _cuda_vector_rows(report):
        widths = {int(w.split(":")[0]) for w in (r["ldg"] + " " + r["stg"]).split() if ":" in w}
        assert "128:" in r["ldg"] and "128:" in r["stg"], (r["op"], r["kernel"], r["ldg"], r["stg"])
        assert not widths & {8, 16}, (r["op"], r["kernel"], r["ldg"], r["stg"])


def test_every_dot_kernel_uses_wgmma_on_sm_90(report):
    dots = [r for r in report["archs"]["sm_90"] if r.get("dot")]
    assert dots and all(r["mma"] > 0 for r in dots), [(r["op"], r["kernel"]) for r in dots if not r["mma"]]


def test_reduction_grids_fit_one_wave(report):
    """The per-sample reductions size their grid from the SM count: never a partial second wave."""
    rows = [r for r in _rows(report, ops=("block_boundary", "final_context")) if r["kernel"] == "bwd_kernel"]
    assert rows and all(r["waves"] <= 1.0 for r in rows), [(r["op"], r["grid"], r["waves"]) for r in rows]


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_traffic_of_the_memory_bound_ops_is_near_the_minimum(report, backend):
    rows = [r for r in report["traffic"][backend] if r["op"] in MEMORY_BOUND]
    assert rows
    for r in rows:
        assert r["ratio"] <= (1.05 if r["dir"] == "fwd" else 1.10), r


def test_no_zero_filled_gradients(report):
    """The head's unused outputs (pre-activations, argmax, up) no longer get materialised zero gradients
    (1.46 GB of memset per step at batch 32 before)."""
    zero = sum(v for k, v in report["glue_bytes_per_step"]["triton"].items() if "zero_fill" in k)
    assert zero < 1 << 20, report["glue_bytes_per_step"]
