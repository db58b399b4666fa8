"""Input checks of ``DiP.forward``: a ``ValueError`` naming the argument and what was expected.

Shape, dtype and device checks read metadata only. Value checks (finite x and t, label range, t in [0, 1]) read
the tensors, which costs a device sync on CUDA: they run while ``model.check_inputs`` is true and outside
torch.compile tracing; turn them off for CUDA-graph capture.
"""
from __future__ import annotations

import torch


def _device_of(model) -> torch.device:
    return model.s_embedder.proj.weight.device


def _check_image(model, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != model.in_channels:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (B, {model.in_channels}, H, W) image tensor, got {shape}")
    P = model.patch_size
    if x.shape[2] % P or x.shape[3] % P:
        raise ValueError(f"x height and width must be divisible by the patch size {P}, got {x.shape[2]}×{x.shape[3]}")
    if x.shape[0] == 0:
        raise ValueError("x must hold at least one image (B ≥ 1), got B = 0")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating-point tensor, got {x.dtype}")
    param_dtype = model.s_embedder.proj.weight.dtype
    if x.dtype == torch.float64 and torch.is_autocast_enabled(x.device.type):
        raise ValueError("x must be float32, bfloat16 or float16 under autocast (autocast does not run float64), "
                         "got float64")
    if x.dtype != param_dtype and not torch.is_autocast_enabled(x.device.type):
        raise ValueError(f"x dtype must match the model's parameters ({param_dtype}) outside autocast, got {x.dtype}")


def _check_time(x: torch.Tensor, t: torch.Tensor) -> None:
    B = x.shape[0]
    if not isinstance(t, torch.Tensor) or t.shape != (B,):
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"t must have shape (B,) = ({B},), got {shape}")
    if not t.is_floating_point():
        raise ValueError(f"t must be a floating-point tensor of times in [0, 1], got {t.dtype}")


def _check_labels(model, x: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
    B = x.shape[0]
    if y is None:
        return torch.full((B,), model.num_classes, dtype=torch.long, device=x.device)
    if not isinstance(y, torch.Tensor) or y.shape != (B,):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise ValueError(f"y must have shape (B,) = ({B},), got {shape}")
    if y.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"y must be an int64 (or int32) tensor of labels, got {y.dtype}")
    return y


def _check_devices(model, **tensors: torch.Tensor) -> None:
    device = _device_of(model)
    for name, tensor in tensors.items():
        if tensor.device != device:
            raise ValueError(f"{name} must be on the model's device {device}, got {tensor.device}")


def _check_values(model, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> None:
    if not bool(torch.isfinite(x).all()):
        raise ValueError("x holds NaN or inf values")
    if not bool(torch.isfinite(t).all()):
        raise ValueError("t holds NaN or inf values (expected times in [0, 1])")
    K = model.num_classes
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > K):
        what = "only 0 (the null row) for an unconditional model" if K == 0 else f"0..{K} ({K} = null class)"
        raise ValueError(f"y labels must be in {what}, got values in [{int(y.min())}, {int(y.max())}]")
    if t.numel() and not bool(((t >= 0) & (t <= 1)).all()):
        raise ValueError(f"t must be in [0, 1] (0 = noise, 1 = data), got values in "
                         f"[{float(t.min()):.4g}, {float(t.max()):.4g}]")


def validate_inputs(model, x, t, y):
    """Check (x, t, y) against the model; returns y (the null class where y is None)."""
    _check_image(model, x)
    _check_time(x, t)
    y = _check_labels(model, x, y)
    _check_devices(model, x=x, t=t, y=y)
    if model.check_inputs and not torch.compiler.is_compiling() and x.device.type != "meta":  # meta: no values
        _check_values(model, x, t, y)
    return y
