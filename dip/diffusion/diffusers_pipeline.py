"""DiP as a diffusers pipeline (docs/model.md §7.3): ``DiPPipeline(transformer=model, scheduler=...)`` with any of
diffusers' flow-matching schedulers — ``FlowMatchEulerDiscreteScheduler``, ``DPMSolverMultistepScheduler`` and
``UniPCMultistepScheduler`` with ``use_flow_sigmas=True, prediction_type="flow_prediction"``.

diffusers counts flow time the other way: σ = 1 − t (σ = 1 noise, σ = 0 data), x_σ = (1 − σ)·x + σ·ε, and its
"flow" output is dx/dσ = ε − x = −v. The adapter evaluates DiP at t = 1 − σ (the scheduler's own σ of the step, not
the rounded timestep) and hands the scheduler −v; guidance is DiP's: both CFG halves while low < t < high, the
conditional model elsewhere (``skip_uncond`` as in dip.sample). Pass ``sigmas=flow_sigmas(N, shift)`` to a scheduler
that takes custom sigmas to run on DiP's own grid; with the Euler scheduler that reproduces ``dip.diffusion.sample``.

diffusers is an optional extra (``pip install -e '.[hub]'``); ``import dip`` does not import this module.
"""
from __future__ import annotations

import inspect

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput

from .grid import in_interval, time_points
from .guidance import guided_velocity


def flow_sigmas(steps: int, shift: float = 1.0, schedule: str = "uniform") -> list:
    """DiP's time grid as diffusers sigmas: σ_i = 1 − t_i for the N step starts (the scheduler appends σ = 0)."""
    return [1.0 - t for t in time_points(steps, shift, schedule)[:-1]]


class DiPPipeline(DiffusionPipeline):
    """Class-conditional sampling of a DiP with a diffusers flow-matching scheduler (docs/model.md §7.3)."""

    model_cpu_offload_seq = "transformer"

    def __init__(self, transformer, scheduler):
        super().__init__()
        self.register_modules(transformer=transformer, scheduler=scheduler)

    def velocity(self, x: torch.Tensor, sigma: float, labels: torch.Tensor, guidance_scale: float,
                 guidance_interval: tuple, skip_uncond: bool) -> torch.Tensor:
        """DiP's guided velocity v at t = 1 − σ (fp32), guidance decided on float32 t as the authors do."""
        t = 1.0 - sigma
        guide = in_interval(float(np.float32(t)), guidance_interval, inclusive_high=False)
        return guided_velocity(self.transformer, x, t, labels, self.transformer.num_classes, guidance_scale,
                               guide, skip_uncond)

    @torch.no_grad()
    def __call__(self, class_labels, *, num_inference_steps: int = 100, guidance_scale: float = 2.9,
                 guidance_interval: tuple = (0.11, 0.97), skip_uncond: bool = False, sigmas: list | None = None,
                 generator: torch.Generator | list | None = None, latents: torch.Tensor | None = None,
                 output_type: str = "pil", return_dict: bool = True):
        """Images for ``class_labels`` (ints): ``latents`` is the noise at t = 0 (drawn with ``generator`` when
        absent); ``sigmas`` a custom grid (``flow_sigmas``) for schedulers whose ``set_timesteps`` takes one.
        ``output_type``: "pil", "np" (B, H, W, C floats in [0, 1]) or "pt" (B, C, H, W in [-1, 1])."""
        model = self.transformer
        device = next(model.parameters()).device
        labels = self._labels(class_labels, device)
        self._check_settings(num_inference_steps, guidance_interval, output_type)
        shape = (len(labels), model.in_channels, model.image_size, model.image_size)
        x = self._latents(shape, generator, latents).to(device).float()
        self.scheduler.set_timesteps(**self._grid(num_inference_steps, sigmas), device=device)
        for i, timestep in enumerate(self.progress_bar(self.scheduler.timesteps)):
            sigma = float(self.scheduler.sigmas[i])
            v = self.velocity(x, sigma, labels, guidance_scale, guidance_interval, skip_uncond)
            x = self.scheduler.step(-v, timestep, x).prev_sample.float()
        return self._output(x, output_type, return_dict)

    def _labels(self, class_labels, device) -> torch.Tensor:
        """(B,) int64 labels in 0 … K (K: the null class); anything else is a ``ValueError`` naming it."""
        values = list(class_labels) if isinstance(class_labels, (list, tuple)) else class_labels
        if torch.is_tensor(values):
            ok = not values.is_floating_point() and not values.is_complex() and values.dtype != torch.bool
            values = values.view(-1).tolist() if ok else values
        else:
            values = [values] if not isinstance(values, list) else values
            ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values)
        K = self.transformer.num_classes
        if not ok or not values or not all(0 <= int(v) <= K for v in values):
            raise ValueError(f"class_labels must be integers in 0 … {K} ({K}: the null class), got {class_labels!r}")
        return torch.tensor([int(v) for v in values], dtype=torch.long, device=device)

    def _check_settings(self, steps, interval, output_type) -> None:
        """Every argument checked before the first step (the scheduler must be a flow-matching one)."""
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"num_inference_steps must be an integer ≥ 1, got {steps!r}")
        low, high = interval
        if not 0 <= low <= high <= 1:
            raise ValueError(f"guidance_interval must be (low, high) with 0 ≤ low ≤ high ≤ 1, got {tuple(interval)}")
        if output_type not in ("pil", "np", "pt"):
            raise ValueError(f"output_type must be 'pil', 'np' or 'pt', got {output_type!r}")
        name = type(self.scheduler).__name__
        if not (name.startswith("FlowMatch") or getattr(self.scheduler.config, "use_flow_sigmas", False)):
            raise ValueError(f"{name} is not a flow-matching scheduler: use FlowMatchEulerDiscreteScheduler, or "
                             f"DPMSolverMultistep / UniPCMultistep with use_flow_sigmas=True and "
                             f"prediction_type='flow_prediction'")

    @staticmethod
    def _latents(shape: tuple, generator, latents) -> torch.Tensor:
        """The noise at t = 0: ``latents`` (checked against ``shape``), else drawn with ``generator`` (one, or one per
        sample)."""
        if latents is not None:
            if tuple(latents.shape) != shape:
                raise ValueError(f"latents must be {shape} (one per label), got {tuple(latents.shape)}")
            return latents
        if isinstance(generator, (list, tuple)):
            if len(generator) != shape[0]:
                raise ValueError(f"generator: one per label expected ({shape[0]}), got a list of {len(generator)}")
            return torch.stack([torch.randn(shape[1:], generator=g, device=g.device).cpu() for g in generator])
        return torch.randn(shape, generator=generator, device=generator.device if generator else "cpu")

    def _grid(self, steps: int, sigmas: list | None) -> dict:
        if sigmas is None:
            return {"num_inference_steps": steps}
        if "sigmas" not in inspect.signature(self.scheduler.set_timesteps).parameters:
            raise ValueError(f"{type(self.scheduler).__name__}.set_timesteps takes no custom sigmas")
        return {"sigmas": list(sigmas)}

    def _output(self, x: torch.Tensor, output_type: str, return_dict: bool):
        if output_type == "pt":
            images = x
        else:
            images = ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
            if output_type == "pil":
                images = self.numpy_to_pil(images)
        return ImagePipelineOutput(images=images) if return_dict else (images,)
