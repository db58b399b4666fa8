"""The random draws of a training batch (docs/model.md §6) as pure functions of (seed, global sample index): the
data order, the noise, t and the label dropout of sample i do not depend on the number of ranks, the accumulation
split or where a run was resumed."""
from __future__ import annotations

from typing import Sequence

import torch

from ..diffusion.flow import logit_normal_t
from ..io.datasets import load_batch, sample_indices
from ..runtime.seeds import TRAINING, per_sample_seed
from .config import TrainConfig


def per_sample_draws(seed: int, indices: Sequence[int], shape: tuple, device) -> tuple:
    """(noise (B, *shape), logit-normal draw n (B,), dropout uniform u (B,), t-mixture uniform c (B,)) for global
    sample ``indices``: each sample's draws come from a generator seeded by (seed, its global index), in that order
    (a draw added later leaves the earlier ones unchanged)."""
    g = torch.Generator(device=device)
    noise, n, u, c = [], [], [], []
    for i in indices:
        g.manual_seed(per_sample_seed(seed, i, TRAINING))
        noise.append(torch.randn(shape, generator=g, device=device))
        n.append(torch.randn(1, generator=g, device=device))
        u.append(torch.rand(1, generator=g, device=device))
        c.append(torch.rand(1, generator=g, device=device))
    return torch.stack(noise), torch.cat(n), torch.cat(u), torch.cat(c)


def draw_batch(data, cfg: TrainConfig, start: int, count: int, num_classes: int, device) -> tuple:
    """Global samples ``start`` … ``start + count − 1``: images (count, C, H, W) in [-1, 1], labels (count,) with
    dropout to the null class ``num_classes`` (0 for an unconditional model), t (count,) and noise, on ``device``.
    The images and labels are read from host memory (the dataset); the draws are made where they are used."""
    x, y = load_batch(data, sample_indices(cfg.seed, len(data), start, count))
    noise, n, u, c = per_sample_draws(cfg.seed, range(start, start + count), tuple(x.shape[1:]), device)
    y = y.to(device) if num_classes else torch.zeros_like(y, device=device)  # 0 = the null row
    y = torch.where(u < cfg.label_dropout, torch.full_like(y, num_classes), y)
    t = logit_normal_t(n, cfg.t_mean, cfg.t_std, mix=tuple(cfg.t_mix), pick=c)
    return x.to(device), y, t, noise
