"""Why a CPU run is slower than its estimate (docs/model.md §6): other processes on the cores, or more torch threads
than free cores."""
from __future__ import annotations

import os

import torch


def slowdown_reason() -> str:
    """Why a CPU run may be slow: other processes on the cores, or more torch threads than free cores."""
    cores, threads = os.cpu_count() or 1, torch.get_num_threads()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    others = max(0.0, load - threads)
    if others >= 0.5:
        return (f"other processes are using the cores (load average {load:.1f} on {cores} cores, this run uses "
                f"{threads} threads)")
    if threads > cores:
        return f"torch uses {threads} threads on {cores} cores"
    return "no other load seen; a slower CPU than the one the estimate was measured on"
