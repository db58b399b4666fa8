"""The paper's Figure 3 as a script: overfit one real image with the DiT-only head and with the Patch Detailer Head
for the same number of steps, sample it back, and compare (PSNR, seam score, high-frequency energy ratio,
side-by-side PNG).

The width keeps the paper's ratio D / 3P² = 1.5, so the DiT-only head (Linear D → 3P²) is not rank-limited by
construction; both models share everything else (unconditional, same depth, optimizer, steps, noise).

    python benchmarks/experiments/overfit_single_image.py       # scikit-image's astronaut at 64², 1,400 steps each
    python benchmarks/experiments/overfit_single_image.py --size 128 --steps 5000 --out runs/figure3
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from dip import create_model
from dip.diffusion.flow import flow_loss, interpolate, logit_normal_t
from dip.diffusion.solvers import sample
from dip.evaluation.diagnostics import high_frequency_ratio, seam_score
from dip.io.datasets import center_crop
from dip.io.image_writers import grid
from dip.training.step import build_optimizer, train_step


def astronaut(size: int) -> torch.Tensor:
    """scikit-image's astronaut, ADM centre-cropped to size², as a (1, 3, size, size) tensor in [-1, 1]."""
    try:
        from skimage import data
    except ImportError:
        raise ImportError("the astronaut image ships with scikit-image: pip install -e '.[demo]'") from None
    arr = center_crop(Image.fromarray(data.astronaut()), size)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)[None].float() / 127.5 - 1


def build(head: str, size: int, patch: int, depth: int):
    """An unconditional DiP with D = 1.5 · 3P² (heads of 72, or of 3P²/… when that does not divide) and the paper's
    Detailer head generalised to P (docs/model.md §3: base width 64, min(4, log2 P) stages — not the CPU demo's
    narrow head, whose 64-wide bottleneck would be narrower than a patch's 3P² values)."""
    hidden = int(1.5 * 3 * patch * patch)
    heads = max(1, hidden // 72) if hidden % 72 == 0 else max(1, hidden // 64)
    return create_model("DiP-T/8", image_size=size, patch_size=patch, hidden_size=hidden, num_heads=heads,
                        depth=depth, num_classes=0, head=head, head_base_width=64, kernels="torch")


def train(model, image, *, minutes: float, steps: int | None, batch: int, lr: float, seed: int) -> int:
    """Overfit ``image`` with the rectified-flow loss for ``steps`` steps or ``minutes`` through dip.train's step
    (dip/training/step.py; no EMA); returns the steps done."""
    torch.manual_seed(seed)
    opt = build_optimizer(model.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0,
                          device=next(model.parameters()).device)
    x = image.expand(batch, -1, -1, -1)

    def loss_fn(b):
        x, eps, t = b
        return flow_loss(model(interpolate(x, eps, t), t), x, eps)

    start, step = time.time(), 0
    bar = tqdm(total=steps, desc="overfit", unit="step", dynamic_ncols=True)
    while (steps is None or step < steps) and (steps is not None or time.time() - start < 60 * minutes):
        eps = torch.randn_like(x)
        t = logit_normal_t(torch.randn(batch))
        loss = train_step(model, opt, None, [(x, eps, t)], loss_fn).loss
        step += 1
        bar.update(1)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    return step


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = (a.clamp(-1, 1) - b).square().mean().item()
    return 10 * math.log10(4 / max(mse, 1e-12))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=64)
    p.add_argument("--patch", type=int, default=8)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--steps", type=int, default=1400, help="training steps of each model (the same for both; the "
                                                           "default fits 15 minutes on a 2-core CPU)")
    p.add_argument("--minutes", type=float, default=None, help="a time budget per model instead of --steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--sample-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/figure3")
    p.add_argument("--heads", nargs="+", default=["dit", "detailer"], choices=["dit", "detailer"],
                   help="heads to train in this process (run one per process to use one core each: results and "
                        "samples are kept in --out and the figure is drawn once both exist)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    image = astronaut(args.size)
    noise = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(args.seed + 1))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for head in args.heads:
        torch.manual_seed(args.seed)
        model = build(head, args.size, args.patch, args.depth)
        done = train(model, image, minutes=args.minutes, steps=None if args.minutes else args.steps,
                     batch=args.batch, lr=args.lr, seed=args.seed)
        model.eval()
        with torch.no_grad():
            out = sample(model, noise, torch.zeros(1, dtype=torch.long), null_label=0, steps=args.sample_steps)
        result = {"steps": done, "psnr_db": psnr(out, image), "seam_score": seam_score(out, args.patch),
                  "high_frequency_ratio": high_frequency_ratio(out, image),
                  "parameters": sum(p.numel() for p in model.parameters()), "args": vars(args)}
        torch.save(out, out_dir / f"{head}.pt")
        (out_dir / f"{head}.json").write_text(json.dumps(result, indent=2))
        print(head, json.dumps(result))
    return draw_figure(out_dir, image, args.patch)


def draw_figure(out_dir: Path, image: torch.Tensor, patch: int) -> dict:
    """figure3.png (original | DiT-only | DiP) and figure3.json once both heads' samples are in ``out_dir``."""
    if not all((out_dir / f"{head}.pt").is_file() for head in ("dit", "detailer")):
        return {}
    results = {head: json.loads((out_dir / f"{head}.json").read_text()) for head in ("dit", "detailer")}
    results["reference"] = {"seam_score": seam_score(image, patch)}
    panels = [image] + [torch.load(out_dir / f"{head}.pt").clamp(-1, 1) for head in ("dit", "detailer")]
    picture = Image.fromarray(grid(torch.cat(panels), nrow=3))
    scale = max(1, 512 // image.shape[-1])
    picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST).save(out_dir / "figure3.png")
    (out_dir / "figure3.json").write_text(json.dumps({"results": results}, indent=2))
    print(f"wrote {out_dir / 'figure3.png'} (original | DiT-only | DiP) and figure3.json")
    return results


if __name__ == "__main__":
    main()
