"""Shared benchmark plumbing (docs/kernels.md §7): timing, reference rates, environment record, table and JSON
output."""
from __future__ import annotations

import datetime
import functools
import json
import math
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: dict, device: torch.device, reps: int = 20) -> dict:
    """Median milliseconds per call of each callable of ``fns`` (label → callable), timed in interleaved rounds:
    every round times each callable once, in an order rotated by one per round, so that clock, thermal and
    background drift fall on every variant alike and their ratios are measured under the same conditions
    (docs/kernels.md §7). One warm-up call each first (compilation, autotuning). On GPU every call is timed with
    CUDA events after the L2 cache is flushed (as triton's do_bench), for ``reps`` rounds or more: enough for about
    100 ms per callable on average, at most 1,000; on CPU by wall clock, ``reps`` rounds."""
    labels = list(fns)
    for label in labels:
        fns[label]()
    cuda = device.type == "cuda"
    rounds = max(reps, min(1000, math.ceil(100 / max(_mean_ms(fns, device), 1e-3)))) if cuda else reps
    flush = torch.empty(256 << 20, dtype=torch.int8, device=device) if cuda else None
    samples = {label: [] for label in labels}
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            samples[label].append(_timed_call(fns[label], flush))
    sync(device)
    return {label: statistics.median(_ms(s) for s in samples[label]) for label in labels}


def _mean_ms(fns: dict, device: torch.device) -> float:
    """Mean ms per call over the callables (three calls each, one synchronisation): sizes the rounds."""
    start = time.perf_counter()
    for fn in fns.values():
        for _ in range(3):
            fn()
    sync(device)
    return (time.perf_counter() - start) * 1e3 / (3 * len(fns))


def _timed_call(fn, flush: torch.Tensor | None):
    """One call's timing: a pair of recorded CUDA events after flushing L2 (read after the final
    synchronisation), or wall-clock milliseconds on CPU."""
    if flush is None:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    flush.zero_()
    events = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    events[0].record()
    fn()
    events[1].record()
    return events


def _ms(sample) -> float:
    return sample[0].elapsed_time(sample[1]) if isinstance(sample, tuple) else sample


def time_ms(fn, device: torch.device, reps: int = 20) -> float:
    """Median milliseconds per call of ``fn`` alone (``time_interleaved`` with one callable)."""
    return time_interleaved({"fn": fn}, device, reps)["fn"]


def time_graph_ms(fn, device: torch.device) -> float | None:
    """Median ms per call of ``fn`` replayed from a CUDA graph (launch overhead removed: what a captured sampling
    step sees), via triton's do_bench_cudagraph; None on CPU or when ``fn`` cannot be captured."""
    if device.type != "cuda":
        return None
    from triton.testing import do_bench_cudagraph

    try:
        return float(do_bench_cudagraph(fn, rep=100, return_mode="median"))
    except Exception as err:  # e.g. an op that synchronises: report, do not abort the table
        print(f"(no CUDA-graph timing: {type(err).__name__}: {err})")
        return None


def forward_only(fn, *args) -> None:
    """``fn(*args)`` without autograd: what a forward timing runs."""
    with torch.no_grad():
        fn(*args)


def autograd_calls(fn, args, device: torch.device, grad_shapes=None) -> dict:
    """{"fwd", "bwd", "fwd+bwd"} → callable: fn(*args) forward (no grad), backward alone (on a kept graph) and
    forward+backward, with gradients w.r.t. every tensor argument that requires grad (views included); to be
    timed together with other implementations' calls by ``time_interleaved``."""
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def outputs():
        out = fn(*args)
        return out if isinstance(out, tuple) else (out,)

    kept = outputs()
    shapes = grad_shapes or [o.shape for o in kept]
    grads = [torch.randn(s, device=device).to(o.dtype) for s, o in zip(shapes, kept)]

    def backward(outs):
        torch.autograd.grad(outs, leaves, grads, retain_graph=True)

    return {"fwd": functools.partial(forward_only, fn, *args), "bwd": lambda: backward(kept),
            "fwd+bwd": lambda: backward(outputs())}


def time_variants(variants: dict, args, device: torch.device, reps: int, grad_shapes=None) -> dict:
    """label → {"fwd", "bwd", "fwd+bwd"} median ms of each implementation of one op on the same ``args``, every
    (implementation, mode) call interleaved with the others (``time_interleaved``)."""
    calls = {(label, mode): call for label, fn in variants.items()
             for mode, call in autograd_calls(fn, args, device, grad_shapes).items()}
    times = time_interleaved(calls, device, reps)
    return {label: {mode: times[(label, mode)] for mode in ("fwd", "bwd", "fwd+bwd")} for label in variants}


def gemm_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """A large dense GEMM's rate in this run (the ceiling TFLOP/s are compared with)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = time_ms(lambda: a @ b, device, reps=10)
    return 2 * n**3 / (ms * 1e-3) / 1e12


def copy_gbps(device: torch.device) -> float:
    """Device copy bandwidth in this run (read + write bytes per second), the ceiling for memory-bound ops."""
    n = (1 << 28) if device.type == "cuda" else (1 << 24)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    ms = time_ms(lambda: dst.copy_(src), device, reps=20)
    return 2 * n / (ms * 1e-3) / 1e9


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def environment(device: torch.device) -> dict:
    """Date, hardware and versions, recorded next to every number."""
    import triton

    arch = None
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        arch = "sm_%d%d" % torch.cuda.get_device_capability(device)
    else:
        name = f"CPU ({platform.machine()}, {torch.get_num_threads()} threads)"
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "device": name,
            "arch": arch,
            "torch": torch.__version__, "triton": triton.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "commit": _commit()}


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Fixed-width table of ``rows`` (dicts) over ``columns``."""
    cells = [[_fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return "-" if v is None else str(v)


def write_json(path: str | None, payload: dict) -> None:
    """Write ``payload`` to ``path`` (parents created) when a path is given."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(payload, indent=2))
        print(f"wrote {path}")
