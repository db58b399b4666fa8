"""Sample quality during training (docs/model.md §9): a model's class-balanced samples drawn on the fly as an image
stream, scored against reference statistics computed once."""
from __future__ import annotations

from ..diffusion.generation import SamplingSettings, generate
from ..io.image_streams import ImageStream
from .inception import InceptionFeatures
from .statistics import FeatureSet, compare, reference_statistics, statistics_file, summary


def model_stream(model, num_samples: int, settings: SamplingSettings, batch: int, describe: str) -> ImageStream:
    """Class-balanced samples 0 … num_samples − 1 of ``model`` drawn on the fly (seeded per sample, no files)."""
    indices = list(range(num_samples))
    return ImageStream(num_samples, model.image_size,
                       lambda _: (images for images, _ in generate(model, indices, settings, batch=batch,
                                                                   progress=False)), describe)


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
