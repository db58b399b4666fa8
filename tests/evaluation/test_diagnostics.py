"""Patch diagnostics on images with known structure."""
import torch
import torch.nn.functional as F

from dip.evaluation.diagnostics import high_frequency_ratio, plot_spectra, radial_spectrum, seam_score


def smooth_images(n=4, size=64, seed=0):
    """Stationary smooth images (box-filtered noise): no structure at any patch period."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g)
    for _ in range(3):
        x = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    return x


def test_seam_score_sees_patch_offsets():
    x = smooth_images()
    assert abs(seam_score(x, 16)) < 0.1  # smooth across borders: ~0
    offsets = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    seamy = x + F.interpolate(offsets, scale_factor=16, mode="nearest")  # a constant shift per 16×16 patch
    assert seam_score(seamy, 16) > 2
    assert seam_score(seamy, 13) < 0.5  # measured at another period: the 16-pixel seams mostly fall inside


def test_seam_score_of_patch_constant_tiles_is_huge():
    checkerboard = (torch.arange(4)[:, None] + torch.arange(4)[None]) % 2  # 4×4 tiles
    tiles = F.interpolate(checkerboard[None, None].float().expand(2, 3, 4, 4), scale_factor=16, mode="nearest")
    assert seam_score(tiles, 16) > 1e6  # every change sits on a border, none inside
    ramp = torch.linspace(0, 1, 64)[None, None, None].expand(2, 3, 64, 64)  # smooth across borders
    assert abs(seam_score(ramp, 16)) < 1e-5  # equal steps up to float32 rounding of linspace


def test_spectrum_and_high_frequency_ratio():
    noise = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    spectrum = radial_spectrum(noise)
    assert len(spectrum) == 17
    flat = spectrum[1:]
    assert flat.max() / flat.min() < 2  # white noise: flat
    blurred = F.avg_pool2d(noise, 3, stride=1, padding=1)
    assert high_frequency_ratio(blurred, noise) < 0.3
    assert abs(high_frequency_ratio(noise, noise) - 1) < 1e-12


def test_plot(tmp_path):
    noise = torch.randn(2, 3, 32, 32)
    path = plot_spectra({"noise": radial_spectrum(noise), "blurred": radial_spectrum(F.avg_pool2d(noise, 3, 1, 1))},
                        tmp_path / "spectra.png")
    assert path.stat().st_size > 1000
