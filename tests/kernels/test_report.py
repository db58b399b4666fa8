"""CI gates from the compile-as-launched kernel report (benchmarks/tools/kernel_report.py, docs/kernels.md §8): what the
GPU would run, read from the cubins Triton and nvcc build here without a GPU, at DiP-XL/16 batch 32 — the figures of
the whole 26-block step, extrapolated from captures at depths 1 and 2 (exact: tested against a direct capture at
depth 3). The gates are the README's claims. Every kernel also compiles for sm_80."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
MEMORY_BOUND = ("block_boundary", "qk_norm_rope", "final_context", "swiglu")  # ops A, B, C, F


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory):
    """The report of DiP-XL/16 at batch 32 from captures at depths 1 and 2 (kept beside it)."""
    folder = tmp_path_factory.mktemp("report")
    done = subprocess.run([sys.executable, "-m", "benchmarks.tools.kernel_report", "--depth", "1", "--archs", "90,80",
                           "--out", str(folder / "report.json"), "--captures", str(folder)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder


@pytest.fixture(scope="module")
def report(report_folder):
    return json.loads((report_folder / "report.json").read_text())


def _rows(report, arch="sm_90", backend="triton", ops=MEMORY_BOUND):
    return [r for r in report["archs"][arch] if r["backend"] == backend and r["op"] in ops]


def _cuda_vector_rows(report, arch="sm_90"):
    """The 16-byte-vector bf16 instantiations of the CUDA kernels of A, B, C, E (what bf16 training runs)."""
    return [r for r in _rows(report, arch, backend="cuda", ops=("block_boundary", "qk_norm_rope", "final_context",
                                                          "patchify")) if r["kernel"].endswith("<bf16, 8>")]


def test_every_kernel_compiles_for_both_architectures(report):
    def kernels(arch):
        return sorted((r["backend"], r["op"], r["kernel"], r.get("grid")) for r in report["archs"][arch])

    assert kernels("sm_90") == kernels("sm_80")  # row by row
    for backend in ("triton", "cuda"):
        assert sum(r["launches"] for r in report["archs"]["sm_80"] if r["backend"] == backend) == \
            report["launches_per_step"][backend]


def test_the_cuda_rows_the_gates_read_exist(report):
    """A renamed kernel would make the CUDA gates vacuous."""
    names = {(r["op"], r["kernel"].split("<")[0]) for r in _cuda_vector_rows(report)}
    assert {("block_boundary", "block_boundary_fwd_kernel"), ("block_boundary", "block_boundary_bwd_kernel"),
            ("qk_norm_rope", "qk_norm_rope_fwd_kernel"), ("qk_norm_rope", "qk_norm_rope_bwd_kernel"),
            ("final_context", "final_context_fwd_kernel"), ("final_context", "final_context_bwd_kernel"),
            ("patchify", "patch_copy_kernel")} <= names, names


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_no_kernel_of_the_step_spills(report, arch):
    rows = [r for r in report["archs"][arch] if r["launches"]]
    assert {r["backend"] for r in rows} == {"triton", "cuda"}
    assert all(r["spill"] == 0 for r in rows), [(r["op"], r["kernel"], r["spill"]) for r in rows if r["spill"]]


def test_the_step_launches_only_the_vectorised_cuda_instantiations(report):
    """Per-instantiation launch counts (the launchers' own choice, recorded by the emulator's dry run): bf16 training
    runs the 16-byte paths of A, B, C, E and of the head's output conv; the fp32 image is patchified 4 at a time."""
    launched = [r["kernel"] for r in report["archs"]["sm_90"] if r["backend"] == "cuda" and r["launches"]
                and not r["kernel"].startswith("stem_")]
    assert launched and all(k.endswith(("<bf16, 8>", "<fp32, 4>")) for k in launched), launched
    total = sum(r["launches"] for r in report["archs"]["sm_90"] if r["backend"] == "cuda")
    assert total == report["launches_per_step"]["cuda"]


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


@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_no_zero_filled_gradients(report, backend):
    """No materialised zero gradients in the whole step: the head's unused outputs (1.46 GB of memset per step before)
    and block_boundary's statistics (1.7 MB: 64 KB per block before)."""
    zero = sum(v for k, v in report["glue_bytes_per_step"][backend].items() if "zero_fill" in k)
    assert zero < 1 << 20, report["glue_bytes_per_step"]


def test_the_depth_extrapolation_equals_a_direct_capture(report_folder, tmp_path):
    """Every per-step figure is f(1) + k·(f(2) − f(1)); at k = 2 it must equal a capture of 3 blocks."""
    from benchmarks.tools import kernel_report as kr

    caps = [json.loads((report_folder / f"capture_triton_depth{d}.json").read_text()) for d in (1, 2)]
    caps.append(kr.capture("triton", "DiP-XL/16", 32, 3, tmp_path))
    for count in (kr._traffic_counts, lambda cap: {"n": len(cap["launches"])}):
        assert kr.extrapolate(count(caps[0]), count(caps[1]), 2) == count(caps[2])
    assert kr.glue_summary(caps[:2], 2) == kr.glue_summary((caps[2], caps[2]), 0)


SASS = """
        /*0a10*/                   LDGSTS.E.BYPASS.LTC128B.128 [R5+0x4000], desc[UR6][R2.64] ;
        /*0a20*/                   LDGSTS.E.BYPASS.LTC128B.128 [R5+0x4800], desc[UR6][R2.64+0x80] ;
        /*0a30*/                   LDGSTS.E [R7], desc[UR6][R8.64] ;
        /*0a40*/                   LDGDEPBAR ;
        /*0a50*/                   LDG.E.128 R12, desc[UR6][R10.64] ;
        /*0a60*/                   LDG.E R14, desc[UR6][R10.64+0x10] ;
        /*0a70*/                   STG.E.U16 desc[UR6][R16.64], R17 ;
        /*0a80*/                   UTMALDG.2D [UR8], [UR10] ;
        /*0a90*/                   HGMMA.64x128x16.F32.BF16 R24, gdesc[UR4], R24 ;
"""


def test_access_widths_parse_whole_opcodes():
    from benchmarks.tools.kernel_compile import sass_counts
    from benchmarks.tools.kernel_report import _async, _widths

    counts = sass_counts(SASS)
    assert _widths(counts, "LDG") == "128:1 32:1"  # LDGSTS and LDGDEPBAR are not plain loads
    assert _widths(counts, "STG") == "16:1"
    assert _async(counts) == "128:2 32:1 tma:1" and counts["cp_async"] == 4
    assert counts["wgmma"] == 1


def test_the_dry_run_names_the_instantiation_each_launch_picks():
    """The emulator's dry run records what the real launcher chose, by symbol: 16-byte copies for an aligned fp32
    image, element by element for a misaligned view — and runs nothing (the output keeps its fill)."""
    from benchmarks.tools.kernel_capture import kernel_symbols
    from benchmarks.tools.kernel_compile import demangle
    from dip_kernels import cuda_ext
    from dip_kernels.patch_embed.cuda import launch_copy

    ext = cuda_ext.extension() if cuda_ext.emulated() else None
    if ext is None:
        pytest.skip("needs the CUDA extension's emulated twin (dip_kernels._cuda_emulated)")
    symbols, chosen = kernel_symbols(ext.__file__), []
    storage = torch.zeros(2 * 3 * 32 * 32 + 1)
    ext.set_dry_run(True)
    try:
        for img in (storage[:-1].view(2, 3, 32, 32), storage[1:].view(2, 3, 32, 32)):
            dst = torch.full((8, 3, 16, 16), 7.0)
            launch_copy(img, dst, 16, True, img.shape)
            chosen += [demangle(symbols[launch["offset"]]) for launch in ext.take_launches()]
            assert bool((dst == 7).all())
    finally:
        ext.set_dry_run(False)
    assert chosen == ["patch_copy_kernel<fp32, 4>", "patch_copy_kernel<fp32, 1>"]
