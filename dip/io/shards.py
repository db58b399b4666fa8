"""Preparing a dataset once (docs/model.md §6): every image of an ImageFolder centre-cropped into uint8 ``.npy``
shards that training reads memory-mapped (decoding JPEGs on the fly starves a GPU in pixel space)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .datasets import ImageFolder


def prepare(src, out, size: int, shard_size: int = 10_000, workers: int = 8) -> None:
    """Centre-crop every image of the ImageFolder ``src`` once into uint8 shards under ``out``. Everything is written
    into a hidden sibling folder first and renamed to ``out`` when complete, so ``out`` never mixes two runs' shards
    and metadata; an unfinished earlier run's folder is discarded, and an existing ``out`` is replaced only if it
    is a dip shard folder (holds meta.json) or empty."""
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    folder = ImageFolder(src, size)
    folder.check()  # every header read before the first shard is written: a bad file is named now
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "meta.json").is_file())):
        raise ValueError(f"--out {out} exists and is not a dip shard folder (no meta.json): choose another --out")
    work = out.parent / f".{out.name}.preparing"
    if work.exists():
        print(f"discarding the unfinished prepare in {work}")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shards = (len(folder) + shard_size - 1) // shard_size
    with ThreadPoolExecutor(workers) as pool:
        for k in tqdm(range(shards), desc="shards"):
            idx = range(k * shard_size, min((k + 1) * shard_size, len(folder)))
            items = list(pool.map(folder.__getitem__, idx))
            np.save(work / f"images_{k:05d}.npy", np.stack([im for im, _ in items]))
            np.save(work / f"labels_{k:05d}.npy", np.array([lb for _, lb in items], dtype=np.int64))
    (work / "meta.json").write_text(json.dumps({"classes": folder.classes, "size": size, "shards": shards,
                                                "count": len(folder)}))
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
