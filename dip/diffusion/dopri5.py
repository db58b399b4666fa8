"""The adaptive reference solver (docs/model.md §7.2): torchdiffeq's dopri5 (an optional extra) integrates the flow ODE
to a tolerance, one sample at a time so each sample's steps are its own, split at the guidance interval's ends — the
ground truth for benchmarks/bench_sampler.py."""
from __future__ import annotations

from typing import Callable

import torch

from .multistep import Field


@torch.no_grad()
def dopri5(field_of: Callable[[int], Field], x: torch.Tensor, switches: list, *, rtol: float = 1e-5,
           atol: float = 1e-5) -> tuple:
    """Integrate dx/dt = field(x, t, guide) from t = 0 to 1 with torchdiffeq's dopri5, each sample b alone with
    ``field_of(b)`` (its own labels, its own adaptive steps), piecewise over ``switches`` = [(t_start, t_end, guide),
    …] covering [0, 1]. Returns (x₁ (B, C, H, W), mean evaluations per sample)."""
    try:
        from torchdiffeq import odeint
    except ImportError:
        raise ImportError("the dopri5 reference solver uses torchdiffeq: pip install -e '.[solvers]'") from None
    out, evaluations = [], 0
    for b in range(x.shape[0]):
        field, state = field_of(b), x[b:b + 1].float()
        for start, end, guide in switches:
            def rhs(t, y, guide=guide):
                nonlocal evaluations
                evaluations += 1
                return field(y, float(t.detach()), guide)

            times = torch.tensor([start, end], dtype=torch.float64)
            state = odeint(rhs, state, times, method="dopri5", rtol=rtol, atol=atol)[-1].float()
        out.append(state)
    return torch.cat(out), evaluations / max(x.shape[0], 1)


def interval_pieces(interval: tuple, guided_anywhere: bool) -> list:
    """[(start, end, guide)] covering [0, 1]: guidance on (low, high) — the continuous-time limit of the per-step
    rule — and the conditional field elsewhere; one piece when guidance is off."""
    if not guided_anywhere:
        return [(0.0, 1.0, False)]
    low, high = interval
    pieces = [(0.0, low, False), (low, high, True), (high, 1.0, False)]
    return [p for p in pieces if p[1] > p[0]]
