"""The default guidance-interval rule is the authors' sampler's (issue 23; dip/diffusion/grid.py): their time grid is
``linspace(0, 1 − 1/N, N)`` in float32 with 1.0 appended, shifted in float32, and step i is guided when
t_i > low and t_i < high (Heun: t_i ≤ high), each t_i a float32 scalar compared with the Python bounds."""
import pytest
import torch

from dip.diffusion.grid import guided_steps

BOUNDS = [k / 100 for k in range(101)]


def authors_decisions(steps: int, low: float, high: float, heun: bool, shift: float = 1.0) -> list:
    """A transcription of the authors' sampler loop: one 0-d float32 tensor per step start."""
    t = torch.linspace(0, 1 - 1 / steps, steps, dtype=torch.float32)
    t = torch.cat([t, torch.tensor([1.0])])
    t = t / (t + shift * (1 - t))
    decisions = []
    for i in range(steps):
        t_cur = t[i]
        inside = bool(t_cur > low) and bool(t_cur <= high if heun else t_cur < high)
        decisions.append(inside)
    return decisions


@pytest.mark.parametrize("steps", [10, 20, 25, 50, 75, 100])
@pytest.mark.parametrize("heun", [False, True])
def test_every_two_decimal_bound_decides_as_the_authors(steps, heun):
    for bound in BOUNDS:
        for low, high in ((bound, 1.0), (0.0, bound)):
            assert guided_steps(steps, (low, high), inclusive_high=heun) == authors_decisions(steps, low, high, heun), \
                (steps, low, high, heun)


def test_the_issues_examples_guide_at_the_bound_step():
    assert guided_steps(10, (0.0, 0.4))[4]  # the float32 t_4 is below 0.4: guided, as the authors do
    assert guided_steps(20, (0.0, 0.5))[10]


def test_shifted_grids_follow_the_same_construction():
    for shift in (0.5, 3.0):
        for bound in (0.11, 0.5, 0.97):
            assert guided_steps(25, (0.0, bound), shift=shift) == authors_decisions(25, 0.0, bound, False, shift)
