"""Every numeric option of the commands is checked when parsed: a value outside its domain ends the command with
argparse's one-line error naming the option and the domain (exit status 2), before any work is spent."""
import pytest

from dip.cli.sample import parser as sample_parser
from dip.cli.train import parser as train_parser


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps: must be in [1, inf], got 0"),
    (["--steps", "-5"], "--steps: must be in [1, inf]"),
    (["--keep", "0"], "--keep: must be in [1, inf], got 0"),  # would delete every checkpoint, the final one too
    (["--ema-decay", "1.5"], "--ema-decay: must be in [0, 1), got 1.5"),
    (["--ema-decay", "1"], "--ema-decay: must be in [0, 1)"),
    (["--label-dropout", "2"], "--label-dropout: must be in [0, 1], got 2"),
    (["--batch", "0"], "--batch: must be in [1, inf]"),
    (["--accum", "0"], "--accum"),
    (["--ckpt-every", "0"], "--ckpt-every"),
    (["--log-every", "0"], "--log-every"),
    (["--sample-every", "0"], "--sample-every"),
    (["--lr", "0"], "--lr: must be in (0, inf]"),
    (["--minutes", "nan"], "--minutes"),
    (["--image-size", "0"], "--image-size"),
    (["--batch", "2.5"], "--batch: must be an integer, got '2.5'"),
])
def test_train_rejects_out_of_domain_values(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        train_parser().parse_args(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


@pytest.mark.parametrize("args,message", [
    (["--steps", "0"], "--steps: must be in [1, inf]"),  # was silently replaced by the recipe's 30
    (["--cfg", "-3"], "--cfg: must be in [0, inf]"),
    (["--interval", "0.9", "0.1"], "--interval: LOW must be ≤ HIGH, got 0.9 0.1"),  # would disable guidance
    (["--interval", "0", "1.5"], "--interval: must be in [0, 1], got 1.5"),
    (["--shift", "0"], "--shift: must be in (0, inf]"),
    (["--num-samples", "0"], "--num-samples"),
    (["--batch", "0"], "--batch"),
])
def test_sample_rejects_out_of_domain_values(capsys, args, message):
    with pytest.raises(SystemExit) as exit_:
        sample_parser().parse_args(["--ckpt", "model.pt", *args])
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_valid_values_pass():
    args = train_parser().parse_args(["--steps", "5", "--ema-decay", "0", "--label-dropout", "1", "--keep", "1"])
    assert (args.steps, args.ema_decay, args.label_dropout, args.keep) == (5, 0.0, 1.0, 1)
    args = sample_parser().parse_args(["--ckpt", "m.pt", "--interval", "0.11", "0.97", "--cfg", "0"])
    assert args.interval == (0.11, 0.97) and args.cfg == 0.0


@pytest.mark.parametrize("command,argv,message", [
    ("train", ["--out", "{file}", "--steps", "1"], "--out {file} is a file; expected a folder"),
    ("train", ["--out", "{dir}", "--t-mix", "1.5", "1", "1"], "--t-mix needs 0 ≤ FRACTION ≤ 1 and STD > 0"),
    ("sample", ["--ckpt", "{missing}.pt", "--out", "{dir}"], "checkpoint file not found"),
    ("sample", ["--ckpt", "{npy}", "--out", "{dir}"], "is a NumPy array file, not a checkpoint"),
    ("sample", ["--ckpt", "{missing}.pt", "--out", "{file}"], "--out {file} is a file"),  # probed before anything
    ("evaluate", ["--samples", "{missing}.npz", "--ref", "digits"], "--samples {missing}.npz not found"),
    ("evaluate", ["--samples", "{npy}", "--ref", "{missing}.npz"], "--ref {missing}.npz not found"),
])
def test_command_mistakes_end_with_one_line(tmp_path, capsys, command, argv, message):
    import importlib

    import numpy as np

    names = {"file": tmp_path / "afile", "missing": tmp_path / "nothere", "dir": tmp_path / "out",
             "npy": tmp_path / "x.npy"}
    names["file"].write_text("")
    np.save(names["npy"], np.zeros(3))
    main = importlib.import_module(f"dip.{command}").main
    with pytest.raises(SystemExit) as stop:
        main([a.format(**names) for a in argv])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "Traceback" not in err
    assert f"dip-{command}: error: " in err and message.format(**names) in err
