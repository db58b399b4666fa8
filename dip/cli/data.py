"""``python -m dip.data prepare --src /data/imagenet/train --out /data/in256 --size 256``: centre-crop an ImageFolder
once into the uint8 shards training reads memory-mapped (dip/io/shards.py)."""
from __future__ import annotations

import argparse

from ..io.shards import prepare
from .args import POSITIVE_INT, command_errors


def main(argv=None):
    p = argparse.ArgumentParser(description="dip data tools")
    sub = p.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="centre-crop an ImageFolder into uint8 shards")
    prep.add_argument("--src", required=True)
    prep.add_argument("--out", required=True)
    prep.add_argument("--size", type=POSITIVE_INT, default=256)
    prep.add_argument("--shard-size", type=POSITIVE_INT, default=10_000)
    prep.add_argument("--workers", type=POSITIVE_INT, default=8)
    args = p.parse_args(argv)
    with command_errors(prep):
        prepare(args.src, args.out, args.size, args.shard_size, args.workers)


if __name__ == "__main__":
    main()
