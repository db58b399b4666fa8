"""Sample-quality metrics on Inception features, with the ADM evaluation suite's definitions (Dhariwal & Nichol
2021, the suite the DiP paper reports with). All maths in float64.

- Fréchet distance (FID, Heusel et al. 2017; sFID on spatial features, Nash et al. 2021):
  ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½, with tr (Σ₁Σ₂)^½ = tr (Σ₁^½ Σ₂ Σ₁^½)^½ = ‖Σ₁^½ Σ₂^½‖_* (the sum of
  singular values: exact to rounding even for the rank-deficient covariances of small sets, where square roots of
  eigenvalues would amplify rounding noise to ~√ε);
- Inception Score (Salimans et al. 2016): exp E_x KL(p(y|x) ‖ p(y)) per split of 5,000 images, averaged;
- precision / recall (Kynkäänniemi et al. 2019): k-NN manifolds (k = 3) in feature space; precision is the share
  of generated features inside the reference manifold, recall the share of reference features inside the
  generated one (squared Euclidean distances, a point is inside when within some ball's radius).
"""
from __future__ import annotations

import torch

IS_SPLIT_SIZE = 5000
NEIGHBOURS = 3


class RunningMoments:
    """Mean and unbiased covariance of feature rows accumulated batch by batch (float64 sums)."""

    def __init__(self):
        self.count = 0
        self.total = None
        self.outer = None

    def update(self, features: torch.Tensor) -> None:
        f = features.double()
        if self.total is None:
            self.total, self.outer = f.sum(0), f.T @ f
        else:
            self.total += f.sum(0)
            self.outer += f.T @ f
        self.count += f.shape[0]

    def statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ (d,), Σ (d, d)) on the CPU; needs at least two rows."""
        if self.count < 2:
            raise ValueError(f"a covariance needs at least 2 images, got {self.count}")
        mu = self.total / self.count
        sigma = (self.outer - self.count * torch.outer(mu, mu)) / (self.count - 1)
        return mu.cpu(), sigma.cpu()


def feature_statistics(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(μ, Σ) of (N, d) features: the mean and the unbiased covariance (numpy.cov's convention)."""
    moments = RunningMoments()
    moments.update(features)
    return moments.statistics()


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix; eigenvalues within rounding of 0 (|λ| ≤ d·ε·λ_max) count as 0."""
    values, vectors = torch.linalg.eigh(matrix)
    noise = values.abs().max() * matrix.shape[0] * torch.finfo(values.dtype).eps
    return (vectors * torch.where(values > noise, values, 0).sqrt()) @ vectors.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂) (module docstring)."""
    mu1, mu2, sigma1, sigma2 = (torch.as_tensor(a).double().cpu() for a in (mu1, mu2, sigma1, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics of different sizes: μ {tuple(mu1.shape)} vs {tuple(mu2.shape)}, "
                         f"Σ {tuple(sigma1.shape)} vs {tuple(sigma2.shape)}")
    trace_sqrt = torch.linalg.svdvals(_psd_sqrt(sigma1) @ _psd_sqrt(sigma2)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt)


def inception_score(probs: torch.Tensor, split_size: int = IS_SPLIT_SIZE) -> float:
    """Mean over consecutive splits of ``split_size`` rows of exp(mean KL(p(y|x) ‖ p(y))) for softmax rows (N, K)."""
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"probs must be (N, classes) with N ≥ 1, got {tuple(probs.shape)}")
    p = probs.double()
    scores = []
    for part in p.split(split_size):
        marginal = part.mean(0, keepdim=True)
        kl = torch.xlogy(part, part) - torch.xlogy(part, marginal)  # 0·log 0 = 0
        scores.append(kl.sum(1).mean().exp())
    return float(torch.stack(scores).mean())


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) squared Euclidean distances, ‖a‖² − 2ab + ‖b‖² clamped at 0."""
    return ((a * a).sum(1, keepdim=True) - 2 * a @ b.T + (b * b).sum(1)[None]).clamp_min(0)


def manifold_radii(features: torch.Tensor, k: int = NEIGHBOURS, block: int = 10_000) -> torch.Tensor:
    """Squared distance of each row to its k-th nearest other row (N,), blockwise in memory."""
    if features.shape[0] <= k:
        raise ValueError(f"a {k}-NN manifold needs more than {k} points, got {features.shape[0]}")
    f = features.double()
    radii = []
    for rows in f.split(block):
        nearest = torch.cat([_squared_distances(rows, cols).topk(min(k + 1, cols.shape[0]), dim=1, largest=False)[0]
                             for cols in f.split(block)], dim=1)
        radii.append(nearest.topk(k + 1, dim=1, largest=False)[0][:, k])  # index 0 is the point itself
    return torch.cat(radii)


def inside_manifold(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                    block: int = 10_000) -> torch.Tensor:
    """(N,) bool: each point within radiusᵢ of some centreᵢ."""
    p, c = points.double(), centres.double()
    out = []
    for rows in p.split(block):
        hit = torch.zeros(rows.shape[0], dtype=torch.bool, device=rows.device)
        for cols, r in zip(c.split(block), radii.split(block)):
            hit |= (_squared_distances(rows, cols) <= r[None]).any(1)
        out.append(hit)
    return torch.cat(out)


def precision_recall(reference: torch.Tensor, generated: torch.Tensor, k: int = NEIGHBOURS) -> tuple[float, float]:
    """(precision, recall) of generated vs reference features (N, d) with k-NN manifolds."""
    precision = inside_manifold(generated, reference, manifold_radii(reference, k)).double().mean()
    recall = inside_manifold(reference, generated, manifold_radii(generated, k)).double().mean()
    return float(precision), float(recall)
