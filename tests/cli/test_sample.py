"""dip.sample: from a training checkpoint or a weights file; per-sample seeds independent of batch and ranks."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from dip import create_model
from dip.cli.sample import main as sample_main
from dip.io.weights import save_weights

pytest.importorskip("sklearn")


def sample(args):
    return sample_main(["--device", "cpu", *args])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from dip.cli.train import main as train

    out = tmp_path_factory.mktemp("run")
    train(["--device", "cpu", "--batch", "8", "--steps", "2", "--final-samples", "0", "--out", str(out),
           "--minutes", "10"])
    return next((out / "checkpoints").glob("*.pt"))


def test_grid_and_npz_from_a_training_checkpoint(checkpoint, tmp_path):
    sample(["--ckpt", str(checkpoint), "--num-samples", "12", "--steps", "3", "--batch", "5", "--npz", "--grid",
          "--out", str(tmp_path)])
    data = np.load(tmp_path / "samples.npz")
    assert data["arr_0"].shape == (12, 32, 32, 3) and data["arr_0"].dtype == np.uint8
    assert data["arr_1"].tolist() == [i % 10 for i in range(12)]  # class-balanced
    assert (tmp_path / "grid.png").is_file()


@pytest.mark.parametrize("solver", [["--method", "euler"], ["--method", "pc3", "--schedule", "cosine"]])
def test_batch_size_does_not_change_the_samples(checkpoint, tmp_path, solver):
    for b in (2, 5):
        sample(["--ckpt", str(checkpoint), "--num-samples", "6", "--steps", "3", "--batch", str(b), "--npz",
              "--out", str(tmp_path / str(b)), *solver])
    a, b = (np.load(tmp_path / s / "samples.npz")["arr_0"].astype(int) for s in ("2", "5"))
    assert np.abs(a - b).max() <= 1  # same seeds per sample; CPU kernels may round differently per batch size


def test_two_ranks_match_one(checkpoint, tmp_path):
    sample(["--ckpt", str(checkpoint), "--num-samples", "5", "--steps", "3", "--npz", "--out", str(tmp_path / "one")])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29544", "-m",
           "dip.sample", "--device", "cpu", "--ckpt", str(checkpoint), "--num-samples", "5", "--steps", "3", "--npz",
           "--out", str(tmp_path / "two")]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    a, b = (np.load(tmp_path / s / "samples.npz") for s in ("one", "two"))
    assert np.abs(a["arr_0"].astype(int) - b["arr_0"].astype(int)).max() <= 1
    assert a["arr_1"].tolist() == b["arr_1"].tolist()


def test_plain_weights_file_with_a_preset(tmp_path, capsys):
    model = create_model("DiP-T/8")
    save_weights(tmp_path / "w.safetensors", model.state_dict())
    sample(["--ckpt", str(tmp_path / "w.safetensors"), "--model", "DiP-T/8", "--num-samples", "2", "--steps", "2",
          "--out", str(tmp_path / "s")])
    assert (tmp_path / "s" / "grid.png").is_file()
    with pytest.raises(SystemExit):
        sample(["--ckpt", str(tmp_path / "w.safetensors"), "--model", "DiP-S/16", "--out", str(tmp_path / "x")])
    assert "dip-sample: error: " in (err := capsys.readouterr().err) and "does not fit preset" in err


def test_weights_without_dip_keys_are_named(tmp_path, capsys):
    save_weights(tmp_path / "other.safetensors", {"encoder.weight": torch.zeros(2, 2)})
    with pytest.raises(SystemExit):
        sample(["--ckpt", str(tmp_path / "other.safetensors"), "--out", str(tmp_path / "s")])
    assert "has no y_embedder.embedding_table.weight: not DiP weights (its first keys: encoder.weight)" in \
        capsys.readouterr().err
