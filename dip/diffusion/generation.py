"""Drawing many samples reproducibly (docs/model.md §7): ``SamplingSettings`` say how, and ``generate`` yields
class-balanced uint8 batches where sample i's noise depends only on (seed, i) — so images do not depend on the batch
size or the number of ranks — through the eager solvers or the CUDA-graph sampler."""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from tqdm import tqdm

from ..io.image_writers import to_uint8
from ..runtime.seeds import SAMPLING, SDE, per_sample_seed
from .graphed_sampler import GraphedSampler, store_autocast_weights
from .solvers import sample


def sample_noise(seed: int, indices: list, shape: tuple) -> torch.Tensor:
    """Per-sample noise: sample i from a generator seeded by (seed, i)."""
    g = torch.Generator()
    out = []
    for i in indices:
        g.manual_seed(per_sample_seed(seed, i, SAMPLING))
        out.append(torch.randn(shape, generator=g))
    return torch.stack(out)


def sde_generators(seed: int, indices: list) -> list:
    """One generator per sample for the SDE sampler's noise, seeded by (seed, i): batch-invariant paths."""
    return [torch.Generator().manual_seed(per_sample_seed(seed, i, SDE)) for i in indices]


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
                           generator=sde_generators(settings.seed, idx))
        if not bool(torch.isfinite(x).all()):  # NaN would become black pixels
            raise ValueError(f"the model produced non-finite values for samples {idx[0]}…{idx[-1]} (damaged or "
                             f"diverged weights?)")
        yield to_uint8(x).cpu(), y.cpu()
