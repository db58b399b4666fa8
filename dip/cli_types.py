"""Argument types for the command lines: every numeric option is checked against its domain when parsed, so a
mistake ends the command at once with argparse's one-line error naming the option (``dip-train: error: argument
--ema-decay: must be in [0, 1), got 1.5``) instead of running with a silently wrong value; the commands' other
user errors (bad files, unwritable folders) end the same way (``command_errors``), and output folders are probed
before work is spent (``writable_folder``, ``require_free_space``)."""
from __future__ import annotations

import argparse
import math
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path


def number(kind: type, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False):
    """An argparse ``type``: a ``kind`` (int or float) value in the interval [low, high] (ends open as asked)."""
    left, right = "(" if low_open else "[", ")" if high_open else "]"
    ends = ("-inf" if low is None else f"{low:g}", "inf" if high is None else f"{high:g}")
    domain = f"{left}{ends[0]}, {ends[1]}{right}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, got {text!r}")
        bad = not math.isfinite(value) or (low is not None and (value <= low if low_open else value < low)) or \
            (high is not None and (value >= high if high_open else value > high))
        if bad:
            raise argparse.ArgumentTypeError(f"must be in {domain}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT = number(int, 1)
NON_NEGATIVE_INT = number(int, 0)
POSITIVE = number(float, 0, low_open=True)
NON_NEGATIVE = number(float, 0)
UNIT = number(float, 0, 1)


class Interval(argparse.Action):
    """``--interval LOW HIGH``: two times in [0, 1] with LOW ≤ HIGH (a reversed pair would silently disable guidance)."""

    def __call__(self, parser, namespace, values, option_string=None):
        low, high = values
        if low > high:
            parser.error(f"argument {option_string}: LOW must be ≤ HIGH, got {low:g} {high:g}")
        setattr(namespace, self.dest, (low, high))


USER_ERRORS = (ValueError, TypeError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


@contextmanager
def command_errors(parser: argparse.ArgumentParser):
    """A user's mistake or a bad file inside a command ends it with argparse's one-line ``prog: error: …`` and exit
    status 2 instead of a traceback (a traceback is for bugs)."""
    try:
        yield
    except USER_ERRORS as err:
        parser.error(str(err))


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
