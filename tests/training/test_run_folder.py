"""The run folder belongs to one run (issue 23; dip/training/state.py): a fresh start never mixes with another run's
checkpoints, a resume never silently changes the objective, and the keep-policy never deletes another run's
checkpoint, a newer one, or a good one because of a damaged one."""
from pathlib import Path

import pytest
import torch

from dip.cli.train import main
from dip.training.state import CheckpointKeeper, checkpoint_paths, read_checkpoint

pytest.importorskip("sklearn")

TINY = ["--device", "cpu", "--batch", "8", "--final-samples", "0", "--log-every", "5", "--sample-every", "100000"]


def run(out, *extra):
    return main([*TINY, "--out", str(out), *extra])


def steps_in(out):
    return [int(p.stem.split("_")[1]) for p in sorted((Path(out) / "checkpoints").glob("step_*.pt"))]


def refused(capsys, *args) -> str:
    with pytest.raises(SystemExit) as stop:
        run(*args)
    assert stop.value.code == 2
    return capsys.readouterr().err


def test_a_fresh_start_into_another_runs_folder_is_refused(tmp_path, capsys):
    run(tmp_path, "--steps", "10", "--ckpt-every", "5")
    before = {p: p.read_bytes() for p in checkpoint_paths(tmp_path)}
    err = refused(capsys, tmp_path, "--seed", "1", "--resume", "none", "--steps", "5", "--ckpt-every", "5")
    assert "holds checkpoints of another run" in err and "step_00000010.pt" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in checkpoint_paths(tmp_path)} == before  # nothing touched
    run(tmp_path, "--seed", "1", "--resume", "none", "--steps", "5", "--ckpt-every", "5", "--overwrite")
    assert steps_in(tmp_path) == [5]  # the old run's files are gone, not mixed in


def test_a_resume_that_changes_the_objective_is_refused_unless_allowed(tmp_path, capsys):
    run(tmp_path, "--steps", "5", "--ckpt-every", "5")
    err = refused(capsys, tmp_path, "--seed", "1", "--steps", "10")
    assert "--seed 0 → 1" in err and "--allow-change seed" in err and steps_in(tmp_path) == [5]
    err = refused(capsys, tmp_path, "--t-mix", "0.3", "0", "1", "--steps", "10")
    assert "--t-mix" in err
    run(tmp_path, "--t-mix", "0.3", "0", "1", "--steps", "10", "--allow-change", "t-mix", "--ckpt-every", "5")
    state = read_checkpoint(checkpoint_paths(tmp_path)[0])
    assert state["config_changes"] == [{"step": 5, "changes": {"t_mix": [[0.5, 1.0, 1.0], [0.3, 0.0, 1.0]]}}]


def test_a_damaged_checkpoint_never_costs_a_good_one(tmp_path, capsys):
    run(tmp_path, "--steps", "10", "--ckpt-every", "5", "--keep", "2")
    newest = tmp_path / "checkpoints" / "step_00000010.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # a flipped byte in the middle of the file
    newest.write_bytes(bytes(data))
    run(tmp_path, "--steps", "7", "--ckpt-every", "5", "--keep", "1")  # resumes from step 5
    assert steps_in(tmp_path) == [7, 10]  # step 5 gave way to the good step 7; the damaged 10 is left alone
    assert read_checkpoint(tmp_path / "checkpoints" / "step_00000007.pt")["step"] == 7


def test_only_damaged_checkpoints_are_not_a_fresh_start(tmp_path, capsys):
    run(tmp_path, "--steps", "5", "--ckpt-every", "5")
    only = tmp_path / "checkpoints" / "step_00000005.pt"
    only.write_bytes(only.read_bytes()[:1000])
    err = refused(capsys, tmp_path, "--steps", "5")
    assert "none of them readable" in err


def test_the_keep_policy_leaves_other_runs_and_newer_checkpoints(tmp_path):
    folder = tmp_path / "checkpoints"
    folder.mkdir()
    for step, run_id in ((1, "other"), (2, "mine"), (3, "mine"), (9, "mine")):
        torch.save({"run_id": run_id, "step": step}, folder / f"step_{step:08d}.pt")
    keeper = CheckpointKeeper(tmp_path, "mine", keep=1, log=print)
    assert keeper.prune(3) == [folder / "step_00000002.pt"]
    assert steps_in(tmp_path) == [1, 3, 9]
