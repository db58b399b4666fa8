"""A run's checkpoints on disk (docs/model.md §6): where they are, the newest one that reads back whole (each tensor
checked against the CRC-32 stored beside it; a truncated or damaged file is reported and passed over), which run
wrote each (``run_id``), and the keep-policy — which deletes only verified checkpoints of its own run, older than
the one just written, beyond the newest ``keep`` verified ones: never another run's, never a newer one, and a
damaged file is never the reason a good one goes."""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from ..io.checkpoints import read_file


def checkpoint_paths(out: Path) -> list[Path]:
    """Checkpoints in ``out``, newest first."""
    return sorted((out / "checkpoints").glob("step_*.pt"), reverse=True)


def new_run_id() -> str:
    """A fresh run's identity, stored in each of its checkpoints (drawn from the OS, not from the seeded RNGs)."""
    return uuid.uuid4().hex


def read_checkpoint(path: Path) -> dict:
    """A dip.train checkpoint, every tensor verified against its checksum (``read_file``); raises on any damage."""
    return read_file(path)


def load_newest(out_or_path: str | Path, log) -> dict | None:
    """The newest readable checkpoint of a run folder, of its checkpoints/ folder, or the given file (a truncated or
    corrupt one is reported and skipped)."""
    path = Path(out_or_path)
    candidates = [path] if path.is_file() else checkpoint_paths(path) or \
        sorted(path.glob("step_*.pt"), reverse=True)
    for candidate in candidates:
        try:
            return {**read_checkpoint(candidate), "_path": str(candidate)}
        except Exception as err:  # truncated zip, bad pickle, damaged tensor bytes
            log(f"skipping unreadable checkpoint {candidate}: {type(err).__name__}: {err}")
    if path.is_file():
        raise ValueError(f"{path} is not a readable dip training checkpoint")
    return None


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint file is: its step (from its name), the run that wrote it (None before run ids existed) and
    whether it reads back whole."""

    step: int
    run_id: str | None
    whole: bool


class CheckpointKeeper:
    """The keep-policy of one run (module doc). Files are read at most once per process to learn their run and
    integrity; the ones this run wrote are known without reading."""

    def __init__(self, out: Path, run_id: str, keep: int, log):
        self.out, self.run_id, self.keep, self.log = Path(out), run_id, keep, log
        self.known: dict[Path, CheckpointInfo] = {}

    def wrote(self, path: Path, step: int) -> None:
        """Record a checkpoint this run has just written (whole by construction: the write was atomic)."""
        self.known[Path(path)] = CheckpointInfo(step, self.run_id, True)

    def info(self, path: Path) -> CheckpointInfo:
        if path not in self.known:
            step = int(path.stem.split("_")[-1])
            try:
                self.known[path] = CheckpointInfo(step, read_checkpoint(path).get("run_id"), True)
            except Exception:  # damaged: its run is unknown
                self.known[path] = CheckpointInfo(step, None, False)
        return self.known[path]

    def prune(self, step: int) -> list[Path]:
        """After writing the checkpoint of ``step``: delete this run's verified checkpoints older than the newest
        ``keep`` verified ones at or below ``step``; returns what was deleted."""
        mine = []
        for path in checkpoint_paths(self.out):  # newest first
            if int(path.stem.split("_")[-1]) > step:
                continue  # newer than what was just written: not ours to judge
            info = self.info(path)
            if info.whole and info.run_id in (self.run_id, None):  # None: written before run ids, by this folder's run
                mine.append(path)
        deleted = mine[self.keep:]
        for path in deleted:
            path.unlink()
            self.known.pop(path, None)
        return deleted

