"""One writer per run folder: two trainings with the same ``--out`` would overwrite each other's checkpoints and
interleave ``stats.jsonl``. The training holds an exclusive ``flock`` on ``<out>/.dip.lock`` for its whole life; the
operating system drops it when the process ends, however it ends, so a killed run leaves no stale lock. The file
names the holder (pid and host) for the refusal message."""
from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path


class RunFolderBusy(RuntimeError):
    """Another process is training into this run folder."""


class RunLock:
    """The exclusive lock on a run folder (created if needed); ``release()`` when the training is done."""

    def __init__(self, out: Path):
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / ".dip.lock"
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            self.fd = None
            holder = self.path.read_text().strip() or "another process"
            raise RunFolderBusy(f"{out} is in use by another training ({holder}): wait for it to finish or choose "
                                f"another --out") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())

    def release(self) -> None:
        """Give the folder up (idempotent)."""
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
