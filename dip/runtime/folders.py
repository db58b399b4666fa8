"""Output folders are probed before work is spent (docs/model.md §6): writable (a probe file is written) and, for
a training run, with room for two checkpoints."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path


def writable_folder(path, option: str) -> Path:
    """``path`` as an existing folder this process can write (created if missing), checked by writing a probe file
    before any work is spent; a ``ValueError`` names the option and what is wrong."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{option} {path} is a file; expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".probe.", suffix=".tmp"):
            pass
    except OSError as err:
        raise ValueError(f"{option} {path} is not writable: {err.strerror or err}") from None
    return path


def require_free_space(path, option: str, needed_bytes: int) -> None:
    """A ``ValueError`` naming the option when the disk holding ``path`` has less than ``needed_bytes`` free."""
    free = shutil.disk_usage(path).free
    if free < needed_bytes:
        raise ValueError(f"{option} {path}: {free / 2**30:.1f} GiB free, the run needs about "
                         f"{needed_bytes / 2**30:.1f} GiB (two checkpoints during rotation)")
