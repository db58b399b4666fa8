"""The training objective of DiP (docs/model.md §6): rectified flow with t = 0 noise and t = 1 data, velocity
prediction, logit-normal t.

    x_t = t·x + (1 − t)·ε,   v = x − ε,   loss = mean ‖model(x_t, t, y) − v‖²
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


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
