"""The learning-rate schedule (docs/model.md §6): constant (the paper's), optionally decayed linearly to 0 over a
final fraction of the steps."""
from __future__ import annotations


def learning_rate(step: int, lr: float, steps: int | None, decay_fraction: float) -> float:
    """The lr of step ``step`` (0-based) of ``steps``: ``lr``, then over the last ``round(decay_fraction·steps)``
    steps linear to 0 such that the final step still moves (lr/decay_steps); a pure function of the step, so a
    resumed run recomputes the same value (``resolve`` refuses a fraction that rounds to fewer than 2 steps)."""
    decay_steps = round(decay_fraction * steps) if steps else 0
    if decay_steps == 0 or step < steps - decay_steps:
        return lr
    return lr * (steps - step) / decay_steps
