"""The benchmark scripts run end to end on CPU (numbers are not checked here: speed is for benchmarks)."""
import json
from pathlib import Path

import pytest
import torch

from benchmarks import bench_detailer
from dip import create_model


def test_bench_detailer_runs_and_writes_json(tmp_path):
    out = tmp_path / "head.json"
    rows, layers = bench_detailer.main(["--preset", "DiP-T/8", "--patches", "4", "--reps", "1", "--per-layer",
                                        "--variants", "eager_nchw,eager_channels_last,triton", "--out", str(out)])
    assert {r["variant"] for r in rows} == {"eager_nchw", "eager_channels_last", "triton"}  # triton interpreted
    assert all(r["ms"] > 0 for r in rows) and all(r["fwd ms"] > 0 for r in layers)
    assert [r["layer"] for r in layers if r["variant"] == "triton"] == [
        "enc1", "enc2", "enc3", "bottleneck", "up3+dec3", "up2+dec2", "up1+dec1+out_conv"]
    payload = json.loads(out.read_text())
    assert payload["environment"]["torch"] and len(payload["rows"]) == 6


def test_head_flops_formula_matches_the_paper_scale():
    """docs/kernels.md §1: the DiP-XL/16 head is ≈1.1 TFLOP forward at 8,192 patches."""
    head = create_model("DiP-T/8").local_decoder
    assert bench_detailer.head_flops(head, 1) > 0
    with torch.device("meta"):
        xl = create_model("DiP-XL/16").local_decoder
    assert abs(bench_detailer.head_flops(xl, 8192) / 1e12 - 1.1) < 0.05


def test_ci_runs_the_readme_test_command():
    root = Path(__file__).resolve().parents[1]
    ci = (root / ".ci" / "run").read_text()
    command = ci.split("TEST_CMD='", 1)[1].split("'", 1)[0]
    lines = (root / "README.md").read_text().splitlines()
    assert lines[2] == "```bash" and lines[5] == "```"  # exactly two set-up commands at the top
    assert lines[3] == 'DIP_SKIP_CUDA=1 pip install -e ".[demo]" && python -m dip.train' and lines[4] == command


def test_bench_ops_runs_every_op_and_column(tmp_path):
    from benchmarks import bench_ops

    out = tmp_path / "adaln.json"
    rows = bench_ops.main(["--reps", "1", "--out", str(out)])
    impls = {r["impl"] for r in rows}
    assert {"eager", "compile", "triton"} <= impls  # triton interpreted on CPU (conftest)
    assert {r["op"] for r in rows} == set(bench_ops.OPS)
    assert json.loads(out.read_text())["copy_gbps"] > 0


def test_bench_model_runs_and_counts_flops(tmp_path):
    from benchmarks import bench_model

    rows = bench_model.main(["--compile", "eager", "--backends", "torch", "--checkpointing", "both", "--out",
                             str(tmp_path / "model.json")])
    assert {r["mode"] for r in rows} == {"train", "sample 3×2 NFE", "forward split"} and all(r["ms"] > 0 for r in rows)
    assert [r["backend"] for r in rows if r["mode"] == "train"] == ["torch", "torch+ckpt"]
    split = next(r for r in rows if r["mode"] == "forward split")
    assert 0 < split["head ms"] < split["ms"] and split["DiT ms"] == pytest.approx(split["ms"] - split["head ms"])
    with torch.device("meta"):
        xl = create_model("DiP-XL/16")
    dit = bench_model.forward_flops(xl) - bench_detailer.head_flops(xl.local_decoder, 256)
    assert abs(3 * 32 * dit / 1e12 - 21) < 1.5  # docs/kernels.md: DiT GEMMs + attention ≈ 21 TFLOP per step at batch 32


def test_overfit_single_image_runs(tmp_path):
    """The Figure 3 script end to end on tiny settings (the real run is minutes; its result is in the README)."""
    pytest.importorskip("skimage")
    from benchmarks.experiments import overfit_single_image

    results = overfit_single_image.main(["--steps", "2", "--size", "32", "--sample-steps", "2", "--out",
                                         str(tmp_path)])
    assert set(results) == {"dit", "detailer", "reference"} and results["dit"]["steps"] == 2
    assert (tmp_path / "figure3.png").is_file() and json.loads((tmp_path / "figure3.json").read_text())
    split = ["--steps", "2", "--size", "32", "--sample-steps", "2", "--out", str(tmp_path / "split")]
    assert overfit_single_image.main([*split, "--heads", "dit"]) == {}  # one head per process: no figure yet
    assert set(overfit_single_image.main([*split, "--heads", "detailer"])) == {"dit", "detailer", "reference"}


def test_derive_preferences_picks_the_fastest_backend_measured_everywhere(tmp_path):
    from benchmarks.tools import derive_preferences
    from dip_kernels.preferences import load_preferences

    adaln = {"environment": {"arch": "sm_90"}, "rows": [
        {"op": "block_boundary", "batch": b, "mode": m, "impl": impl, "ms": ms}
        for b in (32, 256) for m in ("fwd", "fwd+bwd")
        for impl, ms in (("eager", 2.0), ("compile", 0.5), ("triton", 1.0), ("cuda", 0.9 if b == 32 else 1.2))]}
    head = {"environment": {"arch": "sm_90"}, "rows": [], "layers": [
        {"layer": layer, "op": op, "variant": v, "fwd+bwd ms": ms}
        for layer, op, times in (("enc1", "detailer_stem", {"eager_channels_last": 3.0, "triton": 2.0, "cuda": 1.0}),
                                 ("enc2", "detailer_encoder", {"eager_channels_last": 1.0, "triton": 2.0}),
                                 ("enc3", "detailer_encoder", {"eager_channels_last": 1.0, "triton": 0.1}))
        for v, ms in times.items()]}
    files = []
    for name, payload in (("adaln.json", adaln), ("head.json", head)):
        (tmp_path / name).write_text(json.dumps(payload))
        files.append(str(tmp_path / name))
    out = tmp_path / "preferences.json"
    out.write_text(json.dumps({"sm_80": {"backends": {"swiglu": "torch"}}}))
    derive_preferences.main([*files, "--out", str(out)])
    table = load_preferences(out)
    # cuda wins at batch 32 only; summed over both batches triton is faster (compile is not a backend)
    assert table["sm_90"] == {"block_boundary": "triton", "detailer_stem": "cuda", "detailer_encoder": "torch"}
    assert table["sm_80"] == {"swiglu": "torch"}  # other architectures are kept
    (tmp_path / "cpu.json").write_text(json.dumps({"environment": {"arch": None}, "rows": []}))
    with pytest.raises(ValueError, match="one CUDA architecture"):
        derive_preferences.main([str(tmp_path / "cpu.json"), "--out", str(out)])


def test_denoise_profile_measures_each_noise_level():
    from benchmarks.experiments import denoise_profile

    pytest.importorskip("sklearn")
    model = create_model("DiP-T/8").eval()
    x, y = denoise_profile.real_digits(32, every=200)
    rows = denoise_profile.profile(model, x, y, times=(0.5, 0.99))
    assert [r["t"] for r in rows] == [0.5, 0.99]
    assert all(r["x_hat_rmse"] > 0 and r["x_hat_hf_ratio"] > 0 and r["v_rmse"] > 0 for r in rows)
    assert rows[1]["x_hat_rmse"] < rows[0]["x_hat_rmse"]  # an untrained model: x̂ ≈ x_t, closer at low noise


def test_ablation_rows_and_table():
    from benchmarks.experiments import ablate_demo

    assert ablate_demo.parse_row("width-64")[1][0] == ("--head-width", "64", "--t-mix", "0.5", "1", "1")
    assert ablate_demo.parse_row("mine=--head-width 32 --lr-decay 0.3") == \
        ("mine", (("--head-width", "32", "--lr-decay", "0.3"), {}, "ema"))
    with pytest.raises(ValueError, match="unknown row"):
        ablate_demo.parse_row("nonsense")
    row = {"change": "x", "accuracy": 0.99, "fid": 12.3, "precision": 0.5, "recall": 0.4, "hf_ratio": 1.1,
           "seam": 0.01, "seam_real": 0.02}
    assert "| r | x | 99.0% | 12.3 | 0.50 | 0.40 | 1.10 | 0.010 (0.020) |" in ablate_demo.table({"r": row})


def test_bench_sampler_runs(tmp_path):
    """The sampler benchmark end to end on a 2-step model, 2 samples, 2 step counts (the real run's numbers are
    in the README)."""
    pytest.importorskip("torchdiffeq")
    pytest.importorskip("diffusers")
    from benchmarks import bench_sampler
    from dip.cli.train import main as train

    train(["--device", "cpu", "--batch", "8", "--steps", "2", "--final-samples", "0", "--out", str(tmp_path / "run")])
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000002.pt"
    result = bench_sampler.main(["--ckpt", str(ckpt), "--samples", "2", "--steps", "2", "4", "--fid-samples", "0",
                                 "--out", str(tmp_path / "bench")])
    rows = result["error"]["cfg"]["rows"]
    assert {r["method"] for r in rows} >= {"euler uniform", "pc3 cosine aligned", "dpm++2m (diffusers)"}
    assert all(r["error"] >= 0 and r["nfe"] in (2, 3, 4, 7) for r in rows)
    assert (tmp_path / "bench" / "error_cfg.png").is_file() and "| pc3 cosine aligned |" in \
        (tmp_path / "bench" / "sampler_tables.txt").read_text()


def test_variants_are_timed_in_interleaved_rotating_rounds():
    """docs/kernels.md §7: every round times each variant once, the order rotated by one per round."""
    from benchmarks.common import time_interleaved

    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in "abc"}
    times = time_interleaved(fns, torch.device("cpu"), reps=4)
    assert set(times) == {"a", "b", "c"} and all(t >= 0 for t in times.values())
    assert calls[:3] == ["a", "b", "c"]  # the warm-up calls
    rounds = [calls[3 + 3 * r: 6 + 3 * r] for r in range(4)]
    assert rounds == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"], ["a", "b", "c"]]


def test_the_gpu_timing_path_reads_its_events_after_the_run(monkeypatch):
    """The CUDA branch of time_interleaved, rehearsed with stand-in events: L2 flushed before each call, the call
    between two recorded events, elapsed time read afterwards."""
    from benchmarks import common

    order = []

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            order.append("record")

        def elapsed_time(self, end):
            return 2.5

    class Flush:
        def zero_(self):
            order.append("flush")

    monkeypatch.setattr(torch.cuda, "Event", Event)
    sample = common._timed_call(lambda: order.append("call"), Flush())
    assert order == ["flush", "record", "call", "record"] and common._ms(sample) == 2.5
