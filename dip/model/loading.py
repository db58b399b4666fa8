"""A DiP from a checkpoint file (docs/model.md §5): a dip.train checkpoint rebuilds its own run's architecture,
any other weights file (the authors' Lightning checkpoint, a plain state dict) a named preset."""
from __future__ import annotations

import json

import torch

from ..io.checkpoints import read_file
from ..io.weights import check_weights, is_training_checkpoint, weights_of
from .presets import PRESETS, create_model, run_model_options


def load_model(ckpt: str, model_name: str | None, which: str, kernels: str | None, device,
               trust: bool = False) -> torch.nn.Module:
    """A DiP with the checkpoint's weights (EMA by default): our training checkpoint or a weights file (``trust``:
    see ``dip.io.checkpoints.read_file``)."""
    obj = read_file(ckpt, trust)
    if is_training_checkpoint(obj):
        cfg = json.loads(obj["config"])
        model_name, image_size = model_name or cfg["model"], cfg["image_size"]
        options = run_model_options(cfg)
    else:
        model_name, image_size, options = model_name or "DiP-XL/16", None, {}
    state, source = weights_of(obj, which)
    table = state.get("y_embedder.embedding_table.weight")
    if table is None:
        some = ", ".join(list(state)[:4]) or "none"
        raise ValueError(f"{ckpt} ({source}) has no y_embedder.embedding_table.weight: not DiP weights (its first "
                         f"keys: {some})")
    classes = table.shape[0] - 1
    model = create_model(model_name, num_classes=classes, kernels=kernels,
                         **({"image_size": image_size} if image_size else {}), **options)
    check_weights(state, model, ckpt)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{ckpt} ({source}) does not fit preset {model_name} (pass --model): {err}") from None
    return model.to(device).eval()


def preset_of(model, name: str | None) -> str:
    """The preset a loaded model was built from (its recipe gives the sampling defaults)."""
    return name or next((n for n, p in PRESETS.items() if p.model["patch_size"] == model.patch_size
                         and p.model["hidden_size"] == model.hidden_size), "DiP-XL/16")
