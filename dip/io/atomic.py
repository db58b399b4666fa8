"""Atomic file writes (docs/model.md §6): a file is written beside its final name and renamed over it, so a reader
or a crash never sees a torn file; what an interrupted write left behind is found and removed by the next run."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMPORARY = ".*.tmp"  # the names atomic_write gives its temporary files


def _umask_mode() -> int:
    """The mode a newly created file gets under the process umask (rw for whom the umask allows)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it over ``path`` (no torn files); the file
    gets the umask's mode like any other (``mkstemp`` alone would make it private)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, _umask_mode())
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted ``atomic_write`` left in ``folder`` (call it only while holding the
    folder's run lock: then no write is in flight); returns what was removed."""
    stale = sorted(Path(folder).glob(TEMPORARY)) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
