"""Patch diagnostics: what the Detailer head buys.

- ``seam_score``: mean absolute difference between neighbouring pixels that straddle a patch border, over the
  same quantity inside patches (rows and columns pooled), minus 1: ~0 for images without a patch-period
  structure, positive where the patch grid shows (large-patch models without a detailer: visible seams), very
  large for patch-constant tiles.
- ``radial_spectrum``: radially averaged power spectrum (mean |FFT|² per integer radius of the centred 2-D FFT,
  channels averaged), and ``high_frequency_ratio``: the energy above a cut-off radius of generated images over
  that of reference images (below 1: blurrier than the data).
- ``plot_spectra``: a PNG of log10 spectra (dip/io/plots.py).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..io.plots import line_plot


def _as_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 or float (N, C, H, W) → float64 in the images' own scale."""
    return images.double()


def seam_terms(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[Σ border differences, their count, Σ in-patch differences, their count] of (N, C, H, W) images: the sums
    behind ``seam_score``, additive over batches."""
    x = _as_float(images)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs()  # between columns j and j+1
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs()
    col_border = (torch.arange(x.shape[-1] - 1, device=x.device) + 1) % patch_size == 0
    row_border = (torch.arange(x.shape[-2] - 1, device=x.device) + 1) % patch_size == 0
    if not (col_border.any() or row_border.any()):
        raise ValueError(f"images of {x.shape[-2]}×{x.shape[-1]} have no border of {patch_size}-pixel patches")
    border = dx[..., col_border].sum() + dy[..., row_border, :].sum()
    inside = dx[..., ~col_border].sum() + dy[..., ~row_border, :].sum()
    per_image = x.shape[0] * x.shape[1]
    n_border = per_image * (int(col_border.sum()) * x.shape[-2] + int(row_border.sum()) * x.shape[-1])
    n_inside = per_image * (int((~col_border).sum()) * x.shape[-2] + int((~row_border).sum()) * x.shape[-1])
    return torch.stack([border.cpu(), torch.tensor(float(n_border), dtype=torch.float64), inside.cpu(),
                        torch.tensor(float(n_inside), dtype=torch.float64)])


def seam_from_terms(terms: torch.Tensor) -> float:
    """Mean border difference over mean in-patch difference, minus 1, from (possibly summed) ``seam_terms``."""
    border, n_border, inside, n_inside = terms.tolist()
    return (border / n_border) / max(inside / max(n_inside, 1.0), 1e-12) - 1


def seam_score(images: torch.Tensor, patch_size: int) -> float:
    """Border-crossing over in-patch neighbour differences, minus 1, for (N, C, H, W) images (0 = no seams)."""
    return seam_from_terms(seam_terms(images, patch_size))


def radial_spectrum(images: torch.Tensor) -> torch.Tensor:
    """Mean power per integer radius (0 … min(H, W)/2) of the centred FFT, averaged over images and channels."""
    x = _as_float(images)
    x = x - x.mean(dim=(-2, -1), keepdim=True)
    power = torch.fft.fftshift(torch.fft.fft2(x).abs().square(), dim=(-2, -1)).mean(dim=(0, 1)).cpu()  # (H, W)
    H, W = power.shape
    yy, xx = torch.meshgrid(torch.arange(H) - H // 2, torch.arange(W) - W // 2, indexing="ij")
    radius = (yy.double().square() + xx.double().square()).sqrt().round().long()
    keep = radius <= min(H, W) // 2
    sums = torch.zeros(int(radius[keep].max()) + 1, dtype=torch.float64).index_add_(0, radius[keep], power[keep])
    counts = torch.zeros_like(sums).index_add_(0, radius[keep], torch.ones_like(power[keep]))
    return sums / counts


def high_frequency_ratio(generated: torch.Tensor, reference: torch.Tensor, cutoff: float = 0.5) -> float:
    """Spectral energy above ``cutoff`` × the Nyquist radius: generated over reference (same image size)."""
    return spectrum_ratio(radial_spectrum(generated), radial_spectrum(reference), cutoff)


def spectrum_ratio(generated: torch.Tensor, reference: torch.Tensor, cutoff: float = 0.5) -> float:
    """``high_frequency_ratio`` from two radial spectra."""
    if len(generated) != len(reference):
        raise ValueError(f"generated and reference images must have the same size, got spectra of {len(generated)} "
                         f"and {len(reference)} radii")
    start = int(cutoff * (len(generated) - 1))
    return float(generated[start:].sum() / reference[start:].sum().clamp_min(1e-30))


def plot_spectra(spectra: dict, path, size=(830, 400)) -> Path:
    """Write a PNG of log10 radial spectra, one coloured line per entry of ``spectra`` (label → spectrum)."""
    series = {label: (list(range(1, len(v))), v[1:].clamp_min(1e-30).tolist()) for label, v in spectra.items()}
    return line_plot(series, path, xlabel="radius (low → high frequency)", ylabel="power", log_y=True, size=size)
