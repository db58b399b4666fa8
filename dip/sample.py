"""Sample a trained DiP (docs/model.md §7): ``python -m dip.sample --ckpt CKPT`` or under torchrun.

Reads our training checkpoints (EMA weights, config) and the authors' / plain weight files (``--model`` then names
the preset). Labels are class-balanced (sample i has class i mod K); sample i's noise is seeded by (seed, i), so
the images do not depend on the number of ranks or the batch size. ``--graph`` replays one CUDA-graph-captured
Euler step (static buffers; dip/graphed_sampler.py). Writes a PNG grid and/or the ADM evaluation
suite's ``.npz`` (``arr_0`` uint8 N×H×W×3, ``arr_1`` labels).

    python -m dip.sample --ckpt runs/dip/checkpoints/step_00002000.pt --num-samples 100 --grid
    torchrun --nproc_per_node 8 -m dip.sample --ckpt DiP-XL-16.ckpt --model DiP-XL/16 --num-samples 50000 \\
        --steps 100 --cfg 2.9 --interval 0.11 0.97 --npz --out samples/xl16
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from dip_kernels import BACKENDS

from .checkpoint import check_weights, is_training_checkpoint, read_file, trusted_by_name, weights_of
from .cli_types import NON_NEGATIVE, POSITIVE, POSITIVE_INT, UNIT, Interval, command_errors, writable_folder
from .diffusion import SCHEDULES, INTERVAL_RULES, METHODS, sample, to_uint8
from .distributed import init_distributed
from .graphed_sampler import GraphedSampler, store_autocast_weights
from .solvers import MULTISTEP_ORDERS
from .images import save_grid, save_npz
from .presets import PRESETS, create_model, recipe, run_model_options


def load_model(ckpt: str, model_name: str | None, which: str, kernels: str | None, device,
               trust: bool = False) -> torch.nn.Module:
    """A DiP with the checkpoint's weights (EMA by default): our training checkpoint or a weights file (``trust``:
    see ``dip.checkpoint.read_file``)."""
    obj = read_file(ckpt, trust)
    if is_training_checkpoint(obj):
        cfg = json.loads(obj["config"])
        model_name, image_size = model_name or cfg["model"], cfg["image_size"]
        options = run_model_options(cfg)
    else:
        model_name, image_size, options = model_name or "DiP-XL/16", None, {}
    state, source = weights_of(obj, which)
    table = state.get("y_embedder.embedding_table.weight")
    if table is None:
        some = ", ".join(list(state)[:4]) or "none"
        raise ValueError(f"{ckpt} ({source}) has no y_embedder.embedding_table.weight: not DiP weights (its first "
                         f"keys: {some})")
    classes = table.shape[0] - 1
    model = create_model(model_name, num_classes=classes, kernels=kernels,
                         **({"image_size": image_size} if image_size else {}), **options)
    check_weights(state, model, ckpt)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{ckpt} ({source}) does not fit preset {model_name} (pass --model): {err}") from None
    return model.to(device).eval()


def sample_noise(seed: int, indices: list, shape: tuple) -> torch.Tensor:
    """Per-sample noise: sample i from a generator seeded by (seed, i)."""
    g = torch.Generator()
    out = []
    for i in indices:
        g.manual_seed((seed + 1) * 0x632BE5AB + i)
        out.append(torch.randn(shape, generator=g))
    return torch.stack(out)


@dataclass(frozen=True)
class SamplingSettings:
    """How samples are drawn (§7): the ODE/SDE solver, its time grid, guidance and precision; ``graph`` replays one
    captured step (dip.graphed_sampler; Euler and the multistep methods)."""
    steps: int
    cfg_scale: float
    interval: tuple
    method: str = "euler"
    shift: float = 1.0
    schedule: str = "uniform"
    skip_uncond: bool = False
    seed: int = 0
    precision: str = "fp32"
    graph: bool = False
    interval_rule: str = "float32"

    def describe(self) -> dict:
        return {**asdict(self), "interval": list(self.interval)}


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    """The model and sampler flags shared by dip.sample and dip.evaluate."""
    a = p.add_argument
    a("--model", default=None, choices=sorted(PRESETS), help="preset (default: the checkpoint's, else DiP-XL/16)")
    a("--which", default="ema", choices=["ema", "raw"])
    a("--trust-pickle", default=None, metavar="FILE", help="read FILE even though it holds Python objects besides "
                                                           "tensors (e.g. the authors' Lightning checkpoint)")
    a("--steps", type=POSITIVE_INT, help="default: the preset's recipe")
    a("--cfg", type=NON_NEGATIVE, help="guidance scale (default: the recipe's)")
    a("--interval", type=UNIT, nargs=2, action=Interval, help="guidance interval low high (default: the recipe's)")
    a("--interval-rule", default="float32", choices=list(INTERVAL_RULES),
      help="float32: decide 'inside the interval' on the float32 time grid, as the authors do; exact: on i/N; "
           "aligned: grid points on the bounds, guidance exactly between them (what multistep solvers need)")
    a("--method", default="euler", choices=list(METHODS),
      help="euler (the paper's); ab2 / pc3: 2nd / 3rd-order multistep, one evaluation per step; heun; sde; dopri5: "
           "adaptive reference (torchdiffeq), --steps unused")
    a("--schedule", default="uniform", choices=list(SCHEDULES),
      help="time grid: uniform i/N, or cosine (short steps at both ends: what keeps pc3 third-order)")
    a("--shift", type=POSITIVE, default=1.0, help="timestep shift t / (t + s(1 - t)) on top of the grid")
    a("--skip-uncond", action="store_true", help="skip the unconditional half outside the guidance interval")
    a("--seed", type=int, default=0)
    a("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present")
    a("--precision", choices=["bf16", "fp32"], default=None, help="default bf16 on CUDA, fp32 on CPU")
    a("--kernels", default=None, choices=list(BACKENDS))
    a("--graph", action="store_true", help="CUDA-graph sampling (static buffers; needs CUDA and --method euler, ab2 "
                                            "or pc3)")


def preset_of(model, name: str | None) -> str:
    """The preset a loaded model was built from (its recipe gives the sampling defaults)."""
    return name or next((n for n, p in PRESETS.items() if p.model["patch_size"] == model.patch_size
                         and p.model["hidden_size"] == model.hidden_size), "DiP-XL/16")


def settings_from_args(args, model, device: torch.device) -> SamplingSettings:
    """Flags → settings, the preset's recipe filling what was not given."""
    r = recipe(preset_of(model, args.model))
    if args.graph and (device.type != "cuda" or args.method not in MULTISTEP_ORDERS or args.skip_uncond):
        raise ValueError(f"--graph needs a CUDA device, --method {' / '.join(MULTISTEP_ORDERS)} and no --skip-uncond "
                         f"(got device {device.type}, method {args.method}, skip_uncond {args.skip_uncond})")
    return SamplingSettings(steps=args.steps or r.sample_steps,
                            cfg_scale=args.cfg if args.cfg is not None else r.cfg_scale,
                            interval=tuple(args.interval) if args.interval else r.guidance_interval,
                            method=args.method, shift=args.shift, schedule=args.schedule,
                            skip_uncond=args.skip_uncond, seed=args.seed,
                            precision=args.precision or ("bf16" if device.type == "cuda" else "fp32"),
                            graph=args.graph, interval_rule=args.interval_rule)


def class_balanced_labels(indices: list, num_classes: int, device) -> torch.Tensor:
    """Sample i gets class i mod K (0 for an unconditional model)."""
    return torch.tensor([i % max(num_classes, 1) if num_classes else 0 for i in indices], dtype=torch.long,
                        device=device)


def generate(model, indices: list, settings: SamplingSettings, *, batch: int, progress: bool = True):
    """Yield (uint8 images (b, C, H, W), labels (b,)) on the CPU for the sample ``indices``, in order, ``batch`` at a
    time; sample i's noise depends only on (seed, i)."""
    device = next(model.parameters()).device
    K = model.num_classes
    cfg_scale = settings.cfg_scale if K else 1.0
    shape = (model.in_channels, model.image_size, model.image_size)
    dtype = torch.bfloat16 if settings.precision == "bf16" else None
    graphed = None
    if settings.graph and indices:
        if dtype is not None:
            store_autocast_weights(model, dtype)
        graphed = GraphedSampler(model, min(batch, len(indices)), null_label=K, cfg_scale=cfg_scale,
                                 autocast=dtype, method=settings.method)
    for start in tqdm(range(0, len(indices), batch), disable=not progress, desc="sample"):
        idx = indices[start:start + batch]
        y = class_balanced_labels(idx, K, device)
        noise = sample_noise(settings.seed, idx, shape).to(device)
        if graphed is not None:
            x = graphed(noise, y, steps=settings.steps, interval=settings.interval, shift=settings.shift,
                        interval_rule=settings.interval_rule, schedule=settings.schedule)
        else:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype is not None):
                x = sample(model, noise, y, null_label=K, steps=settings.steps, cfg_scale=cfg_scale,
                           interval=settings.interval, shift=settings.shift, method=settings.method,
                           schedule=settings.schedule,
                           skip_uncond=settings.skip_uncond, interval_rule=settings.interval_rule,
                           generator=torch.Generator().manual_seed(settings.seed + idx[0]))
        yield to_uint8(x).cpu(), y.cpu()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dip-sample", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--ckpt", required=True)
    add_sampling_args(p)
    a("--num-samples", type=POSITIVE_INT, default=100)
    a("--batch", type=POSITIVE_INT, default=64, help="per-rank batch")
    a("--out", default="samples")
    a("--grid", action="store_true", help="write grid.png of the first samples (default when --npz is absent)")
    a("--npz", action="store_true", help="write samples.npz in the ADM evaluation layout")
    return p


def main(argv=None) -> Path:
    p = parser()
    args = p.parse_args(argv)
    with command_errors(p):
        return run_sampling(args)


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
