"""The fp32 exponential moving average of a model's parameters (docs/model.md §6: EMA 0.9999; the CPU demo uses
0.999 with warm-up), sharded like the parameters under FSDP, saved and loaded in the model's checkpoint layout."""
from __future__ import annotations

import torch


class EMA:
    """fp32 exponential moving average of the parameters, updated with foreach lerp (one fused pass).
    With warm-up the decay is min(decay, (1 + n)/(10 + n)) at update n. ``state_dict`` speaks the checkpoint layout
    the model's own ``state_dict`` writes (the model's ``released_layout``/``model_layout``, when it has them)."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool):
        self.decay, self.warmup, self.updates = decay, warmup, 0
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for p in model.parameters()]
        self._saved_layout = getattr(model, "released_layout", lambda state: state)
        self._model_layout = getattr(model, "model_layout", lambda state: state)

    def decay_now(self) -> float:
        """The decay of the next update."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """shadow ← lerp(shadow, parameters, 1 − decay)."""
        torch._foreach_lerp_(self.shadow, [p.detach().float() for p in model.parameters()], 1 - self.decay_now())
        self.updates += 1

    def state_dict(self) -> dict:
        """The EMA weights in the model's checkpoint layout (buffers are not averaged)."""
        return self._saved_layout({n: _full(t).cpu() for n, t in zip(self.names, self.shadow)})

    def load_state_dict(self, state: dict, updates: int) -> None:
        """Restore the weights written by ``state_dict`` and the update count."""
        state = self._model_layout(dict(state))
        for n, t in zip(self.names, self.shadow):
            _copy_into(t, state[n])
        self.updates = updates


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a (possibly FSDP-sharded) parameter."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _copy_into(dst: torch.Tensor, full: torch.Tensor) -> None:
    if hasattr(dst, "full_tensor"):  # DTensor shard: take our slice of the full tensor
        from torch.distributed.tensor import distribute_tensor

        full = distribute_tensor(full.to(dst.device, dst.dtype), dst.device_mesh, dst.placements)
        dst.to_local().copy_(full.to_local())
    else:
        dst.copy_(full)
