"""dip.metrics against closed forms and constructed answers (issue 7 tests)."""
import math

import pytest
import torch

from dip.evaluation.metrics import (RunningMoments, feature_statistics, frechet_distance, inception_score,
                                     manifold_radii, precision_recall)


def rotation(d, seed=0):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


def test_frechet_distance_matches_the_closed_form_for_commuting_gaussians():
    d = 12
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(d, generator=g, dtype=torch.float64) + 0.1, torch.rand(d, generator=g, dtype=torch.float64)
    b[:3] = 0  # a rank-deficient covariance too
    q = rotation(d)
    mu1, mu2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    expected = float((mu1 - mu2).square().sum() + (a.sqrt() - b.sqrt()).square().sum())
    got = frechet_distance(mu1, q @ torch.diag(a) @ q.T, mu2, q @ torch.diag(b) @ q.T)
    assert got == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_frechet_distance_of_non_commuting_covariances_in_two_dimensions():
    # 2×2: tr √M = √(tr M + 2√det M) for PSD M = Σ₁Σ₂ (its eigenvalues are real and non-negative)
    s1 = torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    s2 = torch.tensor([[1.0, -0.4], [-0.4, 0.8]], dtype=torch.float64)
    m = s1 @ s2
    trace_sqrt = math.sqrt(float(m.trace()) + 2 * math.sqrt(float(torch.linalg.det(m))))
    expected = float(s1.trace() + s2.trace()) - 2 * trace_sqrt
    assert frechet_distance(torch.zeros(2), s1, torch.zeros(2), s2) == pytest.approx(expected, rel=1e-12)


def test_identical_feature_sets_give_zero():
    f = torch.randn(40, 64, generator=torch.Generator().manual_seed(0))  # fewer rows than dimensions: rank 39
    mu, sigma = feature_statistics(f)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-9


def test_running_moments_equal_numpy_cov_over_batches():
    f = torch.randn(50, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 3
    moments = RunningMoments()
    for part in f.split(7):
        moments.update(part)
    mu, sigma = moments.statistics()
    torch.testing.assert_close(mu, f.mean(0))
    torch.testing.assert_close(sigma, torch.cov(f.T))  # unbiased, numpy's convention


def test_inception_score_limits():
    K = 10
    confident_uniform = torch.eye(K).repeat(30, 1)  # every class equally often, each prediction certain
    assert inception_score(confident_uniform) == pytest.approx(K, rel=1e-12)
    constant = torch.softmax(torch.randn(K), 0).expand(300, K)
    assert inception_score(constant) == pytest.approx(1.0, rel=1e-12)
    # splits of 5,000 rows: two halves each certain about one class score 1 each
    halves = torch.cat([torch.eye(K)[:1].expand(5000, K), torch.eye(K)[1:2].expand(5000, K)])
    assert inception_score(halves) == pytest.approx(1.0)
    assert inception_score(halves, split_size=10_000) == pytest.approx(2.0)


def test_precision_recall_on_separated_clusters():
    g = torch.Generator().manual_seed(0)
    cube = lambda n, offset: torch.rand(n, 4, generator=g, dtype=torch.float64) + offset  # noqa: E731
    reference = torch.cat([cube(50, 0.0), cube(50, 50.0)])  # clusters A and B
    generated = torch.cat([reference[:50] + 1e-6, cube(50, 100.0)])  # A (copied) and a new cluster C
    precision, recall = precision_recall(reference, generated)
    assert precision == 0.5  # only the A half lies on the reference manifold
    assert recall == 0.5  # cluster B is not covered by the samples


def test_manifold_radii_are_block_size_independent_and_exclude_the_point_itself():
    f = torch.randn(37, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    full = torch.cdist(f, f).square()
    expected = full.sort(dim=1).values[:, 3]  # column 0 is the point itself
    torch.testing.assert_close(manifold_radii(f, 3, block=10_000), expected)
    torch.testing.assert_close(manifold_radii(f, 3, block=6), expected)
    with pytest.raises(ValueError, match="more than 3 points"):
        manifold_radii(f[:3])
