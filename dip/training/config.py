"""A training run's whole configuration (docs/model.md §6): ``TrainConfig``, one typed record of the command line's
options with the preset's recipe filling what was not given (``resolve``). It is saved, as JSON, in every checkpoint,
so that sampling and resuming rebuild the same architecture."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import torch

from ..model.presets import Recipe, recipe, run_model_options


@dataclass(frozen=True)
class TrainConfig:
    """Every option of ``dip.train`` (its ``--help`` says what each does); ``None`` means "the recipe's" until
    ``resolve`` fills it. ``recipe`` is the preset's whole recipe (sampling settings and warm-up included)."""

    model: str = "DiP-T/8"
    data: str = "digits"
    out: str = "runs/dip"
    image_size: int | None = None
    bad_images: str = "error"
    unconditional: bool = False
    head: str | None = None
    head_width: int | None = None
    batch: int | None = None
    accum: int = 1
    steps: int | None = None
    minutes: float | None = None
    lr: float | None = None
    lr_decay: float | None = None
    weight_decay: float | None = None
    ema_decay: float | None = None
    label_dropout: float | None = None
    t_mean: float | None = None
    t_std: float | None = None
    t_mix: tuple | None = None
    grad_clip: float | None = None
    seed: int = 0
    device: str = "auto"
    precision: str | None = None
    tf32: bool = True
    compile: bool = False
    grad_checkpointing: bool = False
    merged_projections: bool = False
    kernels: str | None = None
    fsdp: bool = False
    deterministic: bool = False
    repa_encoder: str | None = None
    repa_weight: float | None = None
    repa_block: int | None = None
    resume: str = "auto"
    trust_pickle: str | None = None
    init_from: str | None = None
    eval_every: int = 0
    eval_ref: str | None = None
    eval_samples: int = 1000
    inception_logits: str | None = None
    ckpt_every: int = 500
    keep: int = 3
    sample_every: int = 1000
    log_every: int = 20
    final_samples: int = 8
    tensorboard: bool = False
    dry_run: bool = False
    overwrite: bool = False          # a fresh start may delete the checkpoints another run left in ``out``
    allow_change: tuple = ()         # objective options a resumed run may change (OBJECTIVE)
    debug_nan_step: int = -1  # tests: poison this step's loss
    recipe: Recipe = field(default_factory=Recipe)

    def as_dict(self) -> dict:
        """The JSON-able form saved in checkpoints (the recipe as a dict)."""
        return dataclasses.asdict(self)

    def model_options(self) -> dict:
        """The model options this run sets on top of its preset (``run_model_options``)."""
        return run_model_options(self.as_dict())


# The options that define what a run optimises: resuming with another value is refused unless allowed by name.
OBJECTIVE = ("seed", "data", "image_size", "unconditional", "batch", "lr", "lr_decay", "weight_decay", "ema_decay",
             "label_dropout", "t_mean", "t_std", "t_mix", "grad_clip", "repa_encoder", "repa_weight", "repa_block")


def objective_changes(saved: dict, cfg: TrainConfig) -> dict:
    """{option: (saved value, new value)} of the objective options (``OBJECTIVE``, and ``steps`` when the lr decays
    over a fraction of them) that differ between a checkpoint's saved config and ``cfg``."""
    mine = json.loads(json.dumps(cfg.as_dict()))  # the saved form: tuples as lists
    keys = OBJECTIVE + (("steps",) if cfg.lr_decay or saved.get("lr_decay") else ())
    return {k: (saved.get(k), mine[k]) for k in keys if k in saved and saved[k] != mine[k]}


def resolve(options) -> TrainConfig:
    """The run's full config from ``options`` (an argparse namespace or a dict of ``TrainConfig`` fields): the given
    values, else the preset's recipe; a ``ValueError`` names an inconsistent choice."""
    given = {k.replace("-", "_"): v for k, v in (options if isinstance(options, dict) else vars(options)).items()}
    cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None})
    r = recipe(cfg.model)
    cuda = torch.cuda.is_available() and cfg.device != "cpu"
    defaults = {"image_size": r.image_size, "batch": r.global_batch, "lr": r.lr, "weight_decay": r.weight_decay,
                "lr_decay": r.lr_decay, "t_mean": r.t_mean, "t_std": r.t_std, "t_mix": r.t_mix,
                "ema_decay": r.ema_decay, "label_dropout": r.label_dropout, "repa_weight": r.repa_weight,
                "repa_block": r.repa_block, "precision": "bf16" if cuda else "fp32",
                "steps": None if cfg.minutes is not None else r.train_steps}
    cfg = dataclasses.replace(cfg, recipe=r, **{k: v for k, v in defaults.items() if getattr(cfg, k) is None})
    fraction, _, std2 = cfg.t_mix
    if not 0 <= fraction <= 1 or std2 <= 0:
        raise ValueError(f"--t-mix needs 0 ≤ FRACTION ≤ 1 and STD > 0, got {list(cfg.t_mix)}")
    if cfg.lr_decay and cfg.steps is None:
        raise ValueError("--lr-decay needs a fixed number of --steps (not a --minutes budget)")
    if cfg.lr_decay and round(cfg.lr_decay * cfg.steps) < 2:  # one decay step would keep the full lr
        raise ValueError(f"--lr-decay {cfg.lr_decay:g} of {cfg.steps} steps is {cfg.lr_decay * cfg.steps:g} steps; a "
                         f"decay needs at least 2 (--lr-decay ≥ {2 / cfg.steps:g} here)")
    unknown = sorted(set(cfg.allow_change) - set(OBJECTIVE) - {"steps"})
    if unknown:
        raise ValueError(f"--allow-change takes options among {', '.join(OBJECTIVE + ('steps',))}; got {unknown}")
    return cfg
