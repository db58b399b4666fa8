"""Evaluate generated images offline: FID, sFID, Inception Score, precision and
recall with the ADM suite's definitions (dip/metrics.py) on the standard Inception network (dip/inception.py), plus
the patch diagnostics that show what the Detailer head buys — the seam score and the radially averaged power
spectrum (dip/diagnostics.py), with a PNG of the spectra.

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

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import atomic_write, trusted_by_name
from .cli_types import command_errors, writable_folder
from .diffusion import INTERVAL_RULES, METHODS, SCHEDULES
from .diagnostics import plot_spectra, radial_spectrum, seam_from_terms, seam_terms, spectrum_ratio
from .image_sources import ImageStream, npz_keys, open_images
from .inception import InceptionFeatures
from .metrics import NEIGHBOURS, RunningMoments, frechet_distance, inception_score, precision_recall
from .distributed import init_distributed
from .sample import SamplingSettings, add_sampling_args, generate, load_model, settings_from_args

ADM_STATS = ("mu", "sigma", "mu_s", "sigma_s")
NETWORK = "inception-2015-12-05 (TF1 bilinear resize to 299, pool3 + mixed_6/conv[:7])"  # the features' protocol
SWEEP_KEYS = {"cfg": "cfg_scale", "steps": "steps", "interval": "interval", "shift": "shift", "method": "method",
              "schedule": "schedule", "rule": "interval_rule"}


class FeatureSet:
    """Inception statistics and patch diagnostics of a stream of uint8 (b, 3, H, W) batches.

    Keeps the pool features (for precision/recall), running moments of the pool and spatial features (FID, sFID),
    the softmax rows when the network has its logits layer (IS), the summed radial spectrum and the seam sums."""

    def __init__(self, network: InceptionFeatures, patch_size: int):
        self.network, self.patch_size = network, patch_size
        self.device = next(network.parameters()).device
        self.pool, self.probs = [], []
        self.pool_moments, self.spatial_moments = RunningMoments(), RunningMoments()
        self.spectrum, self.seam, self.count, self.size = None, torch.zeros(4, dtype=torch.float64), 0, None

    def update(self, images: torch.Tensor) -> None:
        out = self.network(images.to(self.device))
        self.pool.append(out["pool"].cpu())
        self.pool_moments.update(out["pool"])
        self.spatial_moments.update(out["spatial"])
        if "probs" in out:
            self.probs.append(out["probs"].cpu())
        spectrum = radial_spectrum(images) * len(images)
        self.spectrum = spectrum if self.spectrum is None else self.spectrum + spectrum
        self.seam += seam_terms(images, self.patch_size)
        self.count += len(images)
        self.size = images.shape[-1]

    def read(self, stream: ImageStream, batch: int, desc: str) -> "FeatureSet":
        with tqdm(total=stream.count, desc=desc, unit="img") as bar:
            for images in stream.batches(batch):
                self.update(images)
                bar.update(len(images))
        return self

    def statistics(self) -> dict:
        """The ADM names (mu, sigma, mu_s, sigma_s) plus pool, probs, spectrum, seam, count, image_size."""
        mu, sigma = self.pool_moments.statistics()
        mu_s, sigma_s = self.spatial_moments.statistics()
        stats = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s, "pool": torch.cat(self.pool),
                 "spectrum": self.spectrum / self.count, "seam": self.seam, "count": self.count,
                 "image_size": self.size, "patch_size": self.patch_size, "network": NETWORK}
        if self.probs:
            stats["probs"] = torch.cat(self.probs)
        return stats


def save_statistics(stats: dict, path) -> Path:
    """Reference statistics as an .npz (ADM names for μ/Σ; pool features as float32); atomic."""
    path = Path(path)
    arrays = {k: np.asarray(v.numpy() if torch.is_tensor(v) else v) for k, v in stats.items() if k != "probs"}
    arrays["pool"] = arrays["pool"].astype(np.float32)

    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez(f, **arrays)

    atomic_write(path, write)
    return path


def load_statistics(path) -> dict:
    """The statistics in an .npz (ours, or any with the ADM keys mu, sigma, mu_s, sigma_s); image and label arrays
    (arr_0, arr_1 of an ADM reference batch) are not read."""
    with np.load(path) as data:
        missing = [k for k in ADM_STATS if k not in data]
        if missing:
            raise ValueError(f"{path} is not a statistics file: missing {', '.join(missing)} (expected the keys "
                             f"{', '.join(ADM_STATS)}, or images in arr_0)")
        keys = [k for k in data.files if k not in ("arr_0", "arr_1")]
        return {k: torch.from_numpy(data[k]) if data[k].ndim else data[k].item() for k in keys}


def _npz_keys(spec: str) -> list:
    path = Path(spec)
    return npz_keys(path) if path.suffix == ".npz" and path.is_file() else []


def statistics_file(spec: str) -> dict | None:
    """The statistics when ``spec`` is a statistics .npz (no images in it), else None."""
    keys = _npz_keys(spec)
    return load_statistics(spec) if keys and "arr_0" not in keys else None


def reference_statistics(spec: str, size: int | None, network, patch_size: int, *, batch: int, limit: int | None,
                         seed: int) -> dict:
    """Statistics of reference images. An ADM reference batch (images and μ/Σ in one .npz) gives its stored μ/Σ
    precedence, as the ADM suite does."""
    keys = _npz_keys(spec)
    if size is None and not keys:
        raise ValueError(f"the size to centre-crop {spec} to is unknown: pass --image-size (or --samples)")
    stream = open_images(spec, size, limit, seed)
    if size is not None and stream.size != size:
        raise ValueError(f"reference images are {stream.size}², the generated ones {size}²")
    stats = FeatureSet(network, patch_size).read(stream, batch, "reference").statistics()
    if all(k in keys for k in ADM_STATS):
        stats.update({k: v for k, v in load_statistics(spec).items() if k in ADM_STATS})
    return stats


def _metric(value, generated: int, reference: int | None = None, **extra) -> dict:
    out = {"value": value, "images": generated}
    if reference is not None:
        out["reference_images"] = reference
    return {**out, **extra}


def check_protocol(gen: dict, ref: dict) -> None:
    """Statistics compare only under one protocol: a reference computed at another image size or with another
    network (recorded in every statistics file dip writes) is an error, not a meaningless FID."""
    if "image_size" in ref and int(ref["image_size"]) != int(gen["image_size"]):
        raise ValueError(f"the reference statistics were computed on {int(ref['image_size'])}² images, the generated "
                         f"ones are {int(gen['image_size'])}²: compute the reference at the samples' size")
    if "network" in ref and str(ref["network"]) != NETWORK:
        raise ValueError(f"the reference statistics come from {ref['network']}, this evaluation uses {NETWORK}")


def compare(gen: dict, ref: dict, device="cpu") -> dict:
    """Every metric of generated vs reference statistics, each with the number of images it used (the k-NN
    distances of precision/recall run on ``device``)."""
    check_protocol(gen, ref)
    n, m = gen["count"], int(ref.get("count", 0)) or None
    out = {"fid": _metric(frechet_distance(gen["mu"], gen["sigma"], ref["mu"], ref["sigma"]), n, m),
           "sfid": _metric(frechet_distance(gen["mu_s"], gen["sigma_s"], ref["mu_s"], ref["sigma_s"]), n, m)}
    if "probs" in gen:
        out["inception_score"] = _metric(inception_score(gen["probs"]), n)
    else:
        out["inception_score"] = _metric(None, n, reason="needs the Inception logits weights: pass "
                                         "--inception-logits pt_inception-2015-12-05-6726825d.pth")
    reason = None if "pool" in ref else "the reference statistics hold no pool features (give reference images)"
    if reason is None and min(n, len(ref["pool"])) <= NEIGHBOURS:
        reason = f"{NEIGHBOURS}-NN manifolds need more than {NEIGHBOURS} images on each side"
    if reason is None:
        precision, recall = precision_recall(ref["pool"].to(device), gen["pool"].to(device))
        out["precision"], out["recall"] = _metric(precision, n, len(ref["pool"])), _metric(recall, n, len(ref["pool"]))
    else:
        out["precision"], out["recall"] = _metric(None, n, reason=reason), _metric(None, n, reason=reason)
    out["seam_score"] = {"generated": seam_from_terms(gen["seam"]), "patch_size": gen["patch_size"], "images": n}
    if "seam" in ref and int(ref.get("patch_size", gen["patch_size"])) == gen["patch_size"]:
        out["seam_score"]["reference"] = seam_from_terms(ref["seam"])
    if "spectrum" in ref and len(ref["spectrum"]) == len(gen["spectrum"]):
        out["high_frequency_ratio"] = _metric(spectrum_ratio(gen["spectrum"], ref["spectrum"]), n, m)
    return out


def sweep_settings(base: SamplingSettings, sweep: list) -> list:
    """The cartesian product of ``key=v1,v2`` sweeps over ``base`` (keys: cfg, steps, interval low:high, shift,
    method, schedule, rule); method, schedule and rule names are checked before any sampling."""
    axes = []
    for item in sweep:
        key, _, values = item.partition("=")
        if key not in SWEEP_KEYS or not values:
            raise ValueError(f"--sweep items are key=v1,v2,… with key in {', '.join(SWEEP_KEYS)}; got {item!r}")
        parse = {"steps": int, "method": partial(one_of, METHODS, "method"),
                 "schedule": partial(one_of, SCHEDULES, "schedule"), "rule": partial(one_of, INTERVAL_RULES, "rule"),
                 "interval": lambda v: tuple(float(x) for x in v.split(":"))}.get(key, float)
        axes.append([(SWEEP_KEYS[key], parse(v)) for v in values.split(",")])
    return [replace(base, **dict(combo)) for combo in itertools.product(*axes)] or [base]


def one_of(choices: tuple, what: str, value: str) -> str:
    """``value`` if it is one of ``choices``, else a ValueError naming the sweep key and the choices."""
    if value not in choices:
        raise ValueError(f"--sweep {what}={value}: expected one of {', '.join(choices)}")
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
    a("--ref-count", type=int, help="use a seeded random subset of this many reference images")
    a("--save-ref-stats", help="write the reference statistics here (reuse them with --ref)")
    a("--image-size", type=int, help="reference crop size when there are no samples (default: the samples')")
    a("--patch-size", type=int, help="patch period of the seam score (default: the checkpoint's, else 16)")
    a("--inception-logits", help="pt_inception-2015-12-05 weights file: enables the Inception Score")
    a("--num-samples", type=int, default=50_000, help="images drawn from a checkpoint (or read from a source)")
    a("--sample-batch", type=int, default=64, help="generation batch")
    a("--batch", type=int, default=100, help="Inception batch")
    a("--sweep", nargs="+", default=[],
      help="key=v1,v2 … (cfg, steps, interval low:high, shift, method, schedule, rule)")
    a("--out", default="eval", help="folder for metrics.json and spectra.png")
    add_sampling_args(p)
    return p


def model_stream(model, num_samples: int, settings: SamplingSettings, batch: int, describe: str) -> ImageStream:
    """Class-balanced samples 0 … num_samples − 1 of ``model`` drawn on the fly (seeded per sample, no files)."""
    indices = list(range(num_samples))
    return ImageStream(num_samples, model.image_size,
                       lambda _: (images for images, _ in generate(model, indices, settings, batch=batch,
                                                                   progress=False)), describe)


def summary(metrics: dict) -> dict:
    """{name: value} of the metrics that have a value (for logs)."""
    values = {k: v.get("value") for k, v in metrics.items() if k != "seam_score"}
    values["seam_score"] = metrics["seam_score"]["generated"]
    return {k: v for k, v in values.items() if v is not None}


class TrainingMonitor:
    """Sample-quality metrics of a model during training (evaluation inside the training loop): the
    reference statistics are computed once; each call draws ``num_samples`` class-balanced samples with the same
    per-sample seeds, so successive values differ by the model only."""

    def __init__(self, ref: str, image_size: int, patch_size: int, device, *, num_samples: int,
                 logits: str | None = None, batch: int = 100, sample_batch: int = 64):
        self.num_samples, self.patch_size, self.device = num_samples, patch_size, device
        self.batch, self.sample_batch = batch, sample_batch
        self.network = InceptionFeatures(logits, device=device)
        self.ref = statistics_file(ref) or reference_statistics(ref, image_size, self.network, patch_size,
                                                                batch=batch, limit=None, seed=0)

    def __call__(self, model, settings: SamplingSettings) -> dict:
        stream = model_stream(model, self.num_samples, settings, self.sample_batch, "training samples")
        gen = FeatureSet(self.network, self.patch_size).read(stream, self.batch, "eval").statistics()
        return summary(compare(gen, self.ref, self.device))


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
    if args.sweep:
        raise ValueError("--sweep needs a checkpoint in --samples")
    stream = open_images(args.samples, None, args.num_samples)
    return [(str(path), None, stream)], args.patch_size or 16


def main(argv=None) -> dict:
    p = parser()
    args = p.parse_args(argv)
    with command_errors(p):
        return run_evaluation(args)


def _check_sources(args) -> None:
    """--samples and --ref exist (named by their option) and --out can be written, before any network is loaded."""
    expected = {"--samples": "a checkpoint, an .npz of images or a folder of images",
                "--ref": "'digits', an image or dataset folder, an .npz of images or a stats .npz"}
    for option, spec in (("--samples", args.samples), ("--ref", args.ref)):
        if spec and spec != "digits" and not Path(spec).exists():
            raise FileNotFoundError(f"{option} {spec} not found (expected {expected[option]})")
    if args.samples:
        writable_folder(args.out, "--out")


def run_evaluation(args) -> dict:
    """The metrics of every generated source against the reference (module doc); writes metrics.json."""
    _check_sources(args)
    _, _, device = init_distributed(args.device)
    streams, patch = _generated_streams(args, device) if args.samples else ([], args.patch_size or 16)
    size = streams[0][2].size if streams else args.image_size
    ref = statistics_file(args.ref)
    network = InceptionFeatures(args.inception_logits, device=device)
    if ref is None:
        ref = reference_statistics(args.ref, size, network, patch, batch=args.batch, limit=args.ref_count,
                                   seed=args.seed)
    if args.save_ref_stats:
        print(f"wrote {save_statistics(ref, args.save_ref_stats)}")
    out = Path(args.out)
    report = {"reference": {"source": args.ref, "images": int(ref.get("count", 0))}, "runs": []}
    spectra = {"reference": ref["spectrum"]} if "spectrum" in ref else {}
    for label, settings, stream in streams:
        start = time.time()
        gen = FeatureSet(network, patch).read(stream, args.batch, "generated").statistics()
        metrics = compare(gen, ref, device)
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
