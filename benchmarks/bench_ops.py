"""Benchmark of the DiT backbone's memory-bound fused ops (docs/kernels.md §1 A, B, C, F; §7).

For each op at DiP-XL/16 shapes (T=256 tokens, D=1152, 16 heads of 72, SwiGLU hidden 3072) and each batch:
forward, backward, forward+backward, with the eager reference, torch.compile(dynamic=False) of the reference and
every kernel backend that can run here, side by side in one run (forwards at small batch also replayed from a
CUDA graph, docs/kernels.md §7). Reports ms, effective GB/s (the bytes the op must move, listed in OPS, over the time)
as a share of a device copy measured in the same run, and the speed-up over eager and over torch.compile; writes
JSON.

The eager reference reproduces the authors' bf16 chain (its RMSNorm+modulate output is fp32); the fused ops
emit the activation dtype. Inputs are bf16 activations with fp32 weights, timed under bf16 autocast as in
training; the patch embedding (op E) reads the fp32 noisy image.

    python benchmarks/bench_ops.py                       # batch 32 and 256 on CUDA, tiny shapes on CPU
    python benchmarks/bench_ops.py --batch 32 --ops block_boundary --out results/ops.json
"""
from __future__ import annotations

import argparse
from functools import partial

import torch

import dip_kernels
from benchmarks.common import (DTYPES, copy_gbps, environment, forward_only, print_table, time_graph_ms, time_variants,
                               write_json)
from dip_kernels.qk_norm_rope import rope_2d_table


def _act(shape, dtype, device, seed):
    g = torch.Generator().manual_seed(seed)
    return (0.5 + torch.randn(shape, generator=g)).to(device, dtype).requires_grad_()


GRAPH_BATCH = 32  # forward rows up to this batch also get a CUDA-graph timing (small shapes: launch-bound)


def make_case(op, B, T, D, H, hidden, dtype, device):
    """(args, bytes forward, bytes backward, output-gradient shapes) for ``op`` at these sizes."""
    es, M = torch.finfo(dtype).bits // 8, B * T
    mod = (0.1 * _act((B, 6 * D), dtype, device, 9)).detach().requires_grad_()
    weight = torch.ones(D, device=device, requires_grad=True)
    if op == "block_boundary":
        args = (_act((B, T, D), dtype, device, 0), _act((B, T, D), dtype, device, 1), mod[:, 2 * D:3 * D], weight,
                mod[:, :D], mod[:, D:2 * D])
        return args, 4 * M * D * es, 6 * M * D * es, [(B, T, D), (B, T, D)]
    if op == "modulated_norm":
        args = (_act((B, T, D), dtype, device, 0), weight, mod[:, :D], mod[:, D:2 * D])
        return args, 2 * M * D * es, 3 * M * D * es, [(B, T, D)]
    if op == "final_context":
        args = (_act((B, T, D), dtype, device, 0), _act((B, T, D), dtype, device, 1), mod[:, 5 * D:],
                _act((B, D), dtype, device, 2))
        return args, 3 * M * D * es, 5 * M * D * es, [(B, T, D)]
    if op == "swiglu":
        args = (_act((B, T, hidden), dtype, device, 0), _act((B, T, hidden), dtype, device, 1))
        return args, 3 * M * hidden * es, 5 * M * hidden * es, [(B, T, hidden)]
    if op == "qk_norm_rope":
        grid = int(T ** 0.5)
        cos, sin = rope_2d_table(D // H, grid, T // grid, device=device)
        hd = D // H
        args = (_act((B, T, 3 * D), dtype, device, 0), torch.ones(hd, device=device, requires_grad=True),
                torch.ones(hd, device=device, requires_grad=True), cos, sin, H)
        return args, 6 * M * D * es, 9 * M * D * es, [(B, H, T, hd)] * 3
    if op == "patch_embed":  # the fp32 noisy image in, tokens in the activation dtype out (op E)
        P, side = 16, int(T ** 0.5) * 16
        args = (_act((B, 3, side, side), torch.float32, device, 0).detach(),
                (0.02 * torch.randn(D, 3 * P * P, device=device)).requires_grad_(),
                torch.zeros(D, device=device, requires_grad=True), P)
        img_bytes = B * 3 * side * side * 4
        return args, img_bytes + M * D * es, M * D * es + img_bytes, [(B, T, D)]
    raise ValueError(f"unknown op {op!r}")


OPS = ("block_boundary", "modulated_norm", "qk_norm_rope", "final_context", "swiglu", "patch_embed")


def implementations(op, device):
    """label → callable: eager reference, its torch.compile, and each kernel backend that runs on ``device``."""
    impls = dip_kernels.implementations(op)
    table = {"eager": impls["torch"], "compile": torch.compile(impls["torch"], dynamic=False)}
    for backend in ("triton", "cuda"):
        if backend in impls and dip_kernels.resolve(op, backend, device.type).used == backend:
            table[backend] = impls[backend]
    return table


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", default=None, help="comma list (default 32,256 on CUDA; 2 on CPU)")
    p.add_argument("--ops", default=",".join(OPS))
    p.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    p.add_argument("--reps", type=int, default=None)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    T, D, H, hidden = (256, 1152, 16, 3072) if cuda else (4, 72, 1, 192)
    batches = [int(b) for b in (args.batch or ("32,256" if cuda else "2")).split(",")]
    dtype, reps = DTYPES[args.dtype], args.reps or (20 if cuda else 3)
    copy = copy_gbps(device)
    print(f"fused DiT ops, T={T} D={D} heads={H} hidden={hidden}, {args.dtype}, {device.type}; "
          f"copy bandwidth {copy:.0f} GB/s in this run")
    rows = []
    for B in batches:
        for op in args.ops.split(","):
            case_args, bytes_fwd, bytes_bwd, grad_shapes = make_case(op, B, T, D, H, hidden, dtype, device)
            impls = implementations(op, device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):  # as in training
                times = time_variants(impls, case_args, device, reps, grad_shapes)
                for label, fn in impls.items():
                    forward = partial(forward_only, fn, *case_args)
                    times[label]["fwd graph"] = time_graph_ms(forward, device) if B <= GRAPH_BATCH else None
            for mode, nbytes in (("fwd", bytes_fwd), ("bwd", bytes_bwd), ("fwd+bwd", bytes_fwd + bytes_bwd)):
                for label, t in times.items():
                    gbps = nbytes / (t[mode] * 1e-3) / 1e9
                    rows.append({"op": op, "batch": B, "mode": mode, "impl": label, "ms": t[mode], "GB/s": gbps,
                                 "%copy": 100 * gbps / copy, "vs eager": times["eager"][mode] / t[mode],
                                 "vs compile": times["compile"][mode] / t[mode],
                                 "graph ms": t.get("fwd graph") if mode == "fwd" else None})
    print_table(rows, ["op", "batch", "mode", "impl", "ms", "graph ms", "GB/s", "%copy", "vs eager", "vs compile"])
    if not cuda:
        print("(CPU numbers at tiny shapes: they exercise the script; absolute times only count on a GPU)")
    write_json(args.out, {"benchmark": "adaln_fused_ops", "shapes": {"T": T, "D": D, "heads": H, "hidden": hidden},
                          "dtype": args.dtype, "copy_gbps": copy, "environment": environment(device), "rows": rows})
    return rows


if __name__ == "__main__":
    main()
