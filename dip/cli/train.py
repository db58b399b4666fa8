"""Train DiP (docs/model.md §6): ``python -m dip.train`` or ``torchrun --nproc_per_node N -m dip.train``.

Defaults come from the preset's recipe: the paper's for the paper presets, and for DiP-T/8 (the default) a
recipe that trains in minutes on a CPU on the embedded digits set, whose final samples are scored by a classifier
of the real digits. ``--dry-run`` prints the resolved config. The loop is dip/training/loop.py.
"""
from __future__ import annotations

import argparse
import json

import torch.distributed as dist

from ..evaluation.digits import digits_accuracy
from ..runtime.run_lock import RunFolderBusy
from ..training.config import TrainConfig, resolve
from ..training.loop import Trainer
from .args import (NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, UNIT, add_device_flags, add_model_flag,
                   add_trust_flag, command_errors, number)

DEFAULTS = TrainConfig()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dip-train", description="Train DiP (defaults: the preset's recipe).")
    a = p.add_argument
    add_model_flag(p, DEFAULTS.model, "architecture + recipe")
    a("--data", default=DEFAULTS.data, help="'digits' (embedded, no download), a shard folder, or an ImageFolder")
    a("--out", default=DEFAULTS.out, help="run folder: checkpoints/, samples/, stats.jsonl, tensorboard/")
    a("--image-size", type=POSITIVE_INT, help="default: the recipe's")
    a("--bad-images", choices=["error", "skip"], default="error", help="an unreadable image file in --data: stop "
                                                                      "naming it (default) or leave it out")
    a("--unconditional", action="store_true", help="ignore the labels: a model without classes (num_classes 0)")
    a("--head", choices=["detailer", "dit"], help="output head (default: the preset's): the Patch Detailer Head or "
                                                  "the paper's DiT-only baseline")
    a("--head-width", type=POSITIVE_INT, help="Detailer width of the first stage (default: the preset's)")
    a("--batch", type=POSITIVE_INT, help="global batch (all ranks, all accumulation steps); default: the recipe's")
    a("--accum", type=POSITIVE_INT, default=DEFAULTS.accum, help="gradient-accumulation steps per optimizer step")
    a("--steps", type=POSITIVE_INT, default=None,
      help="optimizer steps (default: the recipe's; DiP-T/8: 1,800, about 7.5 minutes on an idle 2-core CPU)")
    a("--minutes", type=POSITIVE, default=None, help="opt-in wall-time budget (stops early; the result then depends "
                                                   "on the machine's speed)")
    a("--lr", type=POSITIVE)
    a("--lr-decay", type=UNIT, help="decay the lr linearly to 0 over this final fraction of --steps (default: the "
                                    "recipe's; 0: constant)")
    a("--weight-decay", type=NON_NEGATIVE)
    a("--ema-decay", type=number(float, 0, 1, high_open=True))
    a("--label-dropout", type=UNIT)
    a("--t-mean", type=number(float), help="logit-normal t = sigmoid(N(mean, std²)), t = 1 data (default: the "
                                           "recipe's; > 0 trains more at low noise)")
    a("--t-std", type=POSITIVE)
    a("--t-mix", type=number(float), nargs=3, metavar=("FRACTION", "MEAN", "STD"),
      help="draw this fraction of t from a second logit-normal(MEAN, STD²) (default: the recipe's; 0: none)")
    a("--grad-clip", type=POSITIVE, help="clip the global gradient norm (default: none, as the paper)")
    add_device_flags(p)
    a("--tf32", action=argparse.BooleanOptionalAction, default=True, help="TF32 matmuls on CUDA")
    a("--compile", action="store_true", help="torch.compile the model")
    a("--grad-checkpointing", action="store_true")
    a("--merged-projections", action="store_true", help="W1|W3 and every adaLN Linear as single GEMMs")
    a("--fsdp", action="store_true", help="shard parameters, gradients and optimizer state (FSDP2)")
    a("--deterministic", action="store_true", help="deterministic algorithms (exact resume on GPU)")
    a("--repa-encoder", default=None, help="DINOv2 ViT-B/14 weights (dinov2_vitb14_pretrain.pth); REPA off if absent")
    a("--repa-weight", type=NON_NEGATIVE)
    a("--repa-block", type=POSITIVE_INT)
    a("--resume", default=DEFAULTS.resume, help="'auto' (newest valid checkpoint in --out), a path, or 'none'")
    a("--overwrite", action="store_true", help="start afresh even though --out holds checkpoints (they are deleted)")
    a("--allow-change", nargs="+", default=(), metavar="OPTION", type=lambda s: s.replace("-", "_"),
      help="objective options (e.g. t-mix, lr) a resumed run may change; recorded with the step")
    add_trust_flag(p, "--init-from FILE")
    a("--init-from", default=None, help="fine-tune: start from these weights (EMA of a dip.train checkpoint, or a "
                                        "weights file); a different class count keeps the source's null row")
    a("--eval-every", type=NON_NEGATIVE_INT, default=DEFAULTS.eval_every,
      help="steps between FID/sFID/precision/recall of the EMA model (0: off)")
    a("--eval-ref", default=None, help="reference for --eval-every: a dataset spec, an image .npz or a stats .npz")
    a("--eval-samples", type=POSITIVE_INT, default=DEFAULTS.eval_samples,
      help="samples per evaluation (class-balanced, fixed seeds)")
    a("--inception-logits", default=None, help="pt_inception weights: adds the Inception Score to evaluations")
    a("--ckpt-every", type=POSITIVE_INT, default=DEFAULTS.ckpt_every,
      help="steps between checkpoints (and one at the end)")
    a("--keep", type=POSITIVE_INT, default=DEFAULTS.keep, help="checkpoints kept (≥ 1: the newest is never deleted)")
    a("--sample-every", type=POSITIVE_INT, default=DEFAULTS.sample_every,
      help="steps between PNG sample grids of the EMA model")
    a("--log-every", type=POSITIVE_INT, default=DEFAULTS.log_every)
    a("--final-samples", type=NON_NEGATIVE_INT, default=DEFAULTS.final_samples,
      help="samples per class in the final grid (0: none)")
    a("--tensorboard", action="store_true")
    a("--dry-run", action="store_true", help="print the resolved config and exit")
    a("--debug-nan-step", type=int, default=DEFAULTS.debug_nan_step, help=argparse.SUPPRESS)  # tests only
    return p


def demo_accuracy(images, labels, log) -> dict:
    """The digits demo's score of its final grid: the share a classifier of the real digits assigns to the requested
    class (dip/evaluation/digits.py)."""
    accuracy = digits_accuracy(images, labels)
    log(f"class accuracy of the EMA samples (logistic regression on the real digits): {accuracy:.1%}")
    return {"digits_accuracy": accuracy}


def main(argv=None) -> dict:
    """Parse, resolve and run (``--dry-run``: print the resolved config and return it as a dict); returns the
    run's summary."""
    try:
        cfg = resolve(parser().parse_args(argv))
    except ValueError as err:
        parser().error(str(err))
    if cfg.dry_run:
        print(json.dumps(cfg.as_dict(), indent=2))
        return cfg.as_dict()
    with command_errors(parser()):
        try:
            trainer = Trainer(cfg, on_final_samples=demo_accuracy if cfg.data == "digits" else None)
        except RunFolderBusy as err:
            raise ValueError(str(err)) from None
    try:
        with command_errors(parser()):
            trainer.restore()  # a checkpoint that cannot be resumed is a one-line error, before any step
        return trainer.run()
    finally:
        if trainer.lock is not None:
            trainer.lock.release()
        if dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    main()
