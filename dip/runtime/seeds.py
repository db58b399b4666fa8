"""Per-sample random streams (docs/model.md §6–§7): sample i of a run seeded s draws from its own generator, seeded
by (s, i) and the stream, so results do not depend on the batch size, the number of ranks or where a run resumed."""
from __future__ import annotations

TRAINING = 0x9E3779B1   # training draws: noise, t, label dropout (dip/training/draws.py)
SAMPLING = 0x632BE5AB   # the starting noise of a sample (dip/diffusion/generation.py)
SDE = 0x2545F491        # the Brownian increments of the SDE sampler


def per_sample_seed(seed: int, index: int, stream: int) -> int:
    """The generator seed of sample ``index`` on ``stream``: (seed + 1)·stream + index, modulo 2⁶⁴ (the range a torch
    generator takes; unchanged below it)."""
    return ((seed + 1) * stream + index) % 2**64
