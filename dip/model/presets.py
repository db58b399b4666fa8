"""The preset registry (docs/model.md §4): architecture plus the training/sampling recipe defaults of each size.

``create_model("DiP-XL/16", **overrides)`` builds a preset; ``PRESETS`` doubles as the CLI choices.
Paper presets carry the paper's recipe (§6, §7); DiP-T/8 carries the CPU-demo recipe measured on a 2-core CPU
(lr 2e-3, EMA 0.999 with warm-up: the paper's lr 1e-4 / EMA 0.9999 stay at chance in a CPU-sized budget; t ~
logit-normal(0, 1.6²), chosen by the ablation in docs/model.md §8).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from .dip import DiP


@dataclass(frozen=True)
class Recipe:
    """Training and sampling defaults of a preset (docs/model.md §6–§7)."""

    image_size: int = 256
    num_classes: int = 1000
    global_batch: int = 256
    lr: float = 1e-4                 # AdamW, constant, no warm-up
    lr_decay: float = 0.0            # linear decay to 0 over this final fraction of train_steps (0: constant)
    betas: tuple = (0.9, 0.999)
    weight_decay: float = 0.0
    ema_decay: float = 0.9999
    ema_warmup: bool = False         # decay min(ema_decay, (1 + n) / (10 + n)) when true
    label_dropout: float = 0.1       # labels replaced by the null class
    t_mean: float = 0.0              # logit-normal t: sigmoid(N(t_mean, t_std²))
    t_std: float = 1.0
    t_mix: tuple = (0.0, 0.0, 1.0)   # (fraction, mean, std): that fraction of t from a second logit-normal
    grad_clip: float | None = None
    repa_weight: float = 0.5         # REPA term, active only when an encoder is supplied
    repa_block: int = 8              # 1-indexed block whose output is projected
    train_steps: int = 400_000       # optimizer steps of a default run (the paper's XL/16 goes on to 3M)
    seconds_per_step: float | None = None  # measured on the machine the default was sized for (slow-run warning)
    sample_steps: int = 100          # Euler steps
    cfg_scale: float = 2.9
    guidance_interval: tuple = (0.11, 0.97)  # guidance applied while low < t < high


@dataclass(frozen=True)
class Preset:
    """A named configuration: ``DiP`` keyword arguments plus its ``Recipe``."""

    model: dict
    recipe: Recipe = field(default_factory=Recipe)


def _paper(depth: int, hidden: int, heads: int, patch: int = 16, weight_decay: float = 0.0, image_size: int = 256,
           **model) -> Preset:
    arch = dict(depth=depth, hidden_size=hidden, num_heads=heads, patch_size=patch, image_size=image_size,
                num_classes=1000, **model)
    return Preset(arch, Recipe(image_size=image_size, weight_decay=weight_decay))


PRESETS = {
    "DiP-T/8": Preset(
        dict(depth=4, hidden_size=128, num_heads=2, patch_size=8, image_size=32, num_classes=10,
             head_base_width=32),  # 16 left 3× the FID at the same training time (README ablation)
        Recipe(image_size=32, num_classes=10, global_batch=64, lr=2e-3, ema_decay=0.999, ema_warmup=True,
               t_std=1.6, t_mix=(0.5, 1.0, 1.0),  # half the draws centred at low noise, where the grain is left,
               # half wide for the class-deciding high noise (README ablation, docs/model.md §8)
               train_steps=1800, seconds_per_step=0.25,  # ≈ 7.5 minutes on an idle 2-core CPU
               repa_block=2, sample_steps=30, cfg_scale=3.0, guidance_interval=(0.0, 1.0))),
    "DiP-S/16": _paper(12, 384, 6),
    "DiP-B/16": _paper(12, 768, 12),
    "DiP-L/16": _paper(22, 1024, 16),
    "DiP-XL/16": _paper(26, 1152, 16, weight_decay=1e-3),  # the authors' released XL config uses wd 1e-3
    "DiP-XL/32": _paper(26, 1152, 16, patch=32, weight_decay=1e-3, image_size=512),
    "DiT-only-XL/16": _paper(26, 1152, 16, weight_decay=1e-3, head="dit"),  # the paper's head ablation baseline
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ``ValueError`` lists the valid names."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[name]


def model_kwargs(name: str, **overrides) -> dict:
    """The preset's ``DiP`` keyword arguments with ``overrides`` applied (unknown keys rejected)."""
    valid = set(DiP.__init__.__kwdefaults__)
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"unknown model option(s) {unknown}; expected some of {sorted(valid)}")
    return {**get_preset(name).model, **overrides}


def create_model(name: str, **overrides) -> DiP:
    """Build preset ``name`` (e.g. ``"DiP-XL/16"``) with keyword overrides of ``DiP``'s options."""
    return DiP(**model_kwargs(name, **overrides))


def run_model_options(cfg: dict) -> dict:
    """The model options a training run's config sets on top of its preset (``--head``, ``--head-width``); also
    read back from a checkpoint's config so the same architecture is rebuilt."""
    options = {"head": cfg.get("head"), "head_base_width": cfg.get("head_width")}
    return {k: v for k, v in options.items() if v is not None}


def recipe(name: str, **overrides) -> Recipe:
    """The preset's training/sampling recipe with overrides."""
    return dataclasses.replace(get_preset(name).recipe, **overrides)
