"""Load and save DiP weights in the released checkpoint layout (docs/model.md §5).

Accepted inputs: the authors' PyTorch Lightning checkpoint (weights in ``ckpt["state_dict"]`` under
``denoiser.`` and ``ema_denoiser.``; EMA taken by default), a plain state dict, or either with the two prefixes
at top level; as ``torch.save`` files or ``.safetensors``. Loading never imports Lightning and never runs code from
the file: ``torch.load(weights_only=True)``; a file that refuses (Lightning's hyper-parameter objects,
``functools.partial`` …) is read only when the caller trusts it by name (``trust=True``, ``--trust-pickle FILE``),
and then by an unpickler that resolves only torch's weights-only allowlist and replaces every other class by an
inert stand-in. Loaded weights are checked: a floating parameter stored as integers, or holding NaN/inf, is an
error naming the key.
Writes are atomic (temporary file in the same folder, then ``os.replace``).
"""
from __future__ import annotations

import os
import pickle
import tempfile
import types
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import torch

PREFIXES = {"ema": "ema_denoiser.", "raw": "denoiser."}


@dataclass
class LoadReport:
    """What ``load_weights`` took: the source description, the keys it skipped and the load result."""

    source: str
    skipped: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)


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
    __name__ = "dip.checkpoint._restricted_pickle"

    @staticmethod
    def load(file, **kwargs):
        return _RestrictedUnpickler(file, **kwargs).load()


class UntrustedFile(ValueError):
    """A file ``torch.load(weights_only=True)`` refuses, given without the caller's trust."""


def _torch_load(path: Path, trust: bool):
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
    except UntrustedFile:
        raise
    except Exception as err:  # truncated zip, wrong magic, bad safetensors header …
        raise ValueError(f"{path} is not a readable checkpoint (expected a torch.save or .safetensors file of DiP "
                         f"weights): {type(err).__name__}: {err}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, expected a dict of tensors or a Lightning checkpoint")
    return obj


def extract_state_dict(obj: dict, which: str = "ema") -> tuple[dict, list, str]:
    """(state dict in the released names, skipped keys, description) from a loaded checkpoint dict.

    ``which``: ``"ema"`` (default) or ``"raw"`` selects ``ema_denoiser.`` or ``denoiser.`` where both exist.
    """
    if which not in PREFIXES:
        raise ValueError(f"which must be 'ema' or 'raw', got {which!r}")
    lightning = isinstance(obj.get("state_dict"), dict)
    flat = obj["state_dict"] if lightning else obj
    tensors = {k: v for k, v in flat.items() if isinstance(v, torch.Tensor)}
    prefix = PREFIXES[which]
    if not any(k.startswith(prefix) for k in tensors):
        prefix = next((p for p in PREFIXES.values() if any(k.startswith(p) for k in tensors)), "")
    if lightning and not prefix:
        raise ValueError("Lightning checkpoint has no 'denoiser.' or 'ema_denoiser.' weights")
    if prefix:
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    else:
        state = tensors
    skipped = sorted(k for k in flat if not (k.startswith(prefix) and isinstance(flat[k], torch.Tensor)))
    kind = "Lightning checkpoint" if lightning else "state dict"
    if not prefix:
        return state, skipped, f"{kind} without prefix"
    note = "" if prefix == PREFIXES[which] else f" ({which} weights requested, the file has only these)"
    return state, skipped, f"{kind}, weights under {prefix!r}{note}"


def is_training_checkpoint(obj: dict) -> bool:
    """Whether a loaded file is a dip.train checkpoint (model, EMA, optimizer, config …)."""
    return "ema" in obj and "config" in obj


def weights_of(obj: dict, which: str = "ema") -> tuple[dict, str]:
    """(state dict in the released names, description) of a loaded file (``read_file``): a dip.train checkpoint
    (its EMA or raw model) or anything ``extract_state_dict`` reads."""
    if is_training_checkpoint(obj):
        if which not in PREFIXES:
            raise ValueError(f"which must be 'ema' or 'raw', got {which!r}")
        return obj["ema" if which == "ema" else "model"], f"dip.train checkpoint ({which} weights)"
    state, _, source = extract_state_dict(obj, which)
    return state, source


def adapt_label_table(state: dict, model: torch.nn.Module, key: str = "y_embedder.embedding_table.weight") -> dict:
    """Fine-tuning on a different label set: when the class counts differ, the model keeps its
    freshly initialised class rows and takes the source's null row (the unconditional embedding guidance uses)
    as its own null row (the last one). Other tensors are untouched; returns the adapted copy."""
    source, target = state.get(key), model.state_dict().get(key)
    if source is None or target is None or source.shape == target.shape:
        return state
    if source.shape[1:] != target.shape[1:]:
        raise ValueError(f"{key}: width {tuple(source.shape[1:])} in the source, {tuple(target.shape[1:])} in the "
                         f"model (a different preset?)")
    table = target.detach().clone().to(source.dtype)
    table[-1] = source[-1]
    return {**state, key: table}


def check_weights(state: dict, model: torch.nn.Module, path) -> None:
    """A ``ValueError`` naming the first tensor of ``state`` that the model keeps in floating point but the file
    stores as integers (it would be cast silently), or that holds NaN/inf."""
    own = model.state_dict()
    for key, value in state.items():
        target = own.get(key)
        if target is None or not target.is_floating_point() or not torch.is_tensor(value):
            continue
        if not value.is_floating_point():
            raise ValueError(f"{path}: {key} is stored as {value.dtype}, the model keeps it in floating point")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{path}: {key} holds NaN or inf values")


def load_weights(model: torch.nn.Module, path, *, which: str = "ema", strict: bool = True,
                 trust: bool = False) -> LoadReport:
    """Load ``path`` into ``model``: a dip.train checkpoint, the authors' Lightning checkpoint or a plain state dict
    (EMA weights where a file has both, by default); returns what was skipped. ``trust``: see ``read_file``.

    Wrong shapes or, with ``strict``, missing/unexpected keys raise a ``ValueError`` naming them.
    """
    obj = read_file(path, trust)
    if is_training_checkpoint(obj):
        (state, source), skipped = weights_of(obj, which), []
    else:
        state, skipped, source = extract_state_dict(obj, which)
    check_weights(state, model, path)
    try:
        result = model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise ValueError(f"{path} does not match the model ({source}): {err}") from None
    return LoadReport(source=f"{path}: {source}", skipped=skipped, missing=list(result.missing_keys),
                      unexpected=list(result.unexpected_keys))


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


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files an interrupted ``atomic_write`` left in ``folder`` (call it only while holding the
    folder's run lock: then no write is in flight); returns what was removed."""
    stale = sorted(Path(folder).glob(TEMPORARY)) if Path(folder).is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_weights(path, state: dict, ema_state: dict | None = None) -> None:
    """Write weights in the released layout, atomically.

    ``state`` alone: a plain state dict (``.safetensors`` or ``torch.save`` by the file suffix). With
    ``ema_state``: both under ``denoiser.`` / ``ema_denoiser.``, nested in ``{"state_dict": …}`` like the
    authors' Lightning file for ``torch.save`` files, flat for ``.safetensors``.
    """
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if ema_state is not None:
        flat = {PREFIXES["raw"] + k: v for k, v in state.items()}
        flat.update({PREFIXES["ema"] + k: v.detach().cpu().contiguous() for k, v in ema_state.items()})
    else:
        flat = state
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        atomic_write(path, lambda tmp: save_file(flat, tmp))
    else:
        payload = {"state_dict": flat} if ema_state is not None else flat
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
