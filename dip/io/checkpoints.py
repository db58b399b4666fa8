"""Reading checkpoint files safely (docs/model.md §5): ``torch.save`` files and ``.safetensors``, the authors'
PyTorch Lightning checkpoint included. Loading never imports Lightning and never runs code from the file:
``torch.load(weights_only=True)``; a file that refuses (Lightning's hyper-parameter objects, ``functools.partial`` …)
is read only when the caller trusts it by name (``trust=True``, ``--trust-pickle FILE``), and then by an unpickler
that resolves only torch's weights-only allowlist and replaces every other class by an inert stand-in. dip's own
checkpoints carry a CRC-32 per tensor (``tensor_checksums``), verified where they are read.
"""
from __future__ import annotations

import pickle
import types
import zlib
from pathlib import Path

import torch


class _Inert(dict):
    """Stand-in for a class outside the weights-only allowlist: stores what it is given, runs nothing."""

    def __init__(self, *args, **kwargs):
        super().__init__()
        self.args = args

    def __setstate__(self, state):
        self.state = state

    def append(self, item):
        self.setdefault("_items", []).append(item)

    def extend(self, items):
        self.setdefault("_items", []).extend(items)


class _RestrictedUnpickler(pickle._Unpickler):  # the Python implementation: its opcode table can be amended
    """Resolves only the globals of torch's weights-only allowlist; every other class or function the file names
    (Lightning's ``AttributeDict``, ``functools.partial`` …) becomes an inert ``_Inert`` subclass, so nothing from
    the file is executed and no foreign package is imported. BUILD (setting state) applies only to objects this
    load created: never to a class, function or module, which would change it for the whole process."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def find_class(self, module, name):
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = _get_allowed_globals().get(f"{module}.{name}")
        return allowed if allowed is not None else type(f"{module}.{name}", (_Inert,), {})

    def load_build(self):
        target = self.stack[-2]
        if isinstance(target, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType)):
            raise pickle.UnpicklingError(f"refusing to set state on {getattr(target, '__name__', target)!r}: a "
                                         f"checkpoint may only fill in objects it creates")
        super().load_build()

    dispatch[pickle.BUILD[0]] = load_build


class _restricted_pickle:  # the ``pickle_module`` interface torch.load expects
    Unpickler = _RestrictedUnpickler
    __name__ = "dip.io.checkpoints._restricted_pickle"

    @staticmethod
    def load(file, **kwargs):
        return _RestrictedUnpickler(file, **kwargs).load()


class NotACheckpoint(ValueError):
    """A file that is no checkpoint format at all (never advise trusting it)."""


class UntrustedFile(ValueError):
    """A file ``torch.load(weights_only=True)`` refuses, given without the caller's trust."""


def _is_torch_file(path: Path) -> bool:
    """A ``torch.save`` file, whole or damaged, by its first bytes: a zip archive (the format since torch 1.6) or a
    legacy pickle (protocol ≥ 2)."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head == b"PK\x03\x04" or head[:1] == b"\x80"


def _torch_load(path: Path, trust: bool):
    if not _is_torch_file(path):
        raise NotACheckpoint(f"{path} is not a checkpoint: neither a torch.save archive nor a pickle (expected a "
                         f".pt/.pth/.ckpt or .safetensors file of DiP weights)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise
    if not trust:
        raise UntrustedFile(f"{path} holds Python objects besides tensors (e.g. a Lightning checkpoint's "
                            f"hyper-parameters), which weights-only loading refuses; if you trust this file, pass "
                            f"--trust-pickle {path} (Python: trust=True) to read it with dip's inert unpickler")
    # Lightning checkpoints carry non-tensor objects the weights-only unpickler refuses; read them inertly.
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_restricted_pickle)


def trusted_by_name(trusted_file: str | None, path) -> bool:
    """Whether the file the user trusted by name (``--trust-pickle FILE``) is ``path``: trust is given per file."""
    return trusted_file is not None and Path(trusted_file).resolve() == Path(path).resolve()


def read_file(path, trust: bool = False) -> dict:
    """The dict stored in ``path`` (a ``.safetensors`` file or a ``torch.save`` file), on the CPU; ``trust`` allows
    a file weights-only loading refuses (module doc)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix.lower() in (".npy", ".npz"):
        raise ValueError(f"{path} is a NumPy array file, not a checkpoint (expected a torch.save .pt/.pth/.ckpt or a "
                         f".safetensors file of DiP weights)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = _torch_load(path, trust)
    except (UntrustedFile, NotACheckpoint):
        raise
    except Exception as err:  # truncated zip, wrong magic, bad safetensors header …
        raise ValueError(f"{path} is not a readable checkpoint (expected a torch.save or .safetensors file of DiP "
                         f"weights): {type(err).__name__}: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors or a Lightning checkpoint")
    verify_checksums(obj, path)  # dip.train's checkpoints: every tensor against the checksum stored with it
    return obj


def tensors_of(obj, prefix: str = ""):
    """(dotted key, tensor) of every tensor nested in dicts and lists, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        yield prefix, obj
    elif isinstance(obj, dict):
        for k in sorted(obj, key=str):
            yield from tensors_of(obj[k], f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors_of(v, f"{prefix}.{i}")


def tensor_checksums(state: dict) -> dict:
    """CRC-32 of every tensor's bytes in a checkpoint dict (nested), keyed by its dotted path: stored in dip's
    checkpoints and verified on load, so flipped bytes are caught even where the file still unpickles."""
    return {key: zlib.crc32(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy()) if t.numel() else 0
            for key, t in tensors_of(state)}


def verify_checksums(state: dict, path) -> None:
    """Raise ``ValueError`` naming the first tensor of ``state`` whose bytes differ from its stored checksum."""
    stored = state.get("checksums")
    if stored is None:
        return  # written before checksums existed
    body = {k: v for k, v in state.items() if k not in ("checksums", "_path")}
    for key, crc in tensor_checksums(body).items():
        if stored.get(key) != crc:
            raise ValueError(f"{path}: tensor {key} does not match its checksum (the file is damaged)")
