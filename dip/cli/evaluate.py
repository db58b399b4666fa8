"""Evaluate generated images offline: FID, sFID, Inception Score, precision and recall
(dip/evaluation/statistics.py) plus the patch diagnostics that show what the Detailer head buys — the seam score and
the radially averaged power spectrum, with a PNG of the spectra.

Generated images: a folder of image files, an ADM-layout ``.npz``, or a checkpoint sampled on the fly (class-balanced
labels, no PNGs written; the sampling flags of dip.sample apply, and ``--sweep`` varies them against the same
reference: a cheap FID proxy for guidance scale, interval and steps). Reference: an ImageFolder / shards / ``digits``
(centre-cropped to the samples' size), an ``.npz`` of images (the ADM reference batch, whose stored μ/Σ are then used
for FID and sFID, as the ADM suite does), or a statistics file written by ``--save-ref-stats``.

    python -m dip.evaluate --samples samples/xl16/samples.npz --ref VIRTUAL_imagenet256_labeled.npz \\
        --inception-logits pt_inception-2015-12-05-6726825d.pth --out eval/xl16
    python -m dip.evaluate --ref /data/imagenet/train --ref-count 50000 --image-size 256 --save-ref-stats in256.npz
    python -m dip.evaluate --samples runs/dip/checkpoints/step_0100000.pt --ref in256.npz --num-samples 5000 \\
        --sweep cfg=1.5,2.3,2.9 interval=0.11:0.97,0:1
"""
from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

from ..diffusion.generation import SamplingSettings
from ..diffusion.grid import INTERVAL_RULES, SCHEDULES
from ..diffusion.solvers import METHODS
from ..evaluation.diagnostics import plot_spectra
from ..evaluation.inception import InceptionFeatures
from ..evaluation.monitor import model_stream
from ..evaluation.statistics import (FeatureSet, check_protocol, compare, reference_statistics, save_statistics,
                                     statistics_file)
from ..io.atomic import atomic_write
from ..io.checkpoints import trusted_by_name
from ..io.image_streams import open_images
from ..model.loading import load_model
from ..runtime.distributed import init_distributed
from ..runtime.folders import writable_folder
from .args import (NON_NEGATIVE, POSITIVE, POSITIVE_INT, UNIT, add_sampling_flags, number, run_command,
                   settings_from_args)

AT_LEAST_TWO = number(int, 2)  # a covariance needs two images

SWEEP_KEYS = {"cfg": "cfg_scale", "steps": "steps", "interval": "interval", "shift": "shift", "method": "method",
              "schedule": "schedule", "rule": "interval_rule"}


def sweep_axes(sweep: list) -> list:
    """[[(setting, value), …] per ``key=v1,v2`` item] (keys: cfg, steps, interval low:high, shift, method, schedule,
    rule), every value checked against the domain of its option (as the flags are) before any work."""
    axes = []
    for item in sweep:
        key, _, values = item.partition("=")
        if key not in SWEEP_KEYS or not values:
            raise ValueError(f"--sweep items are key=v1,v2,… with key in {', '.join(SWEEP_KEYS)}; got {item!r}")
        parse = {"steps": POSITIVE_INT, "cfg": NON_NEGATIVE, "shift": POSITIVE, "interval": interval_value,
                 "method": partial(one_of, METHODS), "schedule": partial(one_of, SCHEDULES),
                 "rule": partial(one_of, INTERVAL_RULES)}[key]
        axis = []
        for value in values.split(","):
            try:
                axis.append((SWEEP_KEYS[key], parse(value)))
            except (argparse.ArgumentTypeError, ValueError) as err:
                raise ValueError(f"--sweep {key}={value}: {err}") from None
        axes.append(axis)
    return axes


def sweep_settings(base: SamplingSettings, sweep: list) -> list:
    """The cartesian product of the ``sweep`` axes over ``base``."""
    return [replace(base, **dict(combo)) for combo in itertools.product(*sweep_axes(sweep))] or [base]


def interval_value(text: str) -> tuple:
    """``low:high`` with 0 ≤ low ≤ high ≤ 1 (a reversed pair would silently disable guidance)."""
    parts = text.split(":")
    if len(parts) != 2:
        raise ValueError("expected low:high")
    low, high = (UNIT(p) for p in parts)
    if low > high:
        raise ValueError(f"low must be ≤ high, got {low:g}:{high:g}")
    return low, high


def one_of(choices: tuple, value: str) -> str:
    """``value`` if it is one of ``choices``, else a ValueError listing them."""
    if value not in choices:
        raise ValueError(f"expected one of {', '.join(choices)}")
    return value


def print_table(rows: list) -> None:
    names = ["fid", "sfid", "inception_score", "precision", "recall", "high_frequency_ratio"]
    head = f"{'setting':<44}" + "".join(f"{n[:10]:>11}" for n in names) + f"{'seam':>8}"
    print(head)
    for label, metrics in rows:
        cells = "".join(f"{'—' if metrics.get(n, {}).get('value') is None else format(metrics[n]['value'], '.4g'):>11}"
                        for n in names)
        print(f"{label[:44]:<44}{cells}{metrics['seam_score']['generated']:>8.3f}")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dip-evaluate", description=__doc__.split("\n\n")[0])
    a = p.add_argument
    a("--samples", help="generated images: a folder, an ADM .npz, or a checkpoint to sample from")
    a("--ref", required=True, help="reference: an ImageFolder / shards / 'digits', an .npz of images, or a stats .npz")
    a("--ref-count", type=POSITIVE_INT, help="use a seeded random subset of this many reference images")
    a("--save-ref-stats", help="write the reference statistics here (reuse them with --ref)")
    a("--image-size", type=POSITIVE_INT, help="reference crop size when there are no samples (default: the samples')")
    a("--patch-size", type=POSITIVE_INT, help="patch period of the seam score (default: the checkpoint's, else 16)")
    a("--inception-logits", help="pt_inception-2015-12-05 weights file: enables the Inception Score")
    a("--num-samples", type=AT_LEAST_TWO, default=50_000, help="images drawn from a checkpoint (or read from a source)")
    a("--sample-batch", type=POSITIVE_INT, default=64, help="generation batch")
    a("--batch", type=POSITIVE_INT, default=100, help="Inception batch")
    a("--sweep", nargs="+", default=[],
      help="key=v1,v2 … (cfg, steps, interval low:high, shift, method, schedule, rule)")
    a("--out", default="eval", help="folder for metrics.json and spectra.png")
    add_sampling_flags(p)
    return p


def _generated_streams(args, device):
    """[(label, settings or None, ImageStream)] and the patch size: one per sweep setting for a checkpoint."""
    path = Path(args.samples)
    if path.is_file() and path.suffix != ".npz":
        model = load_model(str(path), args.model, args.which, args.kernels, device,
                           trusted_by_name(args.trust_pickle, path))
        base = settings_from_args(args, model, device)
        streams = []
        for s in sweep_settings(base, args.sweep):
            stream = model_stream(model, args.num_samples, s, args.sample_batch, f"{path} sampled: {s.describe()}")
            label = f"cfg {s.cfg_scale} int {s.interval} N {s.steps} {s.method} {s.schedule} {s.interval_rule}"
            streams.append((label, s, stream))
        return streams, args.patch_size or model.patch_size
    stream = open_images(args.samples, None, args.num_samples)
    return [(str(path), None, stream)], args.patch_size or 16


def main(argv=None) -> dict:
    """``python -m dip.evaluate``: the metrics report (also written as metrics.json)."""
    return run_command(parser(), run_evaluation, argv)


def _check_sources(args) -> None:
    """--samples and --ref exist (named by their option) and --out can be written, before any network is loaded."""
    expected = {"--samples": "a checkpoint, an .npz of images or a folder of images",
                "--ref": "'digits', an image or dataset folder, an .npz of images or a stats .npz"}
    for option, spec in (("--samples", args.samples), ("--ref", args.ref)):
        if spec and spec != "digits" and not Path(spec).exists():
            raise FileNotFoundError(f"{option} {spec} not found (expected {expected[option]})")
    if args.samples:
        writable_folder(args.out, "--out")
    sweep_axes(args.sweep)
    if args.sweep and not (args.samples and Path(args.samples).is_file() and Path(args.samples).suffix != ".npz"):
        raise ValueError("--sweep needs a checkpoint in --samples")


def run_evaluation(args) -> dict:
    """The metrics of every generated source against the reference (module doc); writes metrics.json."""
    _check_sources(args)
    _, _, device = init_distributed(args.device)
    streams, patch = _generated_streams(args, device) if args.samples else ([], args.patch_size or 16)
    size = streams[0][2].size if streams else args.image_size
    ref = statistics_file(args.ref)
    if ref is not None and size is not None:
        check_protocol({"image_size": size}, ref)  # before any sample goes through Inception
    network = InceptionFeatures(args.inception_logits, device=device)
    if ref is None:
        ref = reference_statistics(args.ref, size, network, patch, batch=args.batch, limit=args.ref_count,
                                   seed=args.seed)
    if int(ref.get("count", 2)) < 2:
        raise ValueError(f"--ref {args.ref} holds {int(ref['count'])} image(s): a covariance needs at least 2")
    if args.save_ref_stats:
        print(f"wrote {save_statistics(ref, args.save_ref_stats)}")
    out = Path(args.out)
    report = {"reference": {"source": args.ref, "images": int(ref.get("count", 0))}, "runs": []}
    spectra = {"reference": ref["spectrum"]} if "spectrum" in ref else {}
    for label, settings, stream in streams:
        start = time.time()
        gen = FeatureSet(network, patch).read(stream, args.batch, "generated").statistics()
        metrics = compare(gen, ref, device)
        if not metrics["fid"]["full_rank"]:
            print(f"note: FID from {gen['count']} generated and {int(ref.get('count', 0))} reference images, fewer "
                  f"than the {gen['mu'].numel()} features on a side: a proxy to compare settings, not a score")
        report["runs"].append({"source": stream.describe, "sampling": settings.describe() if settings else None,
                               "seconds": round(time.time() - start, 1), "metrics": metrics})
        spectra[label] = gen["spectrum"]
    if streams:
        print_table([(label, run["metrics"]) for (label, _, _), run in zip(streams, report["runs"])])
        out.mkdir(parents=True, exist_ok=True)
        if len(spectra) > 1:
            report["spectra_png"] = str(plot_spectra(spectra, out / "spectra.png"))
        atomic_write(out / "metrics.json", lambda tmp: Path(tmp).write_text(json.dumps(report, indent=2)))
        print(f"wrote {out / 'metrics.json'}")
    return report


if __name__ == "__main__":
    main()
