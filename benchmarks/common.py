"""Shared benchmark plumbing (docs/kernels.md §7): timing, reference rates, environment record, table and JSON
output."""
from __future__ import annotations

import datetime
import json
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


def time_ms(fn, device: torch.device, reps: int = 20) -> float:
    """Median milliseconds per call: CUDA events with L2 flushed (triton's do_bench, 25 ms warm-up, ≥100 ms of
    repetitions) on GPU; wall clock after one warm-up call (compilation) on CPU."""
    if device.type == "cuda":
        from triton.testing import do_bench

        return float(do_bench(fn, warmup=25, rep=max(100, reps), return_mode="median"))
    fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return statistics.median(samples)


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


def time_autograd(fn, args, device: torch.device, reps: int, grad_shapes=None, graph: bool = False) -> dict:
    """Median ms of fn(*args) forward (no grad), backward alone (on a kept graph) and forward+backward, with
    gradients w.r.t. every tensor argument that requires grad (views included); with ``graph`` also the forward
    replayed from a CUDA graph ("fwd graph")."""
    leaves = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]

    def outputs():
        out = fn(*args)
        return out if isinstance(out, tuple) else (out,)

    def fwd():
        with torch.no_grad():
            fn(*args)

    kept = outputs()
    shapes = grad_shapes or [o.shape for o in kept]
    grads = [torch.randn(s, device=device).to(o.dtype) for s, o in zip(shapes, kept)]

    def backward(outs):
        torch.autograd.grad(outs, leaves, grads, retain_graph=True)

    times = {"fwd": time_ms(fwd, device, reps), "bwd": time_ms(lambda: backward(kept), device, reps),
             "fwd+bwd": time_ms(lambda: backward(outputs()), device, reps)}
    if graph:
        times["fwd graph"] = time_graph_ms(fwd, device)
    return times


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
