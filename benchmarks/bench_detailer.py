"""Benchmark of the Patch Detailer Head (docs/model.md §3; docs/kernels.md §1 row D, §7).

Times the whole head, forward and forward+backward, for every implementation variant side by side in one run:
eager NCHW, eager channels_last (cuDNN's preferred layout), torch.compile of the reference (and, on request,
torch.compile mode="max-autotune"), and each kernel backend that runs on the device (Triton). With
``--per-layer`` it also times every stage op (stem, encoders, bottleneck, decoders, output) on the inputs it
receives inside the head. Reports ms, TFLOP/s (model FLOPs below) against a dense GEMM measured in the same
run, and ratios to eager NCHW; writes JSON. On CPU the numbers are CPU numbers (the script is exercised).

FLOPs: 2·MACs of every conv / transposed conv at its real spatial size (padding taps not counted);
forward+backward = 3 × forward.

    python benchmarks/bench_detailer.py                          # DiP-XL/16 head; 8,192 patches on CUDA
    python benchmarks/bench_detailer.py --patches 65536 --out results/head.json
"""
from __future__ import annotations

import argparse
import copy
import functools

import torch

from benchmarks.common import (DTYPES, environment, forward_only, gemm_tflops, print_table, time_interleaved,
                               time_variants, write_json)
from dip import create_model
from dip.model.detailer_head import PatchDetailerHead
from dip_kernels import KernelTable, resolve

STAGE_OPS = ("detailer_stem", "detailer_encoder", "detailer_bottleneck", "detailer_decoder",
             "detailer_decoder_output")


def head_flops(head: PatchDetailerHead, patches: int) -> float:
    """Forward FLOPs of ``head`` on ``patches`` patches: 2·MACs per layer at its spatial size."""
    size, total = head.patch_size, 0
    for k in range(1, head.stages + 1):
        conv = getattr(head, f"enc{k}")[0]
        total += conv.in_channels * conv.out_channels * 9 * size * size
        size //= 2
    total += head.bottleneck[0].in_channels * head.bottleneck[0].out_channels * size * size
    for k in range(head.stages, 0, -1):
        up, conv = getattr(head, f"up{k}"), getattr(head, f"dec{k}")[0]
        total += up.in_channels * up.out_channels * 4 * size * size
        size *= 2
        total += conv.in_channels * conv.out_channels * 9 * size * size
    total += head.out_conv.in_channels * head.out_conv.out_channels * size * size
    return 2.0 * total * patches


def make_inputs(model, patches: int, device, dtype):
    """Noisy image(s) holding ``patches`` patches and their DiT context (B, T, D), context requiring grad."""
    P, T = model.patch_size, (model.image_size // model.patch_size) ** 2
    shape = (patches // T, 3, model.image_size, model.image_size) if patches % T == 0 else (1, 3, P, patches * P)
    g = torch.Generator(device="cpu").manual_seed(0)
    img = torch.randn(shape, generator=g).to(device, dtype)
    ctx = torch.randn(shape[0], patches // shape[0], model.hidden_size, generator=g).to(device, dtype)
    return img, ctx.requires_grad_()


def kernel_backends(device) -> list:
    """Kernel backends with at least one head op that runs on ``device`` (the others use the reference)."""
    return [b for b in ("triton", "cuda") if any(resolve(op, b, device.type).used == b for op in STAGE_OPS)]


def variants(heads: dict, device, names):
    """name → (layout, callable(img, ctx)) for each requested implementation; ``heads`` maps each layout ("NCHW",
    "channels_last") to the head module in that memory format."""
    reference = KernelTable("torch").on(device.type)

    def with_ops(ops, layout="channels_last"):
        return lambda img, ctx: heads[layout](img, ctx, ops)

    table = {}
    for name in names:
        if name == "eager_nchw":
            table[name] = ("NCHW", with_ops(reference, "NCHW"))
        elif name == "eager_channels_last":
            table[name] = ("channels_last", with_ops(reference))
        elif name == "compile":
            table[name] = ("channels_last", torch.compile(with_ops(reference), dynamic=False))
        elif name == "max_autotune":
            table[name] = ("channels_last", torch.compile(with_ops(reference), dynamic=False, mode="max-autotune"))
        elif name in ("triton", "cuda"):
            if name in kernel_backends(device):
                table[name] = ("channels_last", with_ops(KernelTable(name).on(device.type)))
        else:
            raise ValueError(f"unknown variant {name!r}; expected eager_nchw, eager_channels_last, compile, "
                             f"max_autotune, triton, cuda")
    return table


class _Recorder:
    """An ops namespace that runs the reference and records the first call of each head stage with its inputs."""

    def __init__(self, ops):
        self._ops, self.calls = ops, []

    def __getattr__(self, name):
        fn = getattr(self._ops, name)

        def record(*args):
            self.calls.append((name, args))
            return fn(*args)
        return record


def stage_calls(head, img, ctx, device):
    """[(label, op, args)] of every stage call inside one head forward (inputs detached, grads re-enabled)."""
    recorder = _Recorder(KernelTable("torch").on(device.type))
    with torch.no_grad():
        head(img, ctx, recorder)
    calls, enc, dec = [], 0, head.stages + 1
    for op, args in recorder.calls:
        if op in ("detailer_stem", "detailer_encoder"):
            enc += 1
            label = f"enc{enc}"
        elif op in ("detailer_decoder", "detailer_decoder_output"):
            dec -= 1
            label = f"up{dec}+dec{dec}" + ("+out_conv" if op == "detailer_decoder_output" else "")
        else:
            label = "bottleneck"
        args = tuple(a.detach().requires_grad_(a.is_floating_point() and not (op == "detailer_stem" and i == 0))
                     if isinstance(a, torch.Tensor) else a for i, a in enumerate(args))  # the image needs no grad
        calls.append((label, op, args))
    return calls


def whole_head(head, img, ctx, device, reps, names, flops, gemm) -> list:
    """Rows of forward and forward+backward times of the whole head for each requested variant, every (variant,
    mode) call interleaved with the others; each layout runs its own copy of the head (same weights)."""
    heads = {"NCHW": copy.deepcopy(head).to(memory_format=torch.contiguous_format),
             "channels_last": copy.deepcopy(head).to(memory_format=torch.channels_last)}
    heads["NCHW"].channels_last, heads["channels_last"].channels_last = False, True
    grad = torch.randn_like(img)
    calls = {}
    for name, (layout, fn) in variants(heads, device, names).items():
        calls[(name, "fwd")] = functools.partial(forward_only, fn, img, ctx)
        calls[(name, "fwd+bwd")] = functools.partial(_forward_backward, fn, img, ctx, grad)
    times = time_interleaved(calls, device, reps)
    rows = []
    for (name, mode), ms in times.items():
        mult = 3 if mode == "fwd+bwd" else 1
        rows.append({"variant": name, "mode": mode, "ms": ms, "TFLOP/s": mult * flops / (ms * 1e-3) / 1e12})
    rows.sort(key=lambda r: r["mode"] != "fwd")  # the forward rows first, each mode in the variants' order
    for row in rows:
        base = next(r for r in rows if r["mode"] == row["mode"])
        row["speedup"] = base["ms"] / row["ms"]
        row["%GEMM"] = 100 * row["TFLOP/s"] / gemm
    return rows


def _forward_backward(fn, img, ctx, grad) -> None:
    fn(img, ctx).backward(grad)


def per_layer(head, img, ctx, device, reps, names):
    """Rows of per-stage times for the requested variants (the stage op alone: eager channels_last, its
    torch.compile / max-autotune, kernel backends that run here), speed-ups against the first variant."""
    ref = KernelTable("torch").on(device.type)
    makers = {"eager_channels_last": lambda op: getattr(ref, op),
              "compile": lambda op: torch.compile(getattr(ref, op), dynamic=False),
              "max_autotune": lambda op: torch.compile(getattr(ref, op), dynamic=False, mode="max-autotune")}
    for backend in kernel_backends(device):
        makers[backend] = lambda op, b=backend: getattr(KernelTable(b).on(device.type), op)
    rows = []
    for label, op, args in stage_calls(head, img, ctx, device):
        chosen = {name: makers[name](op) for name in names if name in makers and not (
            name in ("triton", "cuda") and resolve(op, name, device.type).used != name)}  # backends with a kernel
        if not chosen:
            continue
        times = time_variants(chosen, args, device, reps)
        base = times[next(iter(chosen))]
        for name, t in times.items():
            rows.append({"layer": label, "op": op, "variant": name, "fwd ms": t["fwd"], "fwd+bwd ms": t["fwd+bwd"],
                         "fwd speedup": base["fwd"] / t["fwd"], "fwd+bwd speedup": base["fwd+bwd"] / t["fwd+bwd"]})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="DiP-XL/16")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--patches", type=int, default=None, help="patches per step (default 8192 on CUDA, 64 on CPU)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=None, help="default bf16 on CUDA, fp32 on CPU")
    p.add_argument("--variants", default="eager_nchw,eager_channels_last,compile,triton,cuda",
                   help="comma list of eager_nchw, eager_channels_last, compile, max_autotune, triton, cuda "
                        "(kernel backends that cannot run here are left out)")
    p.add_argument("--per-layer", action="store_true", help="also time every stage op")
    p.add_argument("--reps", type=int, default=None,
                   help="interleaved rounds (at least: on CUDA, enough for ~100 ms per call)")
    p.add_argument("--out", default=None, help="JSON output path")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but no CUDA device is available")
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    patches = args.patches or (8192 if device.type == "cuda" else 64)
    reps = args.reps or (20 if device.type == "cuda" else 5)
    torch.backends.cudnn.benchmark = True

    model = create_model(args.preset)
    head = model.local_decoder.to(device, dtype)
    img, ctx = make_inputs(model, patches, device, dtype)
    flops = head_flops(head, patches)
    gemm = gemm_tflops(device, dtype)
    print(f"Detailer head of {args.preset}: {patches} patches, {str(dtype)[6:]}, {device.type}; "
          f"forward {flops / 1e12:.3f} TFLOP; dense GEMM {gemm:.1f} TFLOP/s in this run")

    rows = whole_head(head, img, ctx, device, reps, args.variants.split(","), flops, gemm)
    print_table(rows, ["variant", "mode", "ms", "TFLOP/s", "%GEMM", "speedup"])
    layers = []
    if args.per_layer:
        head.to(memory_format=torch.channels_last)
        head.channels_last = True
        layers = per_layer(head, img, ctx, device, reps, args.variants.split(","))
        print_table(layers, ["layer", "variant", "fwd ms", "fwd+bwd ms", "fwd speedup", "fwd+bwd speedup"])
    if device.type == "cpu":
        print("(CPU numbers: they exercise the script; absolute times only count on a GPU)")
    write_json(args.out, {"benchmark": "detailer_head", "preset": args.preset, "patches": patches,
                          "dtype": str(dtype), "forward_tflop": flops / 1e12, "gemm_tflops": gemm,
                          "environment": environment(device), "rows": rows, "layers": layers})
    return rows, layers


if __name__ == "__main__":
    main()
