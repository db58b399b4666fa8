"""The multistep flow solvers and the dopri5 reference (dip/diffusion/multistep.py, docs/model.md §7.2): exact
weights, orders of convergence on the closed-form Gaussian flow, guidance-interval switching, batch invariance."""
import math

import numpy as np
import pytest
import torch

from dip.diffusion.grid import time_points
from dip.diffusion.multistep import integral_weight, plan_steps, step_weights
from dip.diffusion.solvers import sample
from tests.support.flows import MU, SIGMA, Recorder, gaussian_velocity, sample_gaussian


def quadrature(t, s, f):
    """(1 − s) ∫_t^s f(u) / (1 − u)² du by 200-point Gauss–Legendre (smooth integrand for s < 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(200)
    u = t + (s - t) * (nodes + 1) / 2
    return (1 - s) * (s - t) / 2 * float(np.sum(weights * f(u) / (1 - u) ** 2))


@pytest.mark.parametrize("t,s", [(0.0, 0.01), (0.3, 0.35), (0.2, 0.9), (0.5, 0.999), (0.99, 0.9999), (0.7, 0.71)])
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_integral_weights_match_quadrature(t, s, k):
    expected = quadrature(t, s, lambda u: (u - t) ** k)
    assert integral_weight(k, t, s) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_integral_weight_at_the_data_end_is_the_value_there():
    for k in range(4):
        assert integral_weight(k, 0.9, 1.0) == pytest.approx(0.1**k)
        assert integral_weight(k, 0.9, 1 - 1e-12) == pytest.approx(0.1**k, rel=1e-6)  # continuous at s → 1


@pytest.mark.parametrize("nodes", [[0.4], [0.4, 0.3], [0.4, 0.3, 0.2], [0.3, 0.2, 0.1]])
def test_step_weights_integrate_polynomials_exactly(nodes):
    t, s = 0.3, 0.4
    for degree in range(len(nodes)):
        p = np.polynomial.Polynomial(np.arange(1, degree + 2, dtype=float))
        w = step_weights(t, s, nodes)
        assert sum(wi * p(n) for wi, n in zip(w, nodes)) == pytest.approx(quadrature(t, s, p), rel=1e-10)


def test_euler_plan_is_the_euler_update_bit_for_bit():
    noise = torch.randn(8, 3, generator=torch.Generator().manual_seed(0))
    x = noise.clone()
    grid = time_points(7)
    for i in range(7):
        t = torch.full((8,), grid[i])
        x = x + (grid[i + 1] - grid[i]) * gaussian_velocity(x, t)
    assert torch.equal(sample_gaussian(noise, 7, "euler"), x)


@pytest.mark.parametrize("method,schedule,order", [
    ("euler", "uniform", 1), ("euler", "cosine", 1), ("ab2", "uniform", 2), ("ab2", "cosine", 2),
    ("pc3", "cosine", 3),
])
def test_order_of_convergence_on_the_gaussian_flow(method, schedule, order):
    noise = torch.randn(64, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    exact = MU + SIGMA * noise  # the exact flow map of Gaussian data
    errors = [(sample_gaussian(noise, n, method, schedule=schedule) - exact).abs().max().item() for n in (20, 40, 80)]
    for coarse, fine in zip(errors, errors[1:]):
        assert 2**order * 0.75 < coarse / fine < 2**order * 1.35, errors


def test_pc3_on_the_uniform_grid_loses_one_order_at_the_data_end():
    # documented behaviour (docs/model.md §7.2): near t = 1 a step's weight is O(1), not O(Δt)
    noise = torch.randn(64, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errors = [(sample_gaussian(noise, n, "pc3") - (MU + SIGMA * noise)).abs().max().item() for n in (20, 40, 80)]
    assert all(3.0 < a / b < 5.5 for a, b in zip(errors, errors[1:])), errors


def test_multistep_beats_euler_at_equal_evaluations():
    noise = torch.randn(64, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = MU + SIGMA * noise
    error = {(m, n): (sample_gaussian(noise, n, m, schedule="cosine") - exact).abs().max().item()
             for m in ("euler", "ab2", "pc3") for n in (10, 40)}
    assert max(error["ab2", 10], error["pc3", 10]) < error["euler", 10] / 3, error
    assert error["pc3", 40] < error["ab2", 40] / 2 < error["euler", 40] / 20, error


def test_dopri5_reaches_the_exact_flow_map():
    pytest.importorskip("torchdiffeq")
    noise = torch.randn(4, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x = sample_gaussian(noise, 1, "dopri5", rtol=1e-7)
    assert (x.double() - (MU + SIGMA * noise)).abs().max() < 1e-5


def recorded(method, steps, interval, skip_uncond=False, schedule="uniform"):
    rec = Recorder()
    out = sample(rec, torch.zeros(1, 1), torch.tensor([1]), null_label=5, steps=steps, cfg_scale=3.0,
                 interval=interval, method=method, skip_uncond=skip_uncond, schedule=schedule)
    return rec.calls, out


@pytest.mark.parametrize("method", ["ab2", "pc3"])
@pytest.mark.parametrize("skip_uncond", [False, True])
def test_guidance_interval_decisions_are_eulers(method, skip_uncond):
    euler, _ = recorded("euler", 10, (0.2, 0.7), skip_uncond)
    calls, _ = recorded(method, 10, (0.2, 0.7), skip_uncond)
    assert calls == euler  # same times, same halves: one evaluation per step


@pytest.mark.parametrize("method", ["ab2", "pc3"])
def test_history_restarts_at_a_guidance_switch(method):
    guided = [0.2 < i / 10 < 0.7 for i in range(10)]
    plans = plan_steps(time_points(10), guided, method)
    for i, plan in enumerate(plans):
        switched = i > 0 and guided[i] != guided[i - 1]
        if switched or i == 0:
            assert plan.pred[1:] == (0.0, 0.0) and plan.prev == 0.0 and plan.keep == 1.0  # first order, uncorrected
        elif i >= 2 and not any(guided[j] != guided[j - 1] for j in range(i - 1, i + 1)):
            assert plan.pred[1] != 0.0
    # the recorded toy field is piecewise constant (−7 guided, 1 outside): any method integrates it exactly
    _, out = recorded(method, 10, (0.2, 0.7))
    assert out.item() == pytest.approx(sum(0.1 * (-7 if g else 1) for g in guided))


def test_dopri5_switches_guidance_at_the_interval_bounds():
    pytest.importorskip("torchdiffeq")
    _, out = recorded("dopri5", 1, (0.2, 0.7))
    assert out.item() == pytest.approx(0.2 * 1 + 0.5 * -7 + 0.3 * 1, abs=1e-5)


@pytest.mark.parametrize("method", ["ab2", "pc3"])
def test_samples_do_not_depend_on_the_batch(method):
    from tests.support.models import draw, random_model

    model = random_model()
    noise, y = draw("cpu")
    kw = dict(null_label=10, steps=5, cfg_scale=3.0, interval=(0.1, 0.7), method=method, schedule="cosine")
    together = sample(model, noise, y, **kw)
    alone = torch.cat([sample(model, noise[i:i + 1], y[i:i + 1], **kw) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def test_cosine_schedule():
    points = time_points(4, schedule="cosine")
    assert points == pytest.approx([0.0, (1 - math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(math.pi / 4)) / 2, 1.0])
    with pytest.raises(ValueError, match="schedule must be one of"):
        time_points(4, schedule="karras")


def test_aligned_grids_put_points_on_the_bounds_and_guide_between_them():
    from dip.diffusion.grid import aligned_points, step_grid

    points, guided = step_grid(10, (0.11, 0.97), rule="aligned")
    assert points == pytest.approx([0, 0.11, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.97, 1.0])
    assert guided == [False] + [True] * 8 + [False]
    assert aligned_points([0.0, 0.5, 1.0], (0.2, 0.3)) == [0.0, 0.2, 1.0]  # one interior point: the first bound
    assert aligned_points([0.0, 0.5, 1.0], (0.0, 1.0)) == [0.0, 0.5, 1.0]  # bounds at the ends: nothing to move
    points, guided = step_grid(8, (0.11, 0.97), schedule="cosine", rule="aligned")
    assert all(a < b for a, b in zip(points, points[1:])) and 0.11 in points and 0.97 in points


@pytest.mark.parametrize("method", ["euler", "ab2", "pc3"])
def test_aligned_rule_switches_guidance_exactly_at_the_bounds(method):
    # the toy field is −7 guided and 1 outside: the exact flow moves x by 0.23 − 7·0.45 + 0.32
    out = sample(Recorder(), torch.zeros(1, 1), torch.tensor([1]), null_label=5, steps=10, cfg_scale=3.0,
                 interval=(0.23, 0.68), method=method, interval_rule="aligned")
    assert out.item() == pytest.approx(0.23 * 1 + 0.45 * -7 + 0.32 * 1)
    float32 = sample(Recorder(), torch.zeros(1, 1), torch.tensor([1]), null_label=5, steps=10, cfg_scale=3.0,
                     interval=(0.23, 0.68), method=method)
    assert float32.item() != pytest.approx(out.item())  # the per-point rule switches on the grid instead


def test_aligned_multistep_converges_to_dopri5_with_guidance():
    pytest.importorskip("torchdiffeq")

    def guided_gaussian(x, t, y):  # conditional: the Gaussian flow; unconditional: the flow of N(−μ, σ²)
        sign = torch.where(y == 5, -1.0, 1.0).view(-1, 1)
        return sign * gaussian_velocity(sign * x, t)

    noise = torch.randn(16, 1, generator=torch.Generator().manual_seed(4))
    kw = dict(null_label=5, cfg_scale=2.0, interval=(0.11, 0.97))
    y = torch.zeros(16, dtype=torch.long)
    ref = sample(guided_gaussian, noise, y, method="dopri5", rtol=1e-7, **kw)
    error = {(rule, n): (sample(guided_gaussian, noise, y, steps=n, method="pc3", schedule="cosine",
                                interval_rule=rule, **kw) - ref).abs().max().item()
             for rule in ("float32", "aligned") for n in (20, 40)}
    assert error["aligned", 40] < error["float32", 40] / 5, error  # the per-point rule: an O(1/N) switch error
    assert error["aligned", 20] / error["aligned", 40] > 5, error  # third order once the switch is exact
