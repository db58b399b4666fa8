"""How good a demo model's samples are (docs/model.md §8): digit accuracy of the demo's classifier, FID,
precision/recall, high-frequency energy ratio and seam score of class-balanced samples against all 1,797 real
digits — shared by the ablation (ablate_demo.py) and the sampler benchmark (bench_sampler.py)."""
from __future__ import annotations

from pathlib import Path

import torch

from dip.diffusion.generation import SamplingSettings, generate
from dip.evaluation.digits import digits_accuracy
from dip.evaluation.statistics import FeatureSet, compare, load_statistics, reference_statistics, save_statistics


def digits_reference(folder: Path, network, image_size: int) -> dict:
    """The real digits' Inception statistics, computed once and cached as ``folder``/reference_stats.npz."""
    cached = Path(folder) / "reference_stats.npz"
    if cached.is_file():
        return load_statistics(cached)
    reference = reference_statistics("digits", image_size, network, 8, batch=100, limit=None, seed=0)
    cached.parent.mkdir(parents=True, exist_ok=True)
    save_statistics(reference, cached)
    return reference


def sample_quality(model, settings: SamplingSettings, reference: dict, network, n: int) -> dict:
    """Accuracy, FID, precision/recall, high-frequency ratio and seams of ``n`` class-balanced samples (per-sample
    seeds: the same images whatever the batch)."""
    features, images = FeatureSet(network, model.patch_size), []
    for batch, _ in generate(model, list(range(n)), settings, batch=100, progress=False):
        features.update(batch)
        images.append(batch)
    metrics = compare(features.statistics(), reference)
    images = torch.cat(images).float() / 127.5 - 1
    labels = torch.arange(n) % model.num_classes
    return {"accuracy": digits_accuracy(images, labels), "fid": metrics["fid"]["value"],
            "precision": metrics["precision"]["value"], "recall": metrics["recall"]["value"],
            "hf_ratio": metrics["high_frequency_ratio"]["value"], "seam": metrics["seam_score"]["generated"],
            "seam_real": metrics["seam_score"]["reference"]}
