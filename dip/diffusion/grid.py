"""The sampler's time grid and guidance-interval decisions (docs/model.md §7, §7.2).

    grid: t_i = i/N for i < N (or the cosine schedule), t_N = 1; optional shift t ↦ t / (t + s·(1 − t))

Whether step i is inside the guidance interval is decided, by default, the authors' way: on the float32 grid
(``linspace(0, 1 − 1/N, N)`` in float32 with 1 appended, then the shift formula, in float32) compared with the bounds
in float32 (``rule="float32"``).
``rule="exact"`` decides on the exact times i/N instead; the two differ at some (N, bound) pairs, e.g. N = 25 with
high = 0.4, where the float32 t_10 is 0.39999998 (docs/model.md §7). ``rule="aligned"`` puts grid points on the
bounds and guides exactly between them (``step_grid``; docs/model.md §7.2).
"""
from __future__ import annotations

import math

import torch

SCHEDULES = ("uniform", "cosine")


def time_points(steps: int, shift: float = 1.0, schedule: str = "uniform") -> list:
    """N + 1 times from 0 to 1, each mapped by the authors' shift t / (t + shift·(1 − t)) (§7); exact Python floats,
    so that interval decisions at, e.g., t = 0.7 follow the written bounds rather than float32 rounding.

    ``schedule``: ``uniform`` (i/N, the paper's) or ``cosine``: (1 − cos(πi/N)) / 2, steps of O(1/N²) at both ends. The
    multistep solvers need it to keep their order: near t = 1 a step's integrating-factor weight is O(1) instead of
    O(Δt), so on a uniform grid the last steps cost a third-order method one order (docs/model.md §7.2)."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "uniform":
        points = [i / steps for i in range(steps)]
    else:
        points = [(1 - math.cos(math.pi * i / steps)) / 2 for i in range(steps)]
    return [t / (t + shift * (1 - t)) for t in points + [1.0]]


def time_grid(steps: int, shift: float = 1.0, device=None, schedule: str = "uniform") -> torch.Tensor:
    """``time_points`` as a float32 tensor."""
    return torch.tensor(time_points(steps, shift, schedule), dtype=torch.float32, device=device)


INTERVAL_RULES = ("float32", "exact", "aligned")


def in_interval(t: float, interval: tuple, inclusive_high: bool) -> bool:
    """Whether guidance applies at t: low < t < high (Euler) or low < t ≤ high (Heun's decision), §7."""
    low, high = interval
    return low < t and (t <= high if inclusive_high else t < high)


def guided_steps(steps: int, interval: tuple, *, shift: float = 1.0, inclusive_high: bool = False,
                 rule: str = "float32", schedule: str = "uniform") -> list:
    """For each step i < N, whether guidance applies at t_i (§7; the rule is in the module doc; on the cosine schedule
    the float32 rule rounds the exact points)."""
    if rule not in INTERVAL_RULES[:2]:
        raise ValueError(f"per-point interval rule must be one of {INTERVAL_RULES[:2]}, got {rule!r}")
    if rule == "exact":
        return [in_interval(t, interval, inclusive_high) for t in time_points(steps, shift, schedule)[:-1]]
    low, high = interval
    if schedule == "uniform":  # the authors' construction: N float32 points up to 1 − 1/N, then 1 appended
        t = torch.cat([torch.linspace(0.0, 1.0 - 1.0 / steps, steps, dtype=torch.float32), torch.ones(1)])
        t = t / (t + shift * (1 - t))  # float32 throughout, as the authors; Python bounds compare in float32
    else:
        t = time_grid(steps, shift, schedule=schedule)
    inside = (t > low) & ((t <= high) if inclusive_high else (t < high))
    return inside[:-1].tolist()


def aligned_points(points: list, interval: tuple) -> list:
    """``points`` with the interior point nearest each interval bound moved onto it (a bound at 0 or 1, or whose
    nearest point another bound took, is left out): guidance can then switch exactly at the bounds."""
    points, taken = list(points), set()
    for bound in interval:
        if 0.0 < bound < 1.0 and len(points) > 2:
            j = min(range(1, len(points) - 1), key=lambda k: abs(points[k] - bound))
            if j not in taken:
                points[j] = bound
                taken.add(j)
    return points


def step_grid(steps: int, interval: tuple, *, shift: float = 1.0, schedule: str = "uniform",
              rule: str = "float32", inclusive_high: bool = False) -> tuple:
    """(N + 1 times, N guidance decisions) of a fixed-step sampler (§7, docs/model.md §7.2). ``float32`` / ``exact``
    decide at each step's start t_i (``guided_steps``); ``aligned`` first moves a grid point onto each bound and
    guides the steps whose midpoint is inside the interval — the steps between the bounds, the continuous-time
    rule that the dopri5 reference follows, without the up-to-one-step-late switch of the per-point rules."""
    points = time_points(steps, shift, schedule)
    repeated = [i for i in range(steps) if points[i + 1] <= points[i]]
    if repeated:
        i = repeated[0]
        raise ValueError(f"the {steps}-step {schedule} grid with shift {shift:g} repeats a time (t_{i} = t_{i + 1} = "
                         f"{points[i]!r}): use a larger shift or fewer steps")
    if rule != "aligned":
        return points, guided_steps(steps, interval, shift=shift, inclusive_high=inclusive_high, rule=rule,
                                    schedule=schedule)
    points = aligned_points(points, interval)
    low, high = interval
    return points, [low < (a + b) / 2 < high for a, b in zip(points, points[1:])]
