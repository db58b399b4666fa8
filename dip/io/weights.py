"""DiP weights in the released checkpoint layout (docs/model.md §5): which tensors of a loaded file are the model's
(the authors' Lightning file, a dip.train checkpoint, a plain state dict), checked and adapted for loading, and
written back in that layout."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from .atomic import atomic_write
from .checkpoints import read_file

PREFIXES = {"ema": "ema_denoiser.", "raw": "denoiser."}


@dataclass
class LoadReport:
    """What ``load_weights`` took: the source description, the keys it skipped and the load result."""

    source: str
    skipped: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)


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
