"""Capture every kernel launch of one training step without a GPU (the first half of benchmarks/tools/kernel_report.py).

Run as a subprocess of the report, with ``TRITON_INTERPRET=1`` and ``DIP_CUDA_EMULATE=1`` set before dip_kernels
is imported and ``DIP_LAUNCH_AS_SMS`` set to the GPU's multiprocessor count, so that every launcher picks the
tiles and split counts it would pick on that GPU. One forward and backward of a preset under bf16 autocast on CPU
tensors; each Triton launch and each CUDA kernel launch is recorded and **skipped** (outputs stay unwritten:
only shapes, dtypes, strides and alignment matter here; the CUDA extension's emulated twin runs its real launchers
in a dry run, so each launch is recorded as the template instantiation, grid and block they pick), and so are the
heavy reference ops around them (GEMMs, attention, convolutions: their outputs are allocated from their meta
kernels' shapes), so that a step at the real batch costs seconds. Every zero-fill, copy and concatenation that
runs in the step is counted with its bytes, attributed to the kernel layer (called from dip_kernels code) or to the
autograd engine / model.

    python benchmarks/tools/kernel_capture.py BACKEND PRESET BATCH DEPTH OUT.json
"""
from __future__ import annotations

import functools
import inspect
import json
import math
import subprocess
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ZERO_FILLS = {"zeros", "zero_", "zeros_like", "new_zeros", "fill_"}
HEAVY = {"mm", "addmm", "bmm", "baddbmm", "convolution", "convolution_backward", "_scaled_dot_product_flash_attention",
         "_scaled_dot_product_flash_attention_backward", "_scaled_dot_product_efficient_attention",
         "_scaled_dot_product_efficient_attention_backward", "_flash_attention_forward", "_flash_attention_backward"}
COPIES = {"clone", "copy_", "_to_copy", "contiguous", "cat", "stack"}
PARTIAL_NAMES = ("p_", "part", "pw_")


def _describe(name: str, value) -> dict:
    """A launch argument as the compile step needs it (tensors: dtype, alignment, bytes; the rest as is)."""
    if isinstance(value, torch.Tensor):
        return {"name": name, "tensor": str(value.dtype).replace("torch.", ""), "aligned16": value.data_ptr() % 16 == 0,
                "bytes": value.numel() * value.element_size(), "partial": name.startswith(PARTIAL_NAMES),
                "ptr": value.data_ptr()}
    if hasattr(value, "value"):  # tl.constexpr
        value = value.value
    if hasattr(value, "primitive_bitwidth"):  # a tl.dtype constexpr (the matmul compute dtype)
        return {"name": name, "tl_dtype": str(value)}
    if isinstance(value, torch.dtype):
        value = str(value)
    return {"name": name, "value": value if isinstance(value, (int, float, str, type(None))) else repr(value)}


class Recorder:
    """Records launches (``triton``: kernel, grid, arguments; ``cuda``: extension function and arguments) and the
    glue ops of the step."""

    def __init__(self):
        self.launches, self.glue = [], {}

    def triton_launch(self, fn, grid, args, kwargs) -> None:
        names = list(inspect.signature(fn).parameters)
        bound = dict(zip(names, args), **{k: v for k, v in kwargs.items() if k in names})
        options = {k: v for k, v in kwargs.items() if k not in names}
        grid = tuple(grid) + (1,) * (3 - len(grid))
        self.launches.append({"backend": "triton", "module": fn.__module__, "kernel": fn.__name__,
                              "grid": list(grid), "args": [_describe(n, bound[n]) for n in names if n in bound],
                              "options": {k: v for k, v in options.items() if isinstance(v, (int, float))},
                              "op": _op_of(fn.__module__)})

    def cuda_launch(self, entry: str, launch: dict, kernel: str) -> None:
        self.launches.append({"backend": "cuda", "entry": entry, "kernel": kernel, "grid": list(launch["grid"]),
                              "block": math.prod(launch["block"]), "shared": launch["shared"], "op": _caller_op()})

    def glue_op(self, name: str, nbytes: int) -> None:
        kind = "zero_fill" if name in ZERO_FILLS else "copy"
        where = _caller_op() or "autograd/model"
        entry = self.glue.setdefault(f"{where}:{kind}:{name}", {"where": where, "kind": kind, "op": name,
                                                                  "calls": 0, "bytes": 0})
        entry["calls"] += 1
        entry["bytes"] += nbytes


def _op_of(module: str) -> str:
    """dip_kernels.block_boundary.triton → block_boundary."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "dip_kernels" else parts[-1]


def _caller_op() -> str | None:
    """The dip_kernels op package whose kernel-layer code called into here ("reference" for the reference ops a
    backend falls back to), if any."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.startswith("dip_kernels.") and module.count(".") >= 2:
            return "reference" if module.endswith(".reference") else _op_of(module)
        frame = frame.f_back
    return None


def _shape_only(func, args, kwargs):
    """``func``'s outputs, allocated (unwritten) from its meta kernel: the heavy ops' values are not needed. A
    convolution's activation output is channels_last when its input (or, backward, its input or output gradient)
    is — what cuDNN and oneDNN return and the meta kernels do not."""
    to_meta = lambda a: a.to("meta") if isinstance(a, torch.Tensor) else a  # noqa: E731
    out = func(*torch.utils._pytree.tree_map(to_meta, args), **torch.utils._pytree.tree_map(to_meta, kwargs))
    real = lambda t: torch.empty_strided(t.shape, t.stride(), dtype=t.dtype) if isinstance(t, torch.Tensor) else t  # noqa
    out = torch.utils._pytree.tree_map(real, out)
    name = func.overloadpacket.__name__
    if name == "convolution" and _channels_last(args[0]):
        return out.contiguous(memory_format=torch.channels_last)
    if name == "convolution_backward" and out[0] is not None and (_channels_last(args[0]) or _channels_last(args[1])):
        return (out[0].contiguous(memory_format=torch.channels_last), *out[1:])
    return out


def _channels_last(t) -> bool:
    """Unambiguously channels_last (a 4-D tensor that is not also plain contiguous)."""
    return isinstance(t, torch.Tensor) and t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last) \
        and not t.is_contiguous()


class GlueCounter(TorchDispatchMode):
    """Counts the bytes written by zero-fills and copies; runs the heavy ops shape-only."""

    def __init__(self, recorder: Recorder):
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name in HEAVY:
            return _shape_only(func, args, kwargs or {})
        out = func(*args, **(kwargs or {}))
        if name in ZERO_FILLS | COPIES and (name != "fill_" or (len(args) > 1 and args[1] == 0)):
            first = out if isinstance(out, torch.Tensor) else None
            if first is not None:
                self.recorder.glue_op(name, first.numel() * first.element_size())
        return out


def kernel_symbols(path: str) -> dict:
    """{address: symbol} of the kernels defined in the shared object at ``path`` (nm)."""
    listing = subprocess.run(["nm", "--defined-only", path], capture_output=True, text=True, check=True).stdout
    return {int(address, 16): symbol for address, _, symbol in
            (line.split() for line in listing.splitlines() if line.count(" ") == 2) if "_kernel" in symbol}


def _dry_run_extension(recorder: Recorder):
    """The emulated extension in a dry run: each entry point runs its real launcher, whose kernel launches are
    recorded by instantiation (named as the cubins name them, benchmarks/tools/kernel_compile.py) and not run."""
    from benchmarks.tools.kernel_compile import demangle
    from dip_kernels import cuda_ext

    real = cuda_ext.extension()
    real.set_dry_run(True)
    symbols, names = kernel_symbols(real.__file__), {}

    def entry(name: str):
        def call(*args):
            getattr(real, name)(*args)
            for launch in real.take_launches():
                if launch["offset"] not in names:
                    names[launch["offset"]] = demangle(symbols[launch["offset"]])
                recorder.cuda_launch(name, launch, names[launch["offset"]])
        return call

    class Extension:
        def __getattr__(self, name):
            return real.device_count if name == "device_count" else entry(name)

    return Extension()


def _patch_launches(recorder: Recorder) -> None:
    from triton.runtime.interpreter import InterpretedFunction

    def run(self, *args, grid, warmup, **kwargs):
        if not warmup:
            recorder.triton_launch(self.fn, grid, args, kwargs)

    InterpretedFunction.run = run
    from dip_kernels import cuda_ext

    cuda_ext.require = functools.cache(lambda: _dry_run_extension(recorder))  # built on the first CUDA call
    for name, module in list(sys.modules.items()):  # launchers imported `require` by name
        if getattr(module, "require", None) is not None and name.startswith("dip_kernels."):
            module.require = cuda_ext.require
        if name.startswith("dip_kernels.") and name.endswith(".cuda"):  # tensors of each CUDA launch, for traffic
            for fn_name, fn in list(vars(module).items()):
                if fn_name.startswith("launch_") and callable(fn):
                    setattr(module, fn_name, _recording(fn, recorder))


def _recording(fn, recorder: Recorder):
    """``fn`` (a CUDA launcher taking tensors) that also records its tensor arguments."""
    names = list(inspect.signature(fn).parameters)

    def launcher(*args, **kwargs):
        bound = dict(zip(names, args), **kwargs)
        recorder.launches.append({"backend": "cuda-launcher", "module": fn.__module__, "kernel": fn.__name__,
                                  "op": _op_of(fn.__module__), "args": [
                                      _describe(n, v) for n, v in bound.items() if isinstance(v, torch.Tensor)]})
        return fn(*args, **kwargs)

    return launcher


def capture(backend: str, preset: str, batch: int, depth: int) -> dict:
    """Launches and glue of one bf16 training step of ``preset`` (depth overridden) with ``kernels=backend``."""
    from dip import create_model

    recorder = Recorder()
    _patch_launches(recorder)
    torch.manual_seed(0)
    model = create_model(preset, depth=depth, kernels=backend)
    model.check_inputs = False
    size = model.image_size
    x = torch.randn(batch, model.in_channels, size, size)
    t, y = torch.rand(batch), torch.randint(0, model.num_classes, (batch,))
    with GlueCounter(recorder):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            v = model(x, t, y)
        v.float().square().mean().backward()
    return {"backend": backend, "preset": preset, "batch": batch, "depth": depth,
            "tokens": (size // model.patch_size) ** 2,
            "report": model.kernel_report("cpu"), "launches": recorder.launches, "glue": list(recorder.glue.values())}


if __name__ == "__main__":
    backend, preset, batch, depth, out = sys.argv[1:6]
    Path(out).write_text(json.dumps(capture(backend, preset, int(batch), int(depth))))
