"""Smoke check on the current device: one forward and backward of a small DiP per kernels backend.

Records which backend each op used (``kernel_report``), the output's finiteness and the largest difference from
the ``torch`` backend, as JSON. Part of the ``smoke`` tier of ``gpu_suite.sh``; runs on CPU too.
"""
from __future__ import annotations

import argparse

import torch

from benchmarks.common import environment, write_json
from dip import create_model


def run(backend: str, device: torch.device, preset: str, batch: int, image_size: int | None = None):
    torch.manual_seed(0)
    model = create_model(preset, kernels=backend, **({"image_size": image_size} if image_size else {})).to(device)
    x = torch.randn(batch, 3, model.image_size, model.image_size, device=device)
    t = torch.rand(batch, device=device)
    y = torch.randint(0, model.num_classes + 1, (batch,), device=device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        v = model(x, t, y)
    v.float().square().mean().backward()
    grads_ok = all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    return v.detach().float(), {"kernels": model.kernel_report(device.type), "finite": bool(torch.isfinite(v).all()),
                                "grads_finite": bool(grads_ok)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--preset", default="DiP-S/16")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--image-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--backends", default="torch,triton,cuda,auto")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    results, ref = {}, None
    for backend in args.backends.split(","):
        v, info = run(backend, device, args.preset, args.batch, args.image_size)
        ref = v if ref is None else ref
        info["max_abs_diff_vs_torch"] = float((v - ref).abs().max())
        results[backend] = info
        print(backend, info)
    ok = all(r["finite"] and r["grads_finite"] for r in results.values())
    write_json(args.out, {"benchmark": "smoke", "preset": args.preset, "ok": ok, "environment": environment(device),
                          "backends": results})
    if not ok:
        raise SystemExit("smoke check failed: non-finite output or gradient")


if __name__ == "__main__":
    main()
