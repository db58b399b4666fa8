"""The fp32 exponential moving average of a model's parameters (docs/model.md §6: EMA 0.9999; the CPU demo uses
0.999 with warm-up), sharded like the parameters under FSDP, saved and loaded in the model's checkpoint layout."""
from __future__ import annotations

import torch


class EMA:
    """fp32 exponential moving average of the parameters, updated with foreach lerp (one fused pass).
    With warm-up the decay is min(decay, (1 + n)/(10 + n)) at update n. The update count lives on the device and an
    update can be made conditional on a device flag (a skipped training step), so updating never waits for the
    device. ``state_dict`` speaks the checkpoint layout the model's own ``state_dict`` writes (the model's
    ``released_layout``/``model_layout``, when it has them)."""

    def __init__(self, model: torch.nn.Module, decay: float, warmup: bool):
        self.decay, self.warmup = decay, warmup
        self.names = [n for n, _ in model.named_parameters()]
        self.shadow = [p.detach().float().clone() for p in model.parameters()]
        self.count = torch.zeros((), dtype=torch.int64, device=self.shadow[0].device if self.shadow else "cpu")
        self._saved_layout = getattr(model, "released_layout", lambda state: state)
        self._model_layout = getattr(model, "model_layout", lambda state: state)

    @property
    def updates(self) -> int:
        """Updates applied so far (reads the device counter)."""
        return int(self.count)

    def _decay(self) -> torch.Tensor:
        """The decay of the next update, a float64 device scalar (the same value as the Python formula)."""
        if not self.warmup:
            return torch.full((), self.decay, dtype=torch.float64, device=self.count.device)
        n = self.count.double()
        return torch.clamp((1 + n) / (10 + n), max=self.decay)

    def decay_now(self) -> float:
        """The decay of the next update (reads the device)."""
        return float(self._decay())

    @torch.no_grad()
    def update(self, model: torch.nn.Module, applied: torch.Tensor | None = None) -> None:
        """shadow ← lerp(shadow, parameters, 1 − decay); with ``applied`` (a bool device scalar) only where it is true,
        else the shadow and the count stay bitwise unchanged (lerp weight 0) — no host synchronisation either way."""
        weight = 1 - self._decay()
        if applied is not None:
            weight = weight * applied
        shadow = [_local(t) for t in self.shadow]
        params = [_local(p.detach()).float() for p in model.parameters()]
        weight = weight.float()
        torch._foreach_lerp_(shadow, params, [weight.expand_as(t) for t in shadow])
        self.count += 1 if applied is None else applied

    def state_dict(self) -> dict:
        """The EMA weights in the model's checkpoint layout (buffers are not averaged)."""
        return self._saved_layout({n: _full(t).cpu() for n, t in zip(self.names, self.shadow)})

    def load_state_dict(self, state: dict, updates: int) -> None:
        """Restore the weights written by ``state_dict`` and the update count."""
        state = self._model_layout(dict(state))
        for n, t in zip(self.names, self.shadow):
            _copy_into(t, state[n])
        self.count.fill_(updates)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a (possibly FSDP-sharded) tensor: the EMA is elementwise, so shards update alone."""
    return t.to_local() if hasattr(t, "to_local") else t


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
