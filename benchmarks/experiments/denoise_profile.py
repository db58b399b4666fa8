"""Where a model leaves grain: one-step denoising of real images at each noise level (docs/model.md §8).

For real digits x and fixed noise ε, at each t the model's clean-image estimate x̂ = x_t + (1 − t)·v̂(x_t, t, y)
(x_t = t·x + (1 − t)·ε, t = 1 is data) is compared with x: the RMS error, the high-frequency energy of x̂ over that
of x (above 1: noise left in), and the RMS velocity error |v̂ − (x − ε)| (≈ 1 where the model does not see the
noise at all). A sampler's last steps run at the high-t end of this table.

    python benchmarks/experiments/denoise_profile.py runs/dip/checkpoints/step_00001800.pt [--which raw]
"""
from __future__ import annotations

import argparse
import json

import torch

from dip.diffusion.flow import interpolate, velocity_target
from dip.evaluation.diagnostics import high_frequency_ratio
from dip.io.datasets import open_dataset
from dip.model.loading import load_model

TIMES = (0.3, 0.6, 0.8, 0.9, 0.95, 0.97, 0.99)


def real_digits(size: int, every: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Every ``every``-th real digit in [-1, 1] (N, 3, size, size) and its label."""
    data = open_dataset("digits", size)
    picks = range(0, len(data), every)
    x = torch.stack([torch.as_tensor(data[i][0]).permute(2, 0, 1) for i in picks]).float() / 127.5 - 1
    return x, torch.tensor([int(data[i][1]) for i in picks])


@torch.no_grad()
def profile(model, x: torch.Tensor, y: torch.Tensor, times=TIMES, seed: int = 0) -> list[dict]:
    """One row per t: x̂ RMS error, x̂ high-frequency ratio, velocity RMS error."""
    eps = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    rows = []
    for t in times:
        tt = torch.full((len(x),), t)
        xt = interpolate(x, eps, tt)
        v = model(xt, tt, y).float()
        x_hat = xt + (1 - t) * v
        rows.append({"t": t, "x_hat_rmse": float((x_hat - x).square().mean().sqrt()),
                     "x_hat_hf_ratio": high_frequency_ratio(x_hat, x),
                     "v_rmse": float((v - velocity_target(x, eps)).square().mean().sqrt())})
    return rows


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ckpt")
    p.add_argument("--which", default="ema", choices=["ema", "raw"])
    args = p.parse_args(argv)
    model = load_model(args.ckpt, None, args.which, "torch", torch.device("cpu"))
    x, y = real_digits(model.image_size)
    rows = profile(model, x, y)
    print("t      x̂ RMSE   x̂ HF ratio   v RMSE")
    for r in rows:
        print(f"{r['t']:<6} {r['x_hat_rmse']:.4f}   {r['x_hat_hf_ratio']:>10.2f}   {r['v_rmse']:.3f}")
    print(json.dumps(rows))
    return rows


if __name__ == "__main__":
    main()
