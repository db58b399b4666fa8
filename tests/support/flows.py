"""Flows with known answers (docs/model.md §7): Gaussian data, whose exact velocity and flow map are closed-form, and a
toy model that records its calls."""
import torch

from dip.diffusion.solvers import sample

MU, SIGMA = 0.7, 0.5  # Gaussian data N(μ, σ²) per element; noise N(0, 1)


def gaussian_velocity(x, t, y=None):
    """Exact v(x_t, t) = E[x − ε | x_t] for Gaussian data: μ + (tσ² − (1 − t))/s² · (x_t − tμ), s² = t²σ² + (1 − t)²."""
    t = t.view(-1, *([1] * (x.dim() - 1)))
    s2 = t**2 * SIGMA**2 + (1 - t) ** 2
    return MU + (t * SIGMA**2 - (1 - t)) / s2 * (x - t * MU)


def sample_gaussian(noise, steps, method, **kw):
    """``sample`` of the exact Gaussian flow (unconditional)."""
    return sample(gaussian_velocity, noise, torch.zeros(noise.shape[0], dtype=torch.long), null_label=0,
                  steps=steps, method=method, **kw)


class Recorder:
    """A conditional toy model that records (t, batch size, labels) of every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, x, t, y):
        self.calls.append((t[0].item(), x.shape[0], y.tolist()))
        return x * 0 + y.view(-1, 1).float()  # velocity = the label
