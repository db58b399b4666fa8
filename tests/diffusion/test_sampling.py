"""The diffusion maths (docs/model.md §6–§7) on cases with known answers."""
import pytest
import torch

from dip.diffusion.flow import flow_loss, interpolate, logit_normal_t, velocity_target
from dip.diffusion.grid import guided_steps, time_grid
from dip.diffusion.guidance import guided_velocity
from dip.diffusion.solvers import sample
from dip.io.image_writers import to_uint8
from tests.support.flows import MU, SIGMA, Recorder, sample_gaussian


def test_interpolation_target_and_loss():
    x, eps, t = torch.randn(3, 3, 4, 4), torch.randn(3, 3, 4, 4), torch.tensor([0.0, 0.5, 1.0])
    xt = interpolate(x, eps, t)
    torch.testing.assert_close(xt[0], eps[0])
    torch.testing.assert_close(xt[2], x[2])
    torch.testing.assert_close(velocity_target(x, eps), x - eps)
    assert flow_loss(x - eps, x, eps) == 0
    torch.testing.assert_close(flow_loss(torch.zeros_like(x), x, eps), (x - eps).square().mean())
    t = logit_normal_t(torch.randn(100_000, generator=torch.Generator().manual_seed(0)))
    assert 0 < t.min() and t.max() < 1 and abs(t.mean().item() - 0.5) < 0.01


def test_t_mixture_draws_each_component_by_its_fraction():
    g = torch.Generator().manual_seed(0)
    n, pick = torch.randn(200_000, generator=g), torch.rand(200_000, generator=g)
    base = logit_normal_t(n, 0.0, 1.6)
    torch.testing.assert_close(logit_normal_t(n, 0.0, 1.6, mix=(0.0, 1.0, 1.0), pick=pick), base)  # off: unchanged
    torch.testing.assert_close(logit_normal_t(n, 0.0, 1.6, mix=(1.0, 1.0, 1.0), pick=pick), logit_normal_t(n, 1.0))
    t = logit_normal_t(n, 0.0, 1.6, mix=(0.3, 1.0, 1.0), pick=pick)
    second = pick < 0.3
    torch.testing.assert_close(t[second], torch.sigmoid(1.0 + n[second]))
    torch.testing.assert_close(t[~second], base[~second])
    # the mixture's share of draws above t = 0.9: 0.3·P(second) + 0.7·P(first), each from its logit-normal
    share = (t > 0.9).float().mean().item()
    normal = torch.distributions.Normal(0.0, 1.0)
    logit = torch.tensor(0.9).logit()
    expected = 0.3 * (1 - normal.cdf(logit - 1.0)) + 0.7 * (1 - normal.cdf(logit / 1.6))
    assert abs(share - expected.item()) < 0.005
    with pytest.raises(ValueError, match="pick"):
        logit_normal_t(n, mix=(0.5, 1.0, 1.0))


def test_time_grid_and_shift():
    torch.testing.assert_close(time_grid(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    shifted = time_grid(4, shift=3.0)
    torch.testing.assert_close(shifted, torch.tensor([0.0, 0.25 / (0.25 + 3 * 0.75), 0.5 / 2.0, 0.75 / 1.5, 1.0]))
    with pytest.raises(ValueError, match="steps must be"):
        time_grid(0)


@pytest.mark.parametrize("method", ["euler", "heun"])
def test_ode_reaches_the_data_distribution(method):
    noise = torch.randn(20_000, 1, generator=torch.Generator().manual_seed(0))
    x = sample_gaussian(noise, 50, method)
    assert abs(x.mean() - MU) < 0.02 and abs(x.std() - SIGMA) < 0.02
    # the exact flow map is x_1 = μ + σ·ε: the error per sample
    assert (x - (MU + SIGMA * noise)).abs().max() < (0.1 if method == "euler" else 3e-3)  # orders: next test


@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_convergence_order(method, order):
    noise = torch.randn(64, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    exact = MU + SIGMA * noise
    errors = [(sample_gaussian(noise, n, method) - exact).abs().max().item() for n in (20, 40, 80)]
    for coarse, fine in zip(errors, errors[1:]):
        assert 2**order * 0.75 < coarse / fine < 2**order * 1.35, errors


def test_sde_has_the_right_marginals():
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(20_000, 1, generator=g)
    x = sample_gaussian(noise, 200, "sde", generator=g)
    assert abs(x.mean() - MU) < 0.03 and abs(x.std() - SIGMA) < 0.03
    assert not torch.allclose(x, sample_gaussian(noise, 200, "euler"), atol=1e-2)  # it is stochastic


def test_cfg_scale_one_is_the_conditional_model():
    x, y = torch.randn(3, 1), torch.tensor([1, 2, 3])
    v = guided_velocity(lambda x, t, y: x * y.view(-1, 1) + t.view(-1, 1), x, 0.3, y, 9, 1.0, guide=True)
    torch.testing.assert_close(v, x * y.view(-1, 1) + 0.3)
    rec = Recorder()
    out = guided_velocity(rec, x, 0.5, y, 9, 4.0, guide=True)
    assert rec.calls == [(0.5, 6, [9, 9, 9, 1, 2, 3])]  # doubled batch [unconditional, conditional]
    torch.testing.assert_close(out, 9 + 4.0 * (y.view(-1, 1).float() - 9))


def recorded_calls(method, steps, interval, skip_uncond=False):
    rec = Recorder()
    sample(rec, torch.zeros(1, 1), torch.tensor([1]), null_label=5, steps=steps, cfg_scale=3.0, interval=interval,
           method=method, skip_uncond=skip_uncond)
    return rec.calls


def test_guidance_interval_euler_is_strict():
    calls = recorded_calls("euler", 10, (0.2, 0.7))
    assert [c[0] for c in calls] == pytest.approx([i / 10 for i in range(10)])
    assert all(c[1] == 2 for c in calls)  # both halves every step by default (the authors' cost)
    x = 0.0
    for i in range(10):  # velocity 5 + 3·(1 − 5) = −7 inside (0.2, 0.7) strictly, 1 (conditional) outside
        x += 0.1 * (-7 if 0.2 < i / 10 < 0.7 else 1)
    out = sample(Recorder(), torch.zeros(1, 1), torch.tensor([1]), null_label=5, steps=10, cfg_scale=3.0,
                 interval=(0.2, 0.7))
    assert out.item() == pytest.approx(x)
    skipped = recorded_calls("euler", 10, (0.2, 0.7), skip_uncond=True)
    assert [c[1] for c in skipped] == [1, 1, 1, 2, 2, 2, 2, 1, 1, 1]


def test_guidance_interval_heun_inclusive_high_and_reused():
    calls = recorded_calls("heun", 10, (0.2, 0.7))
    assert len(calls) == 2 * 10 - 1
    guided = [0.2 < i / 10 <= 0.7 for i in range(10)]  # decided at t_cur, upper bound inclusive
    assert sum(guided) == 5
    # the corrector (at t_next) reuses the decision taken at t_cur: two guided calls per guided step
    per_call = [g for i, g in enumerate(guided) for _ in range(2 if i < 9 else 1)]
    assert [c[1] == 2 for c in calls] == [True] * 19  # both halves evaluated, as the authors do
    out = sample(Recorder(), torch.zeros(1, 1), torch.tensor([1]), null_label=5, steps=10, cfg_scale=3.0,
                 interval=(0.2, 0.7), method="heun")
    assert out.item() == pytest.approx(sum(0.1 * (-7 if g else 1) for g in guided))
    skipped = recorded_calls("heun", 10, (0.2, 0.7), skip_uncond=True)
    assert [c[1] == 2 for c in skipped] == per_call


def test_to_uint8():
    assert to_uint8(torch.tensor([-1.0, 0.0, 1.0, 2.0, -3.0])).tolist() == [0, 128, 255, 255, 0]


# Hand-worked grids where the two interval rules part: the authors' torch.linspace(0, 1 − 1/N, N) in float32 with 1
# appended, then the shift formula t / (t + s·(1 − t)) in float32 (s = 1 included), compared with the bounds in float32.
#   N = 25: t_10 = 0.39999998 < 0.4             → float32 guides step 10 under high = 0.4, exact (10/25 = 0.4) not
#   N = 10: t_4  = 0.39999998 < 0.4             → float32 guides step 4 under high = 0.4
#   N = 15: t_6  = 0.40000004 > 0.4             → float32 guides step 6 above low = 0.4, exact (6/15 = 0.4) not
#   N = 10: t_2 = 0.19999999, t_7 = 0.69999999 → both rules agree at (0.2, 0.7)
@pytest.mark.parametrize("steps,interval,float32_steps,exact_steps", [
    (25, (0.0, 0.4), list(range(1, 11)), list(range(1, 10))),
    (10, (0.0, 0.4), list(range(1, 5)), list(range(1, 4))),
    (15, (0.4, 1.0), list(range(6, 15)), list(range(7, 15))),
    (10, (0.2, 0.7), [3, 4, 5, 6], [3, 4, 5, 6]),
])
def test_interval_rules_on_hand_worked_grids(steps, interval, float32_steps, exact_steps):
    for rule, want in (("float32", float32_steps), ("exact", exact_steps)):
        flags = guided_steps(steps, interval, rule=rule)
        assert [i for i, g in enumerate(flags) if g] == want, rule


def test_sampler_follows_the_float32_rule_by_default():
    def guided_calls(**kw):
        rec = Recorder()
        sample(rec, torch.zeros(1, 1), torch.tensor([1]), null_label=5, steps=25, cfg_scale=3.0,
               interval=(0.0, 0.4), skip_uncond=True, **kw)
        return [i for i, c in enumerate(rec.calls) if c[1] == 2]

    assert guided_calls() == list(range(1, 11))
    assert guided_calls(interval_rule="exact") == list(range(1, 10))
    with pytest.raises(ValueError, match="interval rule"):
        guided_steps(4, (0, 1), rule="float64")
    with pytest.raises(ValueError, match="per-point interval rule"):
        guided_steps(4, (0, 1), rule="aligned")  # a grid rule: step_grid


def test_heun_rule_is_inclusive_at_the_top():
    assert [i for i, g in enumerate(guided_steps(10, (0.2, 0.7), inclusive_high=True)) if g] == [3, 4, 5, 6, 7]
