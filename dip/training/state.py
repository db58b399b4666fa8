"""A run's checkpoints on disk (docs/model.md §6): where they are, and the newest one that reads back whole (each
tensor checked against the CRC-32 stored beside it; a truncated or damaged file is reported and passed over)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..io.checkpoints import verify_checksums


def checkpoint_paths(out: Path) -> list[Path]:
    """Checkpoints in ``out``, newest first."""
    return sorted((out / "checkpoints").glob("step_*.pt"), reverse=True)


def load_newest(out_or_path: str | Path, log) -> dict | None:
    """The newest readable checkpoint of a run folder, of its checkpoints/ folder, or the given file (a truncated or
    corrupt one is reported and skipped)."""
    path = Path(out_or_path)
    candidates = [path] if path.is_file() else checkpoint_paths(path) or \
        sorted(path.glob("step_*.pt"), reverse=True)
    for candidate in candidates:
        try:
            state = torch.load(candidate, map_location="cpu", weights_only=True)
            verify_checksums(state, candidate)
            return {**state, "_path": str(candidate)}
        except Exception as err:  # truncated zip, bad pickle, damaged tensor bytes
            log(f"skipping unreadable checkpoint {candidate}: {type(err).__name__}: {err}")
    if path.is_file():
        raise ValueError(f"{path} is not a readable dip training checkpoint")
    return None
