"""Convert a checkpoint dip.sample can read — the authors' Lightning file, a dip.train checkpoint, a weights file —
into a ``DiP.from_pretrained`` folder (config.json + model.safetensors; docs/model.md §5.1).

    python -m dip.convert --ckpt DiP-XL-16.ckpt --model DiP-XL/16 --trust-pickle DiP-XL-16.ckpt --out dip-xl-16
"""
from __future__ import annotations

import argparse

import torch

from ..io.checkpoints import trusted_by_name
from ..model.loading import load_model
from .args import add_checkpoint_flags, run_command


def parser() -> argparse.ArgumentParser:
    """The command's arguments."""
    p = argparse.ArgumentParser(prog="dip-convert", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("--ckpt", required=True)
    add_checkpoint_flags(p)
    p.add_argument("--out", required=True, help="the folder to write")
    return p


def convert(args) -> None:
    """Read the checkpoint as dip.sample does and write the folder."""
    model = load_model(args.ckpt, args.model, args.which, None, torch.device("cpu"),
                       trusted_by_name(args.trust_pickle, args.ckpt))
    model.save_pretrained(args.out)
    print(f"wrote {args.out}/config.json and {args.out}/model.safetensors")


def main(argv=None) -> None:
    """``python -m dip.convert``; mistakes end with one line naming them."""
    run_command(parser(), convert, argv)


if __name__ == "__main__":
    main()
