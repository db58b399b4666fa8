"""Sample a trained DiP (docs/model.md §7): ``python -m dip.sample --ckpt CKPT`` or under torchrun.

Reads our training checkpoints (EMA weights, config) and the authors' / plain weight files (``--model`` then names
the preset). Labels are class-balanced (sample i has class i mod K); sample i's noise is seeded by (seed, i), so
the images do not depend on the number of ranks or the batch size. ``--graph`` replays one CUDA-graph-captured
Euler step (static buffers; dip/diffusion/graphed_sampler.py). Writes a PNG grid and/or the ADM evaluation
suite's ``.npz`` (``arr_0`` uint8 N×H×W×3, ``arr_1`` labels).

    python -m dip.sample --ckpt runs/dip/checkpoints/step_00002000.pt --num-samples 100 --grid
    torchrun --nproc_per_node 8 -m dip.sample --ckpt DiP-XL-16.ckpt --model DiP-XL/16 --num-samples 50000 \\
        --steps 100 --cfg 2.9 --interval 0.11 0.97 --npz --out samples/xl16
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from ..diffusion.generation import generate
from ..io.checkpoints import trusted_by_name
from ..io.image_writers import save_grid, save_npz
from ..model.loading import load_model
from ..runtime.distributed import init_distributed
from ..runtime.folders import writable_folder
from .args import POSITIVE_INT, add_sampling_flags, run_command, settings_from_args


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dip-sample", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--ckpt", required=True)
    add_sampling_flags(p)
    a("--num-samples", type=POSITIVE_INT, default=100)
    a("--batch", type=POSITIVE_INT, default=64, help="per-rank batch")
    a("--out", default="samples")
    a("--grid", action="store_true", help="write grid.png of the first samples (default when --npz is absent)")
    a("--npz", action="store_true", help="write samples.npz in the ADM evaluation layout")
    return p


def main(argv=None) -> Path:
    """``python -m dip.sample``: the output folder."""
    return run_command(parser(), run_sampling, argv)


def run_sampling(args) -> Path:
    """Draw ``args.num_samples`` class-balanced samples (ranks split them) and write the .npz and/or PNG grid; the
    output folder is probed first so a read-only one fails before sampling."""
    rank, world, device = init_distributed(args.device)
    if rank == 0:
        writable_folder(args.out, "--out")
    model = load_model(args.ckpt, args.model, args.which, args.kernels, device,
                       trusted_by_name(args.trust_pickle, args.ckpt))
    model.check_inputs = False
    K = model.num_classes
    settings = settings_from_args(args, model, device)
    mine = list(range(rank, args.num_samples, world))
    shape = (model.in_channels, model.image_size, model.image_size)
    batches = list(generate(model, mine, settings, batch=args.batch, progress=rank == 0))
    images = torch.cat([b[0] for b in batches]) if batches else torch.empty(0, *shape, dtype=torch.uint8)
    labels = torch.cat([b[1] for b in batches]) if batches else torch.empty(0, dtype=torch.long)
    out = Path(args.out)
    if world > 1:  # gather in sample order through per-rank files
        save_npz(images, labels, out / f".part_{rank}.npz")
        dist.barrier()
        if rank == 0:
            parts = [np.load(out / f".part_{k}.npz") for k in range(world)]
            order = [i for k in range(world) for i in range(k, args.num_samples, world)]
            images = torch.from_numpy(np.concatenate([p["arr_0"] for p in parts])).permute(0, 3, 1, 2)
            labels = torch.from_numpy(np.concatenate([p["arr_1"] for p in parts]))
            perm = torch.tensor(np.argsort(order))
            images, labels = images[perm], labels[perm]
            for k in range(world):
                (out / f".part_{k}.npz").unlink()
        dist.barrier()
        dist.destroy_process_group()
    if rank == 0:
        if args.npz:
            print(f"wrote {save_npz(images, labels if K else None, out / 'samples.npz')}")
        if args.grid or not args.npz:
            n = min(len(images), 10 * max(K, 1), 100)
            print(f"wrote {save_grid(images[:n], out / 'grid.png', nrow=max(1, min(K, 10)) if K else 10)}")
    return out


if __name__ == "__main__":
    main()
