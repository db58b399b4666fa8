"""Inception statistics and the metrics between two sets of them (docs/model.md §9): FID, sFID, Inception Score,
precision and recall with the ADM suite's definitions (dip/evaluation/metrics.py) on the standard Inception network
(dip/evaluation/inception.py), plus the patch diagnostics — the seam score and the radially averaged power spectrum
(dip/evaluation/diagnostics.py). Statistics files are ``.npz`` with the ADM names and record their protocol."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..io.atomic import atomic_write
from ..io.image_streams import ImageStream, npz_keys, open_images
from .diagnostics import radial_spectrum, seam_from_terms, seam_terms, spectrum_ratio
from .inception import InceptionFeatures
from .metrics import NEIGHBOURS, RunningMoments, frechet_distance, inception_score, precision_recall

ADM_STATS = ("mu", "sigma", "mu_s", "sigma_s")


NETWORK = "inception-2015-12-05 (TF1 bilinear resize to 299, pool3 + mixed_6/conv[:7])"  # the features' protocol


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


def full_rank(mu: torch.Tensor, generated: int, reference: int | None) -> bool:
    """Whether both covariances can have full rank: more images on each side than the feature width. Below it the
    Fréchet distance is still defined but biased and noisy — a proxy to compare runs with, not a score."""
    return min(generated, reference or generated) > mu.numel()


def compare(gen: dict, ref: dict, device="cpu") -> dict:
    """Every metric of generated vs reference statistics, each with the number of images it used (the k-NN
    distances of precision/recall run on ``device``)."""
    check_protocol(gen, ref)
    n, m = gen["count"], int(ref.get("count", 0)) or None
    out = {"fid": _metric(frechet_distance(gen["mu"], gen["sigma"], ref["mu"], ref["sigma"]), n, m,
                          full_rank=full_rank(gen["mu"], n, m)),
           "sfid": _metric(frechet_distance(gen["mu_s"], gen["sigma_s"], ref["mu_s"], ref["sigma_s"]), n, m,
                           full_rank=full_rank(gen["mu_s"], n, m))}
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


def summary(metrics: dict) -> dict:
    """{name: value} of the metrics that have a value (for logs)."""
    values = {k: v.get("value") for k, v in metrics.items() if k != "seam_score"}
    values["seam_score"] = metrics["seam_score"]["generated"]
    return {k: v for k, v in values.items() if v is not None}
