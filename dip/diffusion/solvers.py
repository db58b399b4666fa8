"""One entry point for sampling (docs/model.md §7): ``sample()`` integrates the flow from t = 0 (noise) to t = 1
(data) with the solver ``method`` names, looked up in ``SOLVERS`` — every solver is a function
``(field, x, options) → x₁`` of the guided field (dip/diffusion/guidance.py), the start state (fp32) and the
``SolverOptions`` (grid, guidance interval rule, noise); ``sample()`` itself has no per-method branches.

- ``euler``: N evaluations; guidance while low < t_i < high (strict).
- ``ab2`` / ``pc3``: multistep on the data prediction, second / third order, N evaluations, the same per-step
  guidance decisions as Euler (dip/diffusion/multistep.py, docs/model.md §7.2).
- ``heun``: predictor at t_i, corrector at t_{i+1}, averaged; the guidance decision is made at t_i with
  low < t_i ≤ high and reused for the corrector; the last step is plain Euler: 2N − 1 evaluations.
- ``sde``: Euler–Maruyama on dx = [v − λ(x − t·v)] dt + √(2λ(1 − t)) dW, which has the ODE's marginals
  (the score of x_t is −(x − t·v)/(1 − t)); λ = ``sde_scale``; the last step adds no noise.
- ``dopri5``: adaptive reference (torchdiffeq) to relative tolerance ``rtol``, guidance on (low, high) in
  continuous time; ``steps`` and ``schedule`` unused (dip/diffusion/dopri5.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .dopri5 import dopri5, interval_pieces
from .grid import step_grid
from .guidance import GuidedField, Model
from .multistep import plan_steps, run_plan


@dataclass(frozen=True)
class SolverOptions:
    """Everything a solver needs besides the field and the start: the time grid (steps, shift, schedule), the
    guidance interval and its rule (dip/diffusion/grid.py), the SDE's noise scale and generator, a progress wrapper
    over the steps, and the adaptive reference's tolerance."""

    steps: int = 100
    interval: tuple = (0.0, 1.0)
    shift: float = 1.0
    schedule: str = "uniform"
    interval_rule: str = "float32"
    sde_scale: float = 1.0
    generator: torch.Generator | list | None = None  # the SDE's noise: one generator, or one per sample
    progress: Callable | None = None
    rtol: float = 1e-5

    def grid(self, inclusive_high: bool = False) -> tuple:
        """(N + 1 times, N guidance decisions) of a fixed-step solver (``step_grid``)."""
        return step_grid(self.steps, self.interval, shift=self.shift, schedule=self.schedule,
                         rule=self.interval_rule, inclusive_high=inclusive_high)

    def step_range(self):
        """range(N), wrapped by ``progress`` when given."""
        return range(self.steps) if self.progress is None else self.progress(range(self.steps))


def multistep(method: str) -> Callable:
    """The solver running ``plan_steps(…, method)``: euler, ab2 or pc3 (docs/model.md §7.2)."""

    def solve(field: GuidedField, x: torch.Tensor, options: SolverOptions) -> torch.Tensor:
        grid_t, guided = options.grid()
        return run_plan(field, x, plan_steps(grid_t, guided, method), options.progress)

    solve.__name__ = method
    return solve


def heun(field: GuidedField, x: torch.Tensor, options: SolverOptions) -> torch.Tensor:
    """Heun's method; the decision at t_i (low < t_i ≤ high) holds for both evaluations; the last step is Euler."""
    grid_t, guided = options.grid(inclusive_high=True)
    for i in options.step_range():
        t, t_next = grid_t[i], grid_t[i + 1]
        dt = t_next - t
        v = field(x, t, guided[i])
        if i < options.steps - 1:
            v = 0.5 * (v + field(x + dt * v, t_next, guided[i]))
        x = x + dt * v
    return x


def euler_maruyama(field: GuidedField, x: torch.Tensor, options: SolverOptions) -> torch.Tensor:
    """Euler–Maruyama on the marginal-preserving SDE (module doc); the last step is a plain Euler step."""
    grid_t, guided = options.grid()
    lam = options.sde_scale
    for i in options.step_range():
        t, t_next = grid_t[i], grid_t[i + 1]
        dt = t_next - t
        v = field(x, t, guided[i])
        if i < options.steps - 1:
            drift = v - lam * (x - t * v)
            x = x + dt * drift + (2 * lam * (1 - t) * dt) ** 0.5 * brownian(x, options.generator)
        else:
            x = x + dt * v
    return x


def brownian(x: torch.Tensor, generator) -> torch.Tensor:
    """A standard normal increment shaped like ``x``: from one generator, or — a list of one generator per sample —
    sample by sample, so that each sample's path does not depend on the batch it is in."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != x.shape[0]:
            raise ValueError(f"one generator per sample expected: {x.shape[0]} samples, {len(generator)} generators")
        return torch.stack([torch.randn(x.shape[1:], generator=g, device=g.device) for g in generator]).to(x.device)
    device = "cpu" if generator is None else generator.device
    return torch.randn(x.shape, generator=generator, device=device).to(x.device)


def adaptive_reference(field: GuidedField, x: torch.Tensor, options: SolverOptions) -> torch.Tensor:
    """dopri5 per sample, piecewise over the guidance interval in continuous time."""
    pieces = interval_pieces(options.interval, field.guided_anywhere)
    return dopri5(field.of_sample, x, pieces, rtol=options.rtol, atol=options.rtol)[0]


SOLVERS = {"euler": multistep("euler"), "heun": heun, "sde": euler_maruyama, "ab2": multistep("ab2"),
           "pc3": multistep("pc3"), "dopri5": adaptive_reference}
METHODS = tuple(SOLVERS)


@torch.no_grad()
def sample(model: Model, noise: torch.Tensor, y: torch.Tensor, *, null_label: int, steps: int = 100,
           cfg_scale: float = 1.0, interval: tuple = (0.0, 1.0), shift: float = 1.0, method: str = "euler",
           skip_uncond: bool = False, sde_scale: float = 1.0, generator: torch.Generator | list | None = None,
           progress: Callable | None = None, interval_rule: str = "float32", schedule: str = "uniform",
           rtol: float = 1e-5) -> torch.Tensor:
    """x₁ (B, C, H, W) fp32: ``noise`` (B, C, H, W) integrated from t = 0 to 1 for labels ``y`` (B,) by the solver
    ``method`` (module doc), with classifier-free guidance of scale ``cfg_scale`` on ``interval`` (§7)."""
    if method not in SOLVERS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    field = GuidedField(model, y, null_label, cfg_scale, skip_uncond)
    options = SolverOptions(steps=steps, interval=interval, shift=shift, schedule=schedule,
                            interval_rule=interval_rule, sde_scale=sde_scale, generator=generator, progress=progress,
                            rtol=rtol)
    return SOLVERS[method](field, noise.float(), options)
