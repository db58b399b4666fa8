"""The fast sampling path: Euler or a multistep solver (``ab2``, ``pc3``) with classifier-free guidance on static
buffers, one step captured in a CUDA graph and replayed N times (docs/model.md §7).

Each step is the same work on the same addresses — the model on the doubled batch [x, x] with labels
[null, y], the guidance v_u + w·(v_c − v_u) and the update — so a single graph serves all steps; only device
scalars change between replays (t, w — 1 outside the guidance interval — and the step's coefficients, copied from a
table computed before the first step). Euler's update is x ← x + Δt·v; the multistep update keeps the last three data
predictions and the previous state in static buffers and combines them with the ``StepPlan`` coefficients of
dip/diffusion/multistep.py (zero for history that does not apply, e.g. after a guidance switch), so the graph never
changes shape. Everything launched inside must be capturable: no host syncs (the model's input checks are switched
off), no allocation outside the graph's pool, kernels on the current stream (our Triton and CUDA ops are).

bf16: autocast's cache of cast weights cannot outlive a graph capture, so the weights and biases of Linear and Conv
layers — exactly the tensors autocast casts to bf16 on every call — are stored in bf16 once
(``store_autocast_weights``); the model computes the same numbers without the per-call casts.
"""
from __future__ import annotations

import torch
from torch import nn

from .grid import step_grid
from .multistep import HISTORY, MULTISTEP_ORDERS, plan_steps

AUTOCAST_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def store_autocast_weights(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast the parameters of Linear/Conv layers to ``dtype`` in place (what autocast feeds their kernels)."""
    for module in model.modules():
        if isinstance(module, AUTOCAST_LAYERS):
            module.to(dtype)
    return model


class GraphedSampler:
    """Euler / ``ab2`` / ``pc3`` + CFG for batches of up to ``batch`` images of ``model``, on preallocated buffers.

    ``capture=True`` (CUDA only) records one step as a CUDA graph after a warm-up on a side stream; with
    ``capture=False`` the same static-buffer step runs eagerly (any device: what the CPU tests check against the
    plain sampler). ``autocast``: the dtype of mixed precision (store the weights first, see module docstring) or
    None for fp32. Call it with noise (b ≤ batch, C, H, W) and labels (b,) → x₁ (b, C, H, W) float32.
    """

    def __init__(self, model: nn.Module, batch: int, *, null_label: int, cfg_scale: float,
                 autocast: torch.dtype | None = None, capture: bool = True, method: str = "euler"):
        param = next(model.parameters())
        if capture and param.device.type != "cuda":
            raise ValueError(f"CUDA-graph sampling needs the model on a CUDA device, got {param.device}")
        if method not in MULTISTEP_ORDERS:
            raise ValueError(f"graph sampling supports {list(MULTISTEP_ORDERS)}, got {method!r}")
        model.check_inputs = False  # value checks sync with the host: not allowed inside a capture
        self.model, self.batch, self.cfg_scale, self.autocast = model, batch, cfg_scale, autocast
        self.method, self.guided = method, cfg_scale != 1.0
        rows = 2 * batch if self.guided else batch
        device = param.device
        shape = (batch, model.in_channels, model.image_size, model.image_size)
        self.x = torch.zeros(shape, device=device)
        history = 0 if method == "euler" else HISTORY  # Euler keeps no history: no buffers for it
        self.x_prev = torch.zeros(shape if history else (0,), device=device)
        self.history = torch.zeros(history, *shape, device=device)  # x̂, x̂₋₁, x̂₋₂
        self.t = torch.zeros(rows, device=device)
        self.labels = torch.full((rows,), null_label, dtype=torch.long, device=device)
        self.scale = torch.ones((), device=device)
        self.coef = torch.zeros(11, device=device)  # StepPlan.coefficients()
        self.graph = self._capture() if capture else None

    def _step(self) -> None:
        """One step on the buffers; allocation-free apart from the graph's pool."""
        x = torch.cat([self.x, self.x]) if self.guided else self.x  # [unconditional, conditional]
        with torch.autocast(self.x.device.type, dtype=self.autocast or torch.bfloat16,
                            enabled=self.autocast is not None, cache_enabled=False):
            v = self.model(x, self.t, self.labels).float()
        if self.guided:
            v_u, v_c = v.chunk(2)
            v = v_u + self.scale * (v_c - v_u)
        c = self.coef
        if self.method == "euler":
            self.x.add_(c[10] * v)
            return
        h = self.history
        h[1:].copy_(h[:-1].clone())
        h[0].copy_(self.x + c[0] * v)
        self.x_prev.copy_(c[1] * self.x + c[2] * self.x_prev + c[3] * h[0] + c[4] * h[1] + c[5] * h[2])
        self.x.copy_(c[6] * self.x_prev + c[7] * h[0] + c[8] * h[1] + c[9] * h[2] + c[10] * v)

    @torch.no_grad()
    def _capture(self) -> torch.cuda.CUDAGraph:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2):  # warm-up: Triton compiles, cuBLAS/cuDNN handles and workspaces
                self._step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step()
        return graph

    @torch.no_grad()
    def __call__(self, noise: torch.Tensor, y: torch.Tensor, *, steps: int, interval: tuple = (0.0, 1.0),
                 shift: float = 1.0, interval_rule: str = "float32", schedule: str = "uniform") -> torch.Tensor:
        b = noise.shape[0]
        if not 1 <= b <= self.batch or tuple(noise.shape[1:]) != tuple(self.x.shape[1:]):
            raise ValueError(f"noise must be (1…{self.batch}, {', '.join(map(str, self.x.shape[1:]))}), "
                             f"got {tuple(noise.shape)}")
        for buffer in (self.x, self.x_prev, self.history):
            buffer.zero_()
        self.x[:b].copy_(noise)
        self.labels[-self.batch:][:b].copy_(y)  # the conditional half (padding rows: any label)
        points, guided = step_grid(steps, interval, shift=shift, schedule=schedule, rule=interval_rule)
        plans = plan_steps(points, guided, self.method)
        table = torch.tensor([p.coefficients() for p in plans], device=self.x.device)  # one copy for all steps
        for i, plan in enumerate(plans):
            self.t.fill_(plan.t)
            self.scale.fill_(self.cfg_scale if plan.guide else 1.0)
            self.coef.copy_(table[i])
            if self.graph is None:
                self._step()
            else:
                self.graph.replay()
        return self.x[:b].clone()
