"""Backend registry and selection for the fusable ops (docs/kernels.md §1, §4).

Every op has a reference implementation in plain PyTorch (backend ``torch``), registered by the module that
defines it. Triton and CUDA implementations register themselves under ``triton`` / ``cuda`` when their modules
import. Selection happens when a model is built or its backend is set (never inside traced code): the result is
a plain table ``{op: callable}`` per device type, looked up by ``x.device.type`` in the forward.

Rules:
- ``torch``: the reference, always.
- ``triton`` / ``cuda``: that backend's implementation where it exists and can run on the device type (Triton runs
  CPU tensors only under ``TRITON_INTERPRET=1``; the CUDA extension needs a CUDA device, or CPU tensors under
  ``DIP_CUDA_EMULATE=1``); otherwise the reference,
  and the report says so.
- ``auto``: CPU tensors use the reference; CUDA tensors follow the committed per-architecture preference table
  (``preferences.py``), falling back to the reference for ops it does not list.
"""
from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Callable, Dict, Mapping

BACKENDS = ("torch", "triton", "cuda", "auto")
ENV_VAR = "DIP_KERNELS"

_IMPLS: Dict[str, Dict[str, Callable]] = {}
_global_backend = None


def register(op: str, backend: str):
    """Decorator: register ``fn`` as the implementation of ``op`` for ``backend`` (torch, triton or cuda)."""
    if backend not in ("torch", "triton", "cuda"):
        raise ValueError(f"backend must be one of 'torch', 'triton', 'cuda', got {backend!r}")

    def wrap(fn: Callable) -> Callable:
        _IMPLS.setdefault(op, {})[backend] = fn
        return fn

    return wrap


def load_launchers(package: str, backends: tuple = ("triton", "cuda")) -> dict:
    """``{backend: launcher module}`` of an op package (docs/architecture.md) for the backends installed here:
    ``triton`` when the triton package imports, ``cuda`` when the extension (or its emulated twin) was built.
    Either may be missing without affecting the other."""
    from .cuda_ext import extension

    found = {}
    for backend in backends:
        if backend == "cuda" and extension() is None:
            continue
        try:
            found[backend] = importlib.import_module(f"{package}.{backend}")
        except ImportError:  # triton not installed
            continue
    return found


def ops() -> tuple:
    """Names of every registered op."""
    return tuple(sorted(_IMPLS))


def implementations(op: str) -> Dict[str, Callable]:
    """The registered implementations of ``op``: ``{backend: callable}``."""
    if op not in _IMPLS:
        raise ValueError(f"unknown op {op!r}; expected one of {ops()}")
    return dict(_IMPLS[op])


def check_backend(name: str) -> str:
    """Validate a backend name and return it."""
    if name not in BACKENDS:
        raise ValueError(f"kernels backend must be one of {BACKENDS}, got {name!r}")
    return name


def set_backend(name: str | None) -> None:
    """Set the process-wide default backend used by models built without an explicit ``kernels=``.

    ``None`` restores the default: the ``DIP_KERNELS`` environment variable, else ``auto``.
    """
    global _global_backend
    _global_backend = None if name is None else check_backend(name)


def get_backend() -> str:
    """The process-wide default backend (``set_backend`` > ``$DIP_KERNELS`` > ``auto``)."""
    if _global_backend is not None:
        return _global_backend
    return check_backend(os.environ.get(ENV_VAR, "auto"))


def _triton_interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _can_run(backend: str, device_type: str) -> bool:
    if backend == "torch":
        return True
    if backend == "triton":
        return device_type == "cuda" or (device_type == "cpu" and _triton_interpreting())
    from .cuda_ext import emulated

    return device_type == "cuda" or (device_type == "cpu" and emulated())  # the CUDA extension (or its emulator)


def _cuda_arch() -> str | None:
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return f"sm_{major}{minor}"


def _wanted(op: str, backend: str, device_type: str) -> str:
    if backend != "auto":
        return backend
    if device_type != "cuda":
        return "torch"
    from .preferences import PREFERENCES

    return PREFERENCES.get(_cuda_arch() or "", {}).get(op, "torch")


@dataclass(frozen=True)
class Resolved:
    """One op's resolution: the backend asked for, the backend that runs, and its callable."""

    requested: str
    used: str
    fn: Callable


def resolve(op: str, backend: str, device_type: str) -> Resolved:
    """Pick the implementation of ``op`` for ``backend`` on tensors of ``device_type`` (rules in the module doc)."""
    impls = implementations(op)
    wanted = _wanted(op, check_backend(backend), device_type)
    used = wanted if wanted in impls and _can_run(wanted, device_type) else "torch"
    return Resolved(backend, used, impls[used])


class KernelTable:
    """The resolved ops for one backend choice, one namespace per device type.

    ``backend`` is a backend name for every op, or a mapping ``{op: backend}`` (a mixed table, e.g. what ``auto``
    resolves to on one architecture; ops it does not name use the reference).
    ``table.on("cuda").block_boundary(...)`` calls the chosen implementation; ``table.report("cuda")`` says
    which backend each op uses there.
    """

    def __init__(self, backend: str | Mapping[str, str] | None = None):
        if isinstance(backend, Mapping):
            unknown = sorted(set(backend) - set(ops()))
            if unknown:
                raise ValueError(f"unknown op(s) {unknown} in the kernel table; expected some of {ops()}")
            self.backend = {op: check_backend(backend.get(op, "torch")) for op in ops()}
        else:
            name = check_backend(backend or get_backend())
            self.backend = name
        self._by_device = {dt: self._resolve_all(dt) for dt in ("cpu", "cuda")}
        self._namespaces = {dt: _OpNamespace({op: r.fn for op, r in t.items()}) for dt, t in self._by_device.items()}
        self._reference = _OpNamespace({op: resolve(op, "torch", "cpu").fn for op in ops()})

    def _requested(self, op: str) -> str:
        return self.backend[op] if isinstance(self.backend, dict) else self.backend

    def _resolve_all(self, device_type: str) -> Dict[str, Resolved]:
        return {op: resolve(op, self._requested(op), device_type) for op in ops()}

    def on(self, device_type: str) -> "_OpNamespace":
        """The callables for tensors of ``device_type`` (other device types get the reference)."""
        return self._namespaces.get(device_type, self._reference)

    def report(self, device_type: str) -> Dict[str, str]:
        """``{op: backend actually used}`` on ``device_type``."""
        if device_type not in self._by_device:  # other device types run the reference (see ``on``)
            return {op: "torch" for op in ops()}
        return {op: r.used for op, r in self._by_device[device_type].items()}


class _OpNamespace:
    """Attribute access to a ``{op: callable}`` table."""

    def __init__(self, fns: Dict[str, Callable]):
        self.__dict__.update(fns)
