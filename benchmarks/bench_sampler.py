"""Error against model evaluations (NFE) of every sampler, and the sample quality of the cheap ones (docs/model.md
§7.2; README "Fewer model evaluations").

For one checkpoint (default: the CPU demo model of the README's first command, trained if absent and then reused),
from the same per-sample noise and class-balanced labels: the trajectory error ‖x_N − x_ref‖ / ‖x_ref‖ (mean over
samples) of every method × schedule × steps against dopri5 (rtol 1e-5), without guidance and with CFG (w on the
interval, both halves evaluated inside it); then digit accuracy, FID, high-frequency ratio and seams of 500 samples
for a subset of settings (benchmarks/experiments/digit_quality.py). Native methods: euler, heun, ab2, pc3 on the
uniform and cosine schedules, with guidance also on grids aligned to the interval (``--interval-rule aligned``);
diffusers' DPM-Solver++(2M) and UniPC (their own flow grids) through dip.diffusion.diffusers_pipeline.
NFE counts network calls (each on the doubled batch while guiding): N for euler / ab2 / pc3 / diffusers, 2N − 1 for
heun. Writes sampler.json, sampler_tables.txt (tables), error_cfg.png and error_nocfg.png (log–log) under --out.

    python benchmarks/bench_sampler.py                         # ~25 minutes on a 2-core CPU
    python benchmarks/bench_sampler.py --ckpt run/checkpoints/step_00100000.pt --samples 16 --fid-samples 0
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

from benchmarks.common import environment
from dip.diffusion.dopri5 import dopri5, interval_pieces
from dip.diffusion.generation import SamplingSettings, class_balanced_labels, sample_noise
from dip.diffusion.guidance import guided_velocity
from dip.diffusion.solvers import sample
from dip.io.plots import line_plot
from dip.model.loading import load_model

DEMO = Path("runs/dip/checkpoints/step_00001800.pt")  # where the README's first command leaves its model
STEPS = (4, 6, 8, 10, 15, 20, 25, 50, 100)
# (method, schedule, interval rule): the paper's Euler, then each solver on both schedules; with guidance the
# multistep solvers also run on grids aligned to the interval (docs/model.md §7.2)
NATIVE = [("euler", "uniform", "float32"), ("euler", "cosine", "float32"), ("heun", "uniform", "float32"),
          ("ab2", "uniform", "float32"), ("ab2", "cosine", "float32"), ("pc3", "uniform", "float32"),
          ("pc3", "cosine", "float32"), ("euler", "uniform", "aligned"), ("ab2", "cosine", "aligned"),
          ("pc3", "uniform", "aligned"), ("pc3", "cosine", "aligned")]
DIFFUSERS = {"dpm++2m (diffusers)": ("DPMSolverMultistepScheduler", {"solver_order": 2}),
             "unipc (diffusers)": ("UniPCMultistepScheduler", {"solver_order": 3})}
PLOTTED = ("euler uniform", "heun uniform", "ab2 cosine", "pc3 cosine", "ab2 cosine aligned", "pc3 cosine aligned",
           "dpm++2m (diffusers)", "unipc (diffusers)")  # the PNG's lines; the JSON and tables have every row
QUALITY = ["euler:uniform:100", "euler:uniform:25", "euler:uniform:10", "pc3:cosine:25:aligned",
           "pc3:cosine:15:aligned", "pc3:cosine:10:aligned", "ab2:cosine:25:aligned"]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=str(DEMO), help="checkpoint (default: the demo model, trained when absent)")
    p.add_argument("--out", default="runs/bench_sampler")
    p.add_argument("--samples", type=int, default=64, help="trajectories per setting")
    p.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    p.add_argument("--cfg", type=float, default=2.9)
    p.add_argument("--interval", type=float, nargs=2, default=(0.11, 0.97))
    p.add_argument("--rtol", type=float, default=1e-5, help="dopri5 tolerance of the reference")
    p.add_argument("--fid-samples", type=int, default=500, help="samples per quality row (0: no quality rows)")
    p.add_argument("--quality", nargs="*", default=QUALITY,
                   help="method:schedule:steps[:interval rule] rows measured with CFG")
    p.add_argument("--no-diffusers", action="store_true", help="skip diffusers' schedulers")
    return p


def demo_model(ckpt: str) -> torch.nn.Module:
    """The checkpoint's EMA model; the README's first command is run first when the default is absent."""
    if ckpt == str(DEMO) and not DEMO.is_file():
        print("training the demo model with the README's command (python -m dip.train) …", flush=True)
        subprocess.run([sys.executable, "-m", "dip.train"], check=True)
    model = load_model(ckpt, None, "ema", "torch", torch.device("cpu"))
    model.check_inputs = False
    return model


def relative_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over samples of ‖x − x_ref‖ / ‖x_ref‖."""
    diff = (x - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)
    return float(diff.mean())


def native_run(model, noise, y, guidance: dict, method: str, schedule: str, rule: str, steps: int) -> tuple:
    """(x₁, NFE) of one of dip's solvers."""
    x = sample(model, noise, y, null_label=model.num_classes, steps=steps, method=method, schedule=schedule,
               interval_rule=rule, **guidance)
    return x, 2 * steps - 1 if method == "heun" else steps


def diffusers_run(model, noise, y, guidance: dict, name: str, steps: int) -> tuple:
    """(x₁, NFE) of a diffusers scheduler on its own flow grid, through DiPPipeline."""
    import diffusers

    from dip.diffusion.diffusers_pipeline import DiPPipeline

    cls, options = DIFFUSERS[name]
    scheduler = getattr(diffusers, cls)(use_flow_sigmas=True, prediction_type="flow_prediction", **options)
    pipe = DiPPipeline(transformer=model, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    x = pipe(y, num_inference_steps=steps, guidance_scale=guidance["cfg_scale"],
             guidance_interval=guidance["interval"], latents=noise, output_type="pt").images
    return x, steps


def reference_solution(model, noise, y, guidance: dict, rtol: float) -> tuple:
    """dopri5 from each noise sample alone (its own adaptive steps): (x_ref (B, C, H, W), mean evaluations)."""
    def field_of(b: int):
        def field(x, t, guide):
            return guided_velocity(model, x, t, y[b:b + 1], model.num_classes, guidance["cfg_scale"], guide)
        return field

    pieces = interval_pieces(guidance["interval"], guidance["cfg_scale"] != 1.0)
    return dopri5(field_of, noise, pieces, rtol=rtol, atol=rtol)


def error_rows(model, noise, y, guidance: dict, args) -> tuple:
    """(reference's mean NFE per sample, rows [{method, steps, nfe, error, seconds}])."""
    started = time.time()
    reference, ref_nfe = reference_solution(model, noise, y, guidance, args.rtol)
    print(f"  dopri5 reference: {ref_nfe:.0f} evaluations per sample, {time.time() - started:.0f} s", flush=True)
    guided = guidance["cfg_scale"] != 1.0
    runs = [(f"{m} {g}" + (" aligned" if r == "aligned" else ""),
             lambda s, m=m, g=g, r=r: native_run(model, noise, y, guidance, m, g, r, s))
            for m, g, r in NATIVE if guided or r != "aligned"]  # without guidance the rule changes nothing
    if not args.no_diffusers:
        runs += [(name, lambda s, name=name: diffusers_run(model, noise, y, guidance, name, s)) for name in DIFFUSERS]
    rows = []
    for label, run in runs:
        for steps in args.steps:
            started = time.time()
            x, nfe = run(steps)
            rows.append({"method": label, "steps": steps, "nfe": nfe, "error": relative_error(x, reference),
                         "seconds": round(time.time() - started, 2)})
        print(f"  {label:<22}" + " ".join(f"{r['error']:.1e}" for r in rows[-len(args.steps):]), flush=True)
    return ref_nfe, rows


def quality_rows(model, args, out: Path) -> list:
    """Sample quality (CFG) of the --quality settings, 500 samples each against the real digits."""
    from benchmarks.experiments.digit_quality import digits_reference, sample_quality
    from dip.evaluation.inception import InceptionFeatures

    network = InceptionFeatures()
    reference = digits_reference(out, network, model.image_size)
    base = SamplingSettings(steps=1, cfg_scale=args.cfg, interval=tuple(args.interval))
    rows = []
    for spec in args.quality:
        method, schedule, steps, *rule = spec.split(":")
        started = time.time()
        settings = replace(base, method=method, schedule=schedule, steps=int(steps),
                           interval_rule=rule[0] if rule else "float32")
        rows.append({"setting": spec, **sample_quality(model, settings, reference, network, args.fid_samples),
                     "seconds": round(time.time() - started, 1)})
        print(f"  {spec:<20} FID {rows[-1]['fid']:.1f}  accuracy {rows[-1]['accuracy']:.1%}  "
              f"HF {rows[-1]['hf_ratio']:.2f}  seam {rows[-1]['seam']:.3f}", flush=True)
    return rows


def markdown(result: dict) -> str:
    """The README's tables: relative error per method × steps (NFE in the heading; Heun's is 2N − 1), per guidance
    setting, then the quality rows."""
    parts = []
    for name, block in result["error"].items():
        steps = sorted({r["steps"] for r in block["rows"]})
        methods = list(dict.fromkeys(r["method"] for r in block["rows"]))
        error = {(r["method"], r["steps"]): r["error"] for r in block["rows"]}
        title = {"nocfg": "Without guidance", "cfg": "With guidance"}[name]
        parts += [f"{title} (the dopri5 reference: {block['reference_nfe']:.0f} evaluations per sample):", "",
                  "| method | " + " | ".join(f"N={n}" for n in steps) + " |", "|---" * (len(steps) + 1) + "|"]
        parts += ["| " + m + " | " + " | ".join(f"{error[m, n]:.1e}" if (m, n) in error else "—" for n in steps)
                  + " |" for m in methods]
        parts.append("")
    if result["quality"]:
        parts += ["| setting (CFG) | accuracy | FID | HF ratio | seam (real) |", "|---|---|---|---|---|"]
        parts += [f"| {r['setting']} | {r['accuracy']:.1%} | {r['fid']:.1f} | {r['hf_ratio']:.2f} | "
                  f"{r['seam']:.3f} ({r['seam_real']:.3f}) |" for r in result["quality"]]
    return "\n".join(parts)


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = demo_model(args.ckpt)
    indices = list(range(args.samples))
    y = class_balanced_labels(indices, model.num_classes, "cpu")
    noise = sample_noise(0, indices, (model.in_channels, model.image_size, model.image_size))
    result = {"environment": environment(torch.device("cpu")), "checkpoint": args.ckpt, "samples": args.samples,
              "rtol": args.rtol, "cfg": args.cfg, "interval": list(args.interval), "error": {}, "quality": []}
    for name, guidance in (("nocfg", {"cfg_scale": 1.0, "interval": (0.0, 1.0)}),
                           ("cfg", {"cfg_scale": args.cfg, "interval": tuple(args.interval)})):
        print(f"trajectory error, {name}:", flush=True)
        ref_nfe, rows = error_rows(model, noise, y, guidance, args)
        result["error"][name] = {"reference_nfe": ref_nfe, "rows": rows}
        series = {}
        for r in (r for r in rows if r["method"] in PLOTTED):
            xs, ys = series.setdefault(r["method"], ([], []))
            xs.append(r["nfe"])
            ys.append(r["error"])
        line_plot(series, out / f"error_{name}.png", xlabel="NFE", ylabel="relative error vs dopri5", log_x=True,
                  log_y=True, size=(900, 480))
        (out / "sampler.json").write_text(json.dumps(result, indent=2))
    if args.fid_samples:
        print("sample quality (CFG):", flush=True)
        result["quality"] = quality_rows(model, args, out)
        (out / "sampler.json").write_text(json.dumps(result, indent=2))
    (out / "sampler_tables.txt").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out / 'sampler.json'}, sampler_tables.txt, error_cfg.png and error_nocfg.png in {out}")
    return result


if __name__ == "__main__":
    main()
