"""Images people can look at: uint8 conversion, PNG grids, ADM-layout .npz sample batches."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def grid(images: torch.Tensor, nrow: int, pad: int = 2) -> np.ndarray:
    """uint8 (N, 3, H, W) (or [-1, 1] floats) → one (rows·(H+pad), nrow·(W+pad), 3) uint8 array."""
    if images.is_floating_point():
        images = to_uint8(images)
    N, C, H, W = images.shape
    rows = (N + nrow - 1) // nrow
    canvas = np.full((rows * (H + pad) + pad, nrow * (W + pad) + pad, 3), 255, dtype=np.uint8)
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(N):
        r, c = divmod(i, nrow)
        canvas[pad + r * (H + pad):pad + r * (H + pad) + H, pad + c * (W + pad):pad + c * (W + pad) + W] = arr[i]
    return canvas


def save_grid(images: torch.Tensor, path, nrow: int, upscale: int = 1) -> Path:
    """Write a PNG grid (nearest-neighbour ``upscale`` for tiny images); atomic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(grid(images, nrow))
    if upscale > 1:
        picture = picture.resize((picture.width * upscale, picture.height * upscale), Image.NEAREST)
    tmp = path.with_name(f".{path.name}.tmp")
    picture.save(tmp, format="PNG")
    os.replace(tmp, path)
    return path


def save_npz(images: torch.Tensor, labels: torch.Tensor | None, path) -> Path:
    """The ADM evaluation suite's layout: ``arr_0`` uint8 (N, H, W, 3) and, when class-conditional, ``arr_1``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = [to_uint8(images).permute(0, 2, 3, 1).cpu().numpy() if images.is_floating_point()
              else images.permute(0, 2, 3, 1).cpu().numpy()]
    if labels is not None:
        arrays.append(labels.cpu().numpy())
    tmp = path.with_name(f".{path.stem}.tmp.npz")
    np.savez(tmp, *arrays)
    os.replace(tmp, path)
    return path


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] images → uint8: clip((x + 1)·127.5 + 0.5, 0, 255) (§7)."""
    return ((x.float() + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8)
