"""Training (docs/model.md §6): the config (config.py), the per-sample draws (draws.py), the one training step
(step.py), the lr schedule, the EMA, REPA, checkpoints on disk (state.py) and the loop (loop.py)."""
from .config import TrainConfig, resolve
from .step import StepResult, train_step

__all__ = ["StepResult", "TrainConfig", "resolve", "train_step"]
