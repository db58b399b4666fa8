"""The diffusion maths of DiP in one place (docs/model.md §6–§7): rectified flow with t = 0 noise and t = 1 data,
velocity prediction, logit-normal t, and the samplers (Euler, Heun, Euler–Maruyama here; the multistep methods and
the dopri5 reference in dip/solvers.py) with classifier-free guidance over a guidance interval.

    x_t = t·x + (1 − t)·ε,   v = x − ε,   loss = mean ‖model(x_t, t, y) − v‖²          (§6)
    grid: t_i = i/N for i < N, t_N = 1; optional shift t ↦ t / (t + s·(1 − t))         (§7)
    guided v = v_u + w·(v_c − v_u) inside the interval, v_c outside (both halves evaluated unless skip_uncond)

Whether step i is inside the guidance interval is decided, by default, the authors' way: on the float32 grid
(a float32 linspace, then the shift formula, in float32) compared with the bounds in float32 (``rule="float32"``).
``rule="exact"`` decides on the exact times i/N instead; the two differ at some (N, bound) pairs, e.g. N = 25 with
high = 0.4, where the float32 t_10 is 0.39999998 (docs/model.md §7). ``rule="aligned"`` puts grid points on the
bounds and guides exactly between them (``step_grid``; docs/model.md §7.2).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from .solvers import MULTISTEP_ORDERS, dopri5, interval_pieces, plan_steps, run_plan

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------------------------------------- training
def logit_normal_t(noise: torch.Tensor, mean: float = 0.0, std: float = 1.0, *, mix: tuple = (0.0, 0.0, 1.0),
                   pick: torch.Tensor | None = None) -> torch.Tensor:
    """t = sigmoid(mean + std·n) from standard normal draws n (§6: logit-normal(0, 1)).

    ``mix = (fraction, mean₂, std₂)`` with uniform draws ``pick`` (same shape as n): the samples with pick < fraction
    use the second component sigmoid(mean₂ + std₂·n) instead — a two-part mixture that can train one end of the
    noise range more without starving the other (docs/model.md §8)."""
    t = torch.sigmoid(mean + std * noise)
    fraction, mean2, std2 = mix
    if fraction <= 0:
        return t
    if pick is None:
        raise ValueError("a mixture of t distributions needs the uniform draws `pick`")
    return torch.where(pick < fraction, torch.sigmoid(mean2 + std2 * noise), t)


def interpolate(x: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = t·x + (1 − t)·ε, t (B,) broadcast over the image (§6)."""
    t = t.view(-1, *([1] * (x.dim() - 1)))
    return t * x + (1 - t) * eps


def velocity_target(x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """v = x − ε, the rectified-flow velocity the network predicts (§6)."""
    return x - eps


def flow_loss(pred: torch.Tensor, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all B·C·H·W elements between the prediction and x − ε (§6), in fp32."""
    return F.mse_loss(pred.float(), velocity_target(x, eps).float())


# ---------------------------------------------------------------------------------------------------- sampling
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


def guided_velocity(model: Model, x: torch.Tensor, t: float, y: torch.Tensor, null_label: int, cfg_scale: float,
                    guide: bool, skip_uncond: bool = False) -> torch.Tensor:
    """The CFG velocity at time t (§7): one model call on the doubled batch [unconditional, conditional];
    v_u + w·(v_c − v_u) when ``guide``, else v_c, in fp32. ``skip_uncond`` evaluates only the conditional half when not
    guiding (a speed-up, off by default so timings compare with the authors')."""
    B = x.shape[0]
    if cfg_scale == 1.0 or (skip_uncond and not guide):
        return model(x, torch.full((B,), t, device=x.device), y).float()
    labels = torch.cat([torch.full_like(y, null_label), y])
    v = model(torch.cat([x, x]), torch.full((2 * B,), t, device=x.device), labels).float()
    v_u, v_c = v.chunk(2)  # guidance in fp32 whatever the model's output dtype
    return v_u + cfg_scale * (v_c - v_u) if guide else v_c


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
    if schedule == "uniform":
        t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float32)
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
    if rule != "aligned":
        return points, guided_steps(steps, interval, shift=shift, inclusive_high=inclusive_high, rule=rule,
                                    schedule=schedule)
    points = aligned_points(points, interval)
    low, high = interval
    return points, [low < (a + b) / 2 < high for a, b in zip(points, points[1:])]


METHODS = ("euler", "heun", "sde", *tuple(m for m in MULTISTEP_ORDERS if m != "euler"), "dopri5")


@torch.no_grad()
def sample(model: Model, noise: torch.Tensor, y: torch.Tensor, *, null_label: int, steps: int = 100,
           cfg_scale: float = 1.0, interval: tuple = (0.0, 1.0), shift: float = 1.0, method: str = "euler",
           skip_uncond: bool = False, sde_scale: float = 1.0, generator: torch.Generator | None = None,
           progress: Callable | None = None, interval_rule: str = "float32", schedule: str = "uniform",
           rtol: float = 1e-5) -> torch.Tensor:
    """Integrate from t = 0 (``noise``) to t = 1 (§7). ``method``:

    - ``euler``: N evaluations; guidance while low < t_i < high (strict).
    - ``ab2`` / ``pc3``: multistep on the data prediction, second / third order, N evaluations, the same per-step
      guidance decisions as Euler (dip/solvers.py, docs/model.md §7.2).
    - ``heun``: predictor at t_i, corrector at t_{i+1}, averaged; the guidance decision is made at t_i with
      low < t_i ≤ high and reused for the corrector; the last step is plain Euler: 2N − 1 evaluations.
      ``interval_rule`` picks how "inside the interval" is decided (module doc).
    - ``sde``: Euler–Maruyama on dx = [v − λ(x − t·v)] dt + √(2λ(1 − t)) dW, which has the ODE's marginals
      (the score of x_t is −(x − t·v)/(1 − t)); λ = ``sde_scale``; the last step adds no noise.
    - ``dopri5``: adaptive reference (torchdiffeq) to relative tolerance ``rtol``, guidance on (low, high) in
      continuous time; ``steps`` and ``schedule`` unused.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    guide_any = cfg_scale != 1.0

    def field(x: torch.Tensor, t: float, guide: bool, labels: torch.Tensor = y) -> torch.Tensor:
        return guided_velocity(model, x, t, labels, null_label, cfg_scale, guide, skip_uncond)

    x = noise.float()
    if method == "dopri5":
        def field_of(b: int):
            return partial(field, labels=y[b:b + 1])

        return dopri5(field_of, x, interval_pieces(interval, guide_any), rtol=rtol, atol=rtol)[0]
    grid_t, guided = step_grid(steps, interval, shift=shift, schedule=schedule, rule=interval_rule,
                               inclusive_high=method == "heun")
    if method in MULTISTEP_ORDERS:
        return run_plan(field, x, plan_steps(grid_t, guided, method), progress)
    steps_iter = range(steps) if progress is None else progress(range(steps))
    for i in steps_iter:
        t, t_next = grid_t[i], grid_t[i + 1]
        dt = t_next - t
        v = field(x, t, guided[i])
        if method == "heun" and i < steps - 1:
            v = 0.5 * (v + field(x + dt * v, t_next, guided[i]))
        if method == "sde" and i < steps - 1:
            drift = v - sde_scale * (x - t * v)
            dw = torch.randn(x.shape, generator=generator, device="cpu" if generator is None else generator.device)
            x = x + dt * drift + (2 * sde_scale * (1 - t) * dt) ** 0.5 * dw.to(x.device)
        else:
            x = x + dt * v
    return x


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images → uint8: clip((x + 1)·127.5 + 0.5, 0, 255) (§7)."""
    return ((x.float() + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)
