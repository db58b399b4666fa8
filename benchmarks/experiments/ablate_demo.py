"""Where the CPU demo's grain comes from: train DiP-T/8 variants for the same number of steps with the same seed and
measure each one's samples against the real digits (docs/model.md §8).

Each training row is the user's own command, ``python -m dip.train --steps N --seed S …`` with one change (head
width, DiT-only head, lr decay, EMA decay, the t distribution); sampling rows reuse a trained model with one change
to the sampler (steps, solver, guidance interval or scale, raw weights instead of EMA). Every row draws the same 500
class-balanced samples (per-sample seeds) and reports the digit accuracy of the demo's classifier, FID, precision,
recall, the high-frequency energy ratio and the seam score against all 1,797 real digits, plus the real digits'
own seam score. Finished runs are reused (``--resume auto``), so an interrupted ablation continues.

    python benchmarks/experiments/ablate_demo.py --out runs/ablation              # every row, ~2 hours on a 2-core CPU
    python benchmarks/experiments/ablate_demo.py --rows mix-50 dit-only width-32 --steps 500
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from benchmarks.experiments.digit_quality import digits_reference, sample_quality
from dip.diffusion.generation import SamplingSettings
from dip.evaluation.inception import InceptionFeatures
from dip.model.loading import load_model
from dip.model.presets import recipe

RECIPE = recipe("DiP-T/8")
SAMPLER = SamplingSettings(steps=RECIPE.sample_steps, cfg_scale=RECIPE.cfg_scale, interval=RECIPE.guidance_interval,
                           method="euler", shift=1.0, skip_uncond=False, seed=0, precision="fp32", graph=False)

# name: (extra dip.train flags, sampler changes, weights). Every row spells out what it changes against the recipe
# of the time it was measured at: head width 16 and no t mixture (NARROW), t std 1.0 for the rows that study the
# sampler and the EMA (PREVIOUS, where the grain was found); the README table lists every measured row.
NARROW = ("--head-width", "16", "--t-mix", "0", "0", "1")
PREVIOUS = ("--t-std", "1.0", *NARROW)
MIX = ("--t-mix", "0.5", "1", "1")
ROWS = {
    "previous-recipe": (PREVIOUS, {}, "ema"),
    "raw-weights": (PREVIOUS, {}, "raw"),
    "euler-100": (PREVIOUS, {"steps": 100}, "ema"),
    "heun-50": (PREVIOUS, {"steps": 50, "method": "heun"}, "ema"),
    "no-guidance-last-10%": (PREVIOUS, {"interval": (0.0, 0.9)}, "ema"),
    "cfg-1": (PREVIOUS, {"cfg_scale": 1.0}, "ema"),
    "t-mean-1": (("--t-mean", "1.0", "--t-std", "1.0", *NARROW), {}, "ema"),
    "t-std-1.6": (NARROW, {}, "ema"),
    "dit-only": (("--head", "dit", "--t-mix", "0", "0", "1"), {}, "ema"),
    "dit-only-previous": (("--head", "dit", "--t-std", "1.0", "--t-mix", "0", "0", "1"), {}, "ema"),
    "mix-30": (("--head-width", "16", "--t-mix", "0.3", "1", "1"), {}, "ema"),
    "mix-50": (("--head-width", "16", *MIX), {}, "ema"),
    "width-32": (("--head-width", "32", *MIX), {}, "ema"),
    "width-64": (("--head-width", "64", *MIX), {}, "ema"),
    "lr-decay-0.3": (("--lr-decay", "0.3"), {}, "ema"),
    "ema-0.9999": (("--ema-decay", "0.9999"), {}, "ema"),
}
STEPS = 2800  # the table's budget per row (the recipe's own is 1,800: `--steps 1800` for the recipe row)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--rows", nargs="+", default=list(ROWS), help=f"some of {list(ROWS)}, or 'key=flags' for a new "
                                                                 "training row, e.g. 'w32-decay=--head-width 32 "
                                                                 "--lr-decay 0.3'")
    p.add_argument("--steps", type=int, default=STEPS, help="training steps of every row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-samples", type=int, default=500)
    return p


def parse_row(spec: str) -> tuple:
    """A row name of ROWS, or 'name=--flag value …' (a training row with those dip.train flags)."""
    if spec in ROWS:
        return spec, ROWS[spec]
    name, sep, flags = spec.partition("=")
    if not sep:
        raise ValueError(f"unknown row {spec!r}: expected one of {list(ROWS)} or 'name=--flags …'")
    return name, (tuple(flags.split()), {}, "ema")


def train(out: Path, flags: tuple, steps: int, seed: int) -> Path:
    """Train (or finish training) one variant with the user's command; the final checkpoint's path."""
    # one folder per (flags, steps): a finished longer run is never resumed as a shorter one
    suffix = "" if steps == STEPS else f"_{steps}steps"
    run = out / ("train" + "".join(f"_{f.lstrip('-')}" for f in flags) + suffix)
    command = [sys.executable, "-m", "dip.train", "--out", str(run), "--steps", str(steps), "--seed", str(seed),
               "--final-samples", "8", *flags]
    print(" ".join(command[1:]), flush=True)
    subprocess.run(command, check=True)
    return run / "checkpoints" / f"step_{steps:08d}.pt"


def table(results: dict) -> str:
    """The markdown table of the README."""
    lines = ["| row | change | accuracy | FID | precision | recall | HF ratio | seam (real) |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['change']} | {r['accuracy']:.1%} | {r['fid']:.1f} | {r['precision']:.2f} | "
                     f"{r['recall']:.2f} | {r['hf_ratio']:.2f} | {r['seam']:.3f} ({r['seam_real']:.3f}) |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    network = InceptionFeatures()
    reference = digits_reference(out, network, RECIPE.image_size)  # computed once per ablation folder
    results_path = out / "ablation.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name, (flags, sampler, which) in map(parse_row, args.rows):
        started = time.time()
        ckpt = train(out, flags, args.steps, args.seed)
        settings = replace(SAMPLER, **sampler)
        model = load_model(str(ckpt), None, which, "torch", torch.device("cpu"))
        row = sample_quality(model, settings, reference, network, args.num_samples)
        change = " ".join(flags) or ", ".join(f"{k} {v}" for k, v in sampler.items()) or (
            "raw weights" if which == "raw" else "the recipe")
        results[name] = {"change": change, "train_flags": list(flags), "sampling": settings.describe(),
                         "weights": which, "steps": args.steps, "seed": args.seed, "samples": args.num_samples,
                         **row, "seconds": round(time.time() - started, 1)}
        results_path.write_text(json.dumps(results, indent=2))
        print(table({name: results[name]}).splitlines()[-1], flush=True)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
