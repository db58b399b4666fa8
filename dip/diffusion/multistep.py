"""Multistep flow-ODE solvers on the data prediction (docs/model.md §7.2).

DiP's probability-flow ODE is dx/dt = v(x, t) with x_t = t·x + (1 − t)·ε (t = 0 noise, t = 1 data). Written with the
data prediction x̂ = x + (1 − t)·v, its linear part integrates exactly (the integrating factor of DPM-Solver++ /
DEIS): over a step t → s,

    x_s = (1 − s)/(1 − t) · x_t + (1 − s) ∫_t^s x̂(u) / (1 − u)² du.

The multistep methods replace x̂(u) by the polynomial through the last few data predictions (nodes in t, so the
t = 0 end, where λ = logit t is −∞, needs no special case) and integrate it exactly:

- ``euler``: x̂ constant — identical to Euler's x + (s − t)·v (it is also DDIM); first order.
- ``ab2``: x̂ linear through the last two predictions (DPM-Solver++(2M) / tAB-DEIS family); second order.
- ``pc3``: ``ab2`` as predictor, then, once the model has been evaluated at the new point, the step is redone with
  the quadratic through that value too (UniPC's corrector: no extra evaluation; the next step reuses the value);
  third order. The final step to t = 1 is not corrected (that would cost an evaluation at t = 1); its prediction
  uses the quadratic instead, since x_1 is the polynomial's value at t = 1 and so one order less accurate than an
  interior step.

Each step's arithmetic is a ``StepPlan`` of scalar coefficients computed once from the time grid, so the eager solver
and the CUDA-graph sampler (dip/diffusion/graphed_sampler.py) run the same numbers. Guidance switching on or off at the
guidance interval's ends changes the vector field, so the history is dropped there and the method restarts at first
order (and the step that crosses the switch is not corrected with a value of the other field).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

# A guided velocity field: (x (B, C, H, W), t, guide) → v (B, C, H, W) fp32.
Field = Callable[[torch.Tensor, float, bool], torch.Tensor]

MULTISTEP_ORDERS = {"euler": (1, False), "ab2": (2, False), "pc3": (2, True)}  # method: (predictor order, corrector)
HISTORY = 3  # data predictions a step can use: the new one and two before it


def integral_weight(k: int, t: float, s: float) -> float:
    """I_k = (1 − s) ∫_t^s (u − t)^k / (1 − u)² du for 0 ≤ t < s ≤ 1 (the weight of the k-th power of the
    interpolating polynomial; I_k(t, 1) = (1 − t)^k, its limit). A power series where the step is short relative to
    1 − t (no cancellation), the closed form otherwise."""
    a, b, h = 1.0 - t, 1.0 - s, s - t
    if b <= 0.0:
        return a**k
    q = h / a
    if q < 0.5:  # ∫_0^1 r^k / (1 − q r)² dr = Σ_n (n + 1) q^n / (n + k + 1); terms fall by ≥ 2 per n
        series = sum((n + 1) * q**n / (n + k + 1) for n in range(64))
        return b * h ** (k + 1) / a**2 * series
    total = a**k * (1 / b - 1 / a) - k * a ** (k - 1) * math.log(a / b)  # the m = 0, 1 terms of (a − w)^k / w²
    for m in range(2, k + 1):
        total += math.comb(k, m) * a ** (k - m) * (-1) ** m * (a ** (m - 1) - b ** (m - 1)) / (m - 1)
    return b * total


def step_weights(t: float, s: float, nodes: list) -> list:
    """Weights w_j with (1 − s) ∫_t^s p(u) / (1 − u)² du = Σ_j w_j·x̂_j, p the polynomial through (nodes[j], x̂_j)."""
    offsets = [n - t for n in nodes]
    weights = []
    for j, d_j in enumerate(offsets):
        coeffs = [1.0]  # the Lagrange basis polynomial of node j in powers of (u − t), lowest first
        for m, d_m in enumerate(offsets):
            if m != j:
                scale = 1.0 / (d_j - d_m)
                coeffs = [(c_low * -d_m + c_high) * scale
                          for c_low, c_high in zip(coeffs + [0.0], [0.0] + coeffs)]
        weights.append(sum(c * integral_weight(k, t, s) for k, c in enumerate(coeffs)))
    return weights


@dataclass(frozen=True)
class StepPlan:
    """One step's scalars (docs/model.md §7.2). The model is evaluated at (x, t) with guidance ``guide``, giving v and
    x̂ = x + (1 − t)·v; the history is [x̂, x̂₋₁, x̂₋₂]. Corrector: x ← keep·x + prev·x_prev + Σ corr_j·hist_j (x_prev:
    the state the previous step started from). Predictor: x_prev ← x, then x ← scale·x + Σ pred_j·hist_j + dv·v."""
    t: float
    guide: bool
    keep: float = 1.0
    prev: float = 0.0
    corr: tuple = (0.0, 0.0, 0.0)
    scale: float = 1.0
    pred: tuple = (0.0, 0.0, 0.0)
    dv: float = 0.0

    def coefficients(self) -> list:
        """[1 − t, keep, prev, corr×3, scale, pred×3, dv]: what the graph sampler feeds its static step."""
        return [1.0 - self.t, self.keep, self.prev, *self.corr, self.scale, *self.pred, self.dv]


def padded(weights: list) -> tuple:
    """Weights of the newest ``len(weights)`` history slots, zero for the rest (HISTORY in all)."""
    return tuple(weights) + (0.0,) * (HISTORY - len(weights))


def plan_steps(grid: list, guided: list, method: str) -> list:
    """The ``StepPlan`` of each step of ``method`` over the times ``grid`` (N + 1 points, 0 → 1) with the per-step
    guidance decisions ``guided`` (N booleans)."""
    if method not in MULTISTEP_ORDERS:
        raise ValueError(f"multistep method must be one of {list(MULTISTEP_ORDERS)}, got {method!r}")
    order, corrector = MULTISTEP_ORDERS[method]
    plans, nodes = [], []  # nodes: the times of the history in this guidance regime, newest first
    for i in range(len(grid) - 1):
        t, s = grid[i], grid[i + 1]
        switched = i > 0 and guided[i] != guided[i - 1]
        nodes = [t] if switched else [t, *nodes][:HISTORY]
        correction = {}
        if corrector and i > 0 and not switched:
            weights = step_weights(grid[i - 1], t, nodes[:order + 1])
            correction = dict(keep=0.0, prev=(1 - t) / (1 - grid[i - 1]), corr=padded(weights))
        if method == "euler":
            plans.append(StepPlan(t, guided[i], dv=s - t))
            continue
        # the last step's integral is the polynomial's value at t = 1 (all weight at the end), an extrapolation one
        # order less accurate than an interior step: a corrected method predicts it with one more node
        last = corrector and s == 1.0
        weights = step_weights(t, s, nodes[:order + last])
        plans.append(StepPlan(t, guided[i], **correction, scale=(1 - s) / (1 - t), pred=padded(weights)))
    return plans


def run_plan(field: Field, x: torch.Tensor, plans: list, progress: Callable | None = None) -> torch.Tensor:
    """Execute ``plan_steps`` eagerly (fp32); terms with a zero coefficient are skipped, so Euler's plan computes
    exactly x + Δt·v (and keeps no history)."""
    history, x_prev = [], None
    multistep = any(any(p.pred) or any(p.corr) for p in plans)
    for plan in (plans if progress is None else progress(plans)):
        v = field(x, plan.t, plan.guide)
        if multistep:
            history = [x + (1 - plan.t) * v, *history][:HISTORY]
        if plan.keep != 1.0 or plan.prev:
            x = combine(plan.keep, x, [(plan.prev, x_prev), *zip(plan.corr, history)])
        x_prev = x
        x = combine(plan.scale, x, [*zip(plan.pred, history), (plan.dv, v)])
    return x


def combine(scale: float, x: torch.Tensor, terms: list) -> torch.Tensor:
    """scale·x + Σ w·y over the terms with w ≠ 0."""
    out = x if scale == 1.0 else scale * x
    for w, y in terms:
        if w:
            out = out + w * y
    return out
