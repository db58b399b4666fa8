"""Process-group set-up shared by training, sampling and evaluation under torchrun (gloo on CPU, NCCL on GPU)."""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def init_distributed(device: str = "auto") -> tuple[int, int, torch.device]:
    """(rank, world size, device) from torchrun's environment; gloo on CPU, NCCL on GPU. ``device``: auto (CUDA
    when present), cpu or cuda."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if device == "cuda" or (device == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device
