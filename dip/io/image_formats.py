"""Which files are images and how they become RGB (docs/model.md §6): every format Pillow can open, whatever the
suffix's case; hidden and tool folders (``.ipynb_checkpoints``, ``__pycache__``) are not data; every Pillow mode is
converted to 8-bit RGB by its true range (16-bit grey is scaled, not saturated)."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image


@lru_cache(maxsize=1)
def image_suffixes() -> frozenset:
    """Lower-case suffixes of every format Pillow can open here."""
    return frozenset(s.lower() for s, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def is_hidden(path: Path, root: Path) -> bool:
    """A file or folder under ``root`` whose path passes through a dot- or dunder-named part."""
    return any(part.startswith((".", "__")) for part in path.relative_to(root).parts)


def is_image(path: Path) -> bool:
    """A regular file with an image suffix (any case)."""
    return path.suffix.lower() in image_suffixes() and path.is_file()


def image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """The image files in ``folder`` (and below), hidden and tool folders skipped, sorted by path."""
    folder = Path(folder)
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found if not is_hidden(p, folder) and is_image(p))


def class_folders(root: Path) -> list[str]:
    """The class sub-folders of an ImageFolder root, hidden and tool folders skipped, sorted by name. A linked folder
    that leads back into the tree (the root, a folder in it, or above it) is refused, naming it: it would make a
    class of images the dataset already holds."""
    root = Path(root)
    names = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith((".", "__")):
            continue
        if d.is_symlink():
            target, top = d.resolve(), root.resolve()
            if target == top or top in target.parents or target in top.parents:
                raise ValueError(f"{d} links back into the dataset ({target}): it would repeat images the dataset "
                                 f"already holds as a class of their own; remove the link")
        names.append(d.name)
    return names


def to_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB by the mode's true range: 16/32-bit integer grey scaled from 0..65535, float grey clipped to 0..255
    (Pillow's own convention), everything else (palette, RGBA, LA, CMYK, YCbCr, 1) by Pillow's conversion."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        grey = np.asarray(image, dtype=np.float64) / 257.0  # 65535 → 255
        image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8), "L")
    return image.convert("RGB")
