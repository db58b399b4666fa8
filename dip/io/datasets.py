"""Training data (docs/model.md §6): the ADM centre crop, ImageFolder, the uint8 shards ``dip.data prepare`` writes
(dip/io/shards.py), the embedded digits set, and the order of samples as a pure function of (seed, global sample
index). Every dataset returns (uint8 image (H, W, 3), int label).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .image_formats import class_folders, image_files, to_rgb


def center_crop(image: Image.Image, size: int) -> np.ndarray:
    """The ADM centre crop: box-downsample by 2 while the short side is ≥ 2·size, bicubic-resize the short side
    to ``size``, crop the centre. Returns uint8 (size, size, 3)."""
    image = to_rgb(image)  # before resampling: 16-bit and palette images resample in their true range
    while min(image.size) >= 2 * size:
        image = image.resize(tuple(x // 2 for x in image.size), resample=Image.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(x * scale) for x in image.size), resample=Image.BICUBIC)
    arr = np.asarray(to_rgb(image))
    top, left = (arr.shape[0] - size) // 2, (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


class ImageFolder(torch.utils.data.Dataset):
    """root/<class>/<image>: labels are the sorted class-folder indices; images are ADM centre-cropped. A folder
    without sub-folders is one class (for unconditional training)."""

    def __init__(self, root, size: int):
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"image folder not found: {root}")
        self.classes = class_folders(root)
        self.items = [(p, k) for k, c in enumerate(self.classes) for p in image_files(root / c)]
        if not self.classes:
            self.classes = [root.name]
            self.items = [(p, 0) for p in image_files(root, recursive=False)]
        if not self.items:
            raise ValueError(f"{root} holds no images (expected root/<class>/<image>.jpg, or images directly in "
                             f"{root} for one class)")
        self.size = size

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        try:
            with Image.open(path) as image:
                return center_crop(image, self.size), label
        except (OSError, ValueError, Image.DecompressionBombError) as err:  # truncated, fake or undecodable
            raise ValueError(f"cannot read image {path}: {err}") from None

    def check(self, skip_bad: bool = False) -> list:
        """Read every file's header (Pillow ``verify``) before training: a bad file is an error naming it, or with
        ``skip_bad`` is dropped from the dataset; returns the bad files."""
        from tqdm import tqdm

        bad = []
        for path, _ in tqdm(self.items, desc="checking images", unit="file", leave=False):
            try:
                with Image.open(path) as image:
                    image.verify()
            except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
                if not skip_bad:
                    raise ValueError(f"cannot read image {path}: {err} (pass --bad-images skip to leave such files "
                                     f"out)") from None
                bad.append(path)
        self.items = [item for item in self.items if item[0] not in set(bad)]
        if not self.items:
            raise ValueError("every image of the dataset is unreadable")
        return bad


class Shards(torch.utils.data.Dataset):
    """The uint8 shards written by ``prepare``, memory-mapped; random access by global index."""

    def __init__(self, root):
        root = Path(root)
        meta_path = root / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{root} has no meta.json: run `python -m dip.data prepare` first")
        meta = json.loads(meta_path.read_text())
        self.classes, self.size = meta["classes"], meta["size"]
        self.images = [np.load(root / f"images_{k:05d}.npy", mmap_mode="r") for k in range(meta["shards"])]
        self.labels = [np.load(root / f"labels_{k:05d}.npy") for k in range(meta["shards"])]
        self.starts = np.cumsum([0] + [len(x) for x in self.labels])

    def __len__(self):
        return int(self.starts[-1])

    def __getitem__(self, i):
        k = int(np.searchsorted(self.starts, i, side="right") - 1)
        j = i - int(self.starts[k])
        return np.asarray(self.images[k][j]), int(self.labels[k][j])


class Digits(torch.utils.data.Dataset):
    """The embedded default (no download): scikit-learn's 1,797 handwritten 8×8 digits, bicubic up-sampled to
    ``size``² grey-as-RGB images, 10 classes."""

    def __init__(self, size: int = 32):
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise ImportError("the embedded digits dataset needs scikit-learn: pip install -e '.[demo]'") from None
        digits = load_digits()
        small = (digits.images / 16.0 * 255).astype(np.uint8)  # (N, 8, 8)
        self.images = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BICUBIC)) for im in small])
        self.labels = digits.target.astype(np.int64)
        self.classes = [str(k) for k in range(10)]
        self.size = size

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return np.repeat(self.images[i][:, :, None], 3, axis=2), int(self.labels[i])


def open_dataset(spec: str, size: int):
    """``digits`` (embedded), a folder of shards (has meta.json), or an ImageFolder."""
    if spec == "digits":
        return Digits(size)
    path = Path(spec)
    if (path / "meta.json").is_file():
        data = Shards(path)
        if data.size != size:
            raise ValueError(f"shards in {path} are {data.size}², the model wants {size}²")
        return data
    return ImageFolder(path, size)


def sample_indices(seed: int, dataset_size: int, start: int, count: int) -> torch.Tensor:
    """Dataset indices of global samples start … start+count−1: epoch e = g // n reads a permutation seeded by
    (seed, e). A pure function of the global index: resuming or changing the number of ranks changes nothing."""
    g = torch.arange(start, start + count)
    epochs, pos = g // dataset_size, g % dataset_size
    out = torch.empty(count, dtype=torch.long)
    for e in epochs.unique().tolist():
        perm = torch.randperm(dataset_size, generator=torch.Generator().manual_seed((seed * 1_000_003 + e) % 2**64))
        sel = epochs == e
        out[sel] = perm[pos[sel]]
    return out


def load_batch(dataset, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (B, 3, H, W) float in [-1, 1], labels (B,) int64) for dataset indices."""
    items = [dataset[i] for i in indices.tolist()]
    images = torch.from_numpy(np.stack([im for im, _ in items])).permute(0, 3, 1, 2).float() / 127.5 - 1
    return images, torch.tensor([lb for _, lb in items], dtype=torch.long)
