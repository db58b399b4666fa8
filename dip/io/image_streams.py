"""Where evaluated images come from, as streams of uint8 (b, 3, H, W) batches: a folder of image files, an ADM-layout
``.npz`` (read member by member without loading the whole array), or a dataset spec of dip.data (ImageFolder with
the ADM centre crop, uint8 shards, the embedded digits)."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .datasets import open_dataset
from .image_formats import image_files, image_suffixes, to_rgb


class ImageStream:
    """``len`` images of ``size``² readable as uint8 (b, 3, H, W) batches; ``describe`` says what it is."""

    def __init__(self, count: int, size: int, batches, describe: str):
        self.count, self.size, self._batches, self.describe = count, size, batches, describe

    def batches(self, batch: int):
        return self._batches(batch)


def _to_chw(array: np.ndarray, what: str) -> torch.Tensor:
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise ValueError(f"{what} must hold uint8 (N, H, W, 3) images, got {array.dtype} {array.shape}")
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)


def _npy_header(member) -> tuple:
    version = np.lib.format.read_magic(member)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(member)
    if fortran:
        raise ValueError("Fortran-ordered arrays are not supported in sample .npz files")
    return shape, dtype


NPZ_DAMAGE = (zipfile.BadZipFile, EOFError, OSError, ValueError)  # what a truncated/corrupt archive raises


def npz_keys(path) -> list:
    """Array names of an .npz (no data read); a file that is not a readable zip archive is named."""
    try:
        with zipfile.ZipFile(path) as archive:
            return [n[:-4] for n in archive.namelist() if n.endswith(".npy")]
    except NPZ_DAMAGE as err:
        raise ValueError(f"{path} is not a readable .npz (a zip archive of .npy arrays): {err}") from None


def npz_images(path, limit: int | None = None) -> ImageStream:
    """``arr_0`` of an ADM-layout .npz, streamed batch by batch."""
    path = Path(path)
    if "arr_0" not in npz_keys(path):
        raise ValueError(f"{path} has no arr_0 (expected the ADM layout: uint8 images (N, H, W, 3) in arr_0)")
    try:
        with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as member:
            shape, dtype = _npy_header(member)
    except NPZ_DAMAGE as err:
        raise ValueError(f"{path}: arr_0 is damaged ({err})") from None
    if len(shape) != 4 or shape[-1] != 3 or dtype != np.uint8:
        raise ValueError(f"{path}: arr_0 must be uint8 (N, H, W, 3), got {dtype} {shape}")
    if shape[1] != shape[2]:
        raise ValueError(f"{path}: images must be square, got {shape[1]}×{shape[2]}")
    count = min(shape[0], limit) if limit else shape[0]

    def batches(batch: int):
        per_image = int(np.prod(shape[1:]))
        with zipfile.ZipFile(path) as archive, archive.open("arr_0.npy") as member:
            _npy_header(member)
            for start in range(0, count, batch):
                n = min(batch, count - start)
                try:  # a damaged member (bad CRC, truncated data) is named with its file
                    raw = member.read(n * per_image)
                    data = np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(n, *shape[1:])
                except NPZ_DAMAGE as err:
                    raise ValueError(f"{path}: arr_0 is damaged at image {start} ({err})") from None
                yield _to_chw(data, str(path))

    return ImageStream(count, shape[1], batches, f"{path} (arr_0, {count} images)")


def folder_images(path, limit: int | None = None) -> ImageStream:
    """Every image file under ``path`` (recursive, sorted by path); all the same square size."""
    path = Path(path)
    files = image_files(path)
    if not files:
        examples = ", ".join(sorted(image_suffixes())[:8])
        raise ValueError(f"{path} holds no image files (any format Pillow reads: {examples} …)")
    files = files[:limit] if limit else files
    with Image.open(files[0]) as first:
        width, height = first.size
    if width != height:
        raise ValueError(f"{files[0]}: images must be square, got {width}×{height}")

    def read(file: Path) -> np.ndarray:
        with Image.open(file) as image:
            arr = np.asarray(to_rgb(image))
        if arr.shape[:2] != (height, width):
            raise ValueError(f"{file} is {arr.shape[1]}×{arr.shape[0]}, the first image is {width}×{height}")
        return arr

    def batches(batch: int):
        for start in range(0, len(files), batch):
            yield _to_chw(np.stack([read(f) for f in files[start:start + batch]]), str(path))

    return ImageStream(len(files), width, batches, f"{path} ({len(files)} image files)")


def dataset_images(spec: str, size: int, limit: int | None = None, seed: int = 0) -> ImageStream:
    """A dip.data dataset (ImageFolder with the ADM centre crop, shards, ``digits``) at ``size``²; with ``limit``, a
    seeded random subset of that many images."""
    data = open_dataset(spec, size)
    order = torch.arange(len(data))
    if limit and limit < len(data):
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit].sort().values

    def batches(batch: int):
        for chunk in order.split(batch):
            yield _to_chw(np.stack([data[i][0] for i in chunk.tolist()]), spec)

    return ImageStream(len(order), size, batches, f"{spec} ({len(order)} images at {size}²)")


def open_images(spec: str, size: int | None = None, limit: int | None = None, seed: int = 0) -> ImageStream:
    """An .npz, a folder of image files (flat or not), or a dip.data dataset spec (needs ``size``)."""
    path = Path(spec)
    if path.suffix == ".npz":
        if not path.is_file():
            raise FileNotFoundError(f"sample file not found: {path}")
        return npz_images(path, limit)
    if spec != "digits" and not path.exists():
        raise FileNotFoundError(f"image source not found: {spec} (expected an .npz, a folder of images or 'digits')")
    is_dataset = spec == "digits" or (path / "meta.json").is_file() or any(d.is_dir() for d in path.iterdir())
    if is_dataset and size is not None:
        return dataset_images(spec, size, limit, seed)
    return folder_images(path, limit)
