"""The training step (docs/model.md §6): one optimizer step over a global batch, as a plain function of the model,
the optimizer, the EMA and the batch. ``dip.train`` runs it, and so does every benchmark and script that trains.

It makes no host synchronisation: gradient accumulation over micro-batches (DDP all-reduces only on the last), the
global gradient norm (clipped when asked), and the decision to skip a step whose loss or gradient is not finite —
made on the device, as ``GradScaler``'s found-inf is: a fused optimizer takes the flag itself, any other steps and
then keeps its previous parameters and state where the flag says so; the EMA update is weighted by the flag. The
loss comes back as a device tensor for the logger to read when it logs.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable, Iterable, NamedTuple

import torch

from .ema import EMA


class StepResult(NamedTuple):
    """What a step returns, on the device: the mean loss over its micro-batches (fp32 scalar, this rank's) and
    whether the update was applied (bool scalar: false when the loss or the gradient norm was not finite)."""

    loss: torch.Tensor
    applied: torch.Tensor


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ema: EMA | None, batches: Iterable,
               loss_fn: Callable, *, grad_clip: float | None = None, lr: float | None = None) -> StepResult:
    """One optimizer step: ``loss_fn(batch)`` (a scalar, the model's forward inside) on each micro-batch of
    ``batches`` (a sequence: its length is the accumulation count), backward, clip to ``grad_clip`` (None: no clip),
    then the optimizer step with ``lr`` (None: as set) and ``ema.update(model)``, both only if every value was
    finite. ``model`` is what ``loss_fn`` calls (DDP-wrapped or not): a DDP model syncs gradients on the last
    micro-batch only."""
    batches = list(batches)
    total = None
    for i, batch in enumerate(batches):
        sync = i == len(batches) - 1 or not isinstance(model, torch.nn.parallel.DistributedDataParallel)
        with nullcontext() if sync else model.no_sync():
            loss = loss_fn(batch) / len(batches)
            loss.backward()
        total = loss.detach() if total is None else total + loss.detach()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    if lr is not None:
        for group in optimizer.param_groups:
            group["lr"] = lr
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip or float("inf"))
    norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP: the norm over every shard
    applied = torch.isfinite(norm) & torch.isfinite(total)
    optimizer_step_if(optimizer, applied)
    if ema is not None:
        ema.update(model, applied)
    optimizer.zero_grad(set_to_none=True)
    return StepResult(total, applied)


def build_optimizer(params, *, lr: float, betas: tuple, weight_decay: float, device: torch.device):
    """The AdamW the step expects (docs/model.md §6): fused on CUDA (it takes the skip flag in its kernel), foreach
    elsewhere (the numerics the CPU demo was measured with)."""
    kind = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, **kind)


def optimizer_step_if(optimizer: torch.optim.Optimizer, applied: torch.Tensor) -> None:
    """``optimizer.step()`` where the device flag ``applied`` is true; otherwise parameters and optimizer state stay
    bitwise unchanged. A fused optimizer gets the flag as its ``found_inf`` (it skips the update in its kernel, as
    under ``GradScaler``); any other steps, then takes back its previous values with ``torch.where`` (a copy of the
    parameters and state per step: the path of foreach AdamW on the CPU, where dip.train keeps its exact numerics)."""
    if optimizer.defaults.get("fused"):
        optimizer.grad_scale, optimizer.found_inf = None, (~applied).float()
        try:
            optimizer.step()
        finally:
            del optimizer.grad_scale, optimizer.found_inf
        return
    before = _stepped_tensors(optimizer)
    saved = [t.clone() for t in before.values()]
    optimizer.step()
    after = _stepped_tensors(optimizer)
    for key, old in zip(before, saved):
        new = after[key]
        new.copy_(torch.where(applied.to(new.device), new, old))
    for key, new in after.items():  # state created by this step (the first): back to its initial zeros
        if key not in before:
            new.copy_(torch.where(applied.to(new.device), new, torch.zeros_like(new)))


def _stepped_tensors(optimizer: torch.optim.Optimizer) -> dict:
    """{(parameter index, state name or None): tensor} of every parameter with a gradient and its state tensors (this
    rank's shard of an FSDP-sharded one: the restore is elementwise)."""
    out = {}
    for i, p in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        if p.grad is None:
            continue
        out[(i, None)] = _local(p.data)
        for name, value in optimizer.state.get(p, {}).items():
            if torch.is_tensor(value):
                out[(i, name)] = _local(value)
    return out


def _local(t: torch.Tensor) -> torch.Tensor:
    """The local shard of a DTensor (a view of its storage), else ``t``."""
    return t.to_local() if hasattr(t, "to_local") else t
