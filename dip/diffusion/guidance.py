"""Classifier-free guidance (docs/model.md §7): the guided velocity v_u + w·(v_c − v_u) inside the guidance interval,
v_c outside, from one model call on the doubled batch; a ``GuidedField`` binds a model, its labels and the guidance
settings into the vector field every solver integrates."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch

Model = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def guided_velocity(model: Model, x: torch.Tensor, t: float, y: torch.Tensor, null_label: int, cfg_scale: float,
                    guide: bool, skip_uncond: bool = False) -> torch.Tensor:
    """The CFG velocity at time t (§7): one model call on the doubled batch [unconditional, conditional];
    v_u + w·(v_c − v_u) when ``guide``, else v_c, in fp32. ``skip_uncond`` evaluates only the conditional half when not
    guiding (a speed-up, off by default so timings compare with the authors')."""
    B = x.shape[0]
    if cfg_scale == 1.0 or (skip_uncond and not guide):
        return model(x, torch.full((B,), t, device=x.device), y).float()
    labels = torch.cat([torch.full_like(y, null_label), y])
    v = model(torch.cat([x, x]), torch.full((2 * B,), t, device=x.device), labels).float()
    v_u, v_c = v.chunk(2)  # guidance in fp32 whatever the model's output dtype
    return v_u + cfg_scale * (v_c - v_u) if guide else v_c


@dataclass(frozen=True, eq=False)
class GuidedField:
    """The vector field every solver integrates (docs/model.md §7): ``field(x, t, guide)`` → the guided velocity of
    ``model`` for ``labels`` (B,) at time t (fp32), guided when ``guide`` (the solver's per-step interval decision).
    ``of_sample(b)`` is the same field for sample b alone (the per-sample adaptive reference)."""

    model: Model
    labels: torch.Tensor
    null_label: int
    cfg_scale: float = 1.0
    skip_uncond: bool = False

    @property
    def guided_anywhere(self) -> bool:
        """Whether guidance changes the field anywhere (scale ≠ 1)."""
        return self.cfg_scale != 1.0

    def __call__(self, x: torch.Tensor, t: float, guide: bool) -> torch.Tensor:
        return guided_velocity(self.model, x, t, self.labels, self.null_label, self.cfg_scale, guide,
                               self.skip_uncond)

    def of_sample(self, b: int) -> "GuidedField":
        """The field of sample ``b`` alone (its label)."""
        return replace(self, labels=self.labels[b:b + 1])
