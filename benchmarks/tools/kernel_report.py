"""The kernels as the GPU will run them, without a GPU (docs/kernels.md §8).

    python benchmarks/tools/kernel_report.py [--preset DiP-XL/16] [--batch 32] [--depth 2] [--archs 90,80]
                                       [--backends triton,cuda] [--out kernel_report.json]

1. benchmarks/tools/kernel_capture.py runs one bf16 training step of the preset (depth reduced: every block launches
   the same kernels) at the real batch on CPU tensors with the launch geometry of an H100 (132 SMs), recording
   every Triton launch and CUDA-extension call and every copy / zero-fill the step runs.
2. benchmarks/tools/kernel_compile.py compiles each distinct Triton launch with the specialisation the launch gets,
   and every csrc/ kernel with nvcc, for each arch, and reads the cubins (registers, stack = spills, shared
   memory, SASS access widths, cp.async/TMA, wgmma/mma).
3. This script adds launches per step (scaled to the preset's depth), grid, theoretical residency and waves, and
   a traffic model of the memory-bound ops: bytes the launches move (every tensor argument once, fp32 partials
   included) plus the copies and zero-fills the op's glue runs, over the bytes the op must move (its inputs and
   outputs once).

Columns: `launches` per training step at the preset's depth; `grid` programs; `warps`, `stages`; `regs` per thread;
`spill` stack bytes per thread (register spills); `smem` KB per program; `res/SM` programs resident per SM
(registers, shared memory, warp and block limits); `waves` = grid / (res/SM × SMs); `ldg`/`stg` the global
access widths in SASS (bits: count); `mma` wgmma (sm_90) / mma (sm_80) instructions; `async` cp.async/TMA loads.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import environment, print_table, write_json
from dip.model.presets import get_preset

ROOT = Path(__file__).resolve().parents[2]
GPUS = {90: {"sms": 132, "smem": 228 * 1024, "name": "H100"}, 80: {"sms": 108, "smem": 164 * 1024, "name": "A100"}}
MEMORY_BOUND = ("block_boundary", "qk_norm_rope", "final_context", "swiglu", "patch_embed")
PER_BLOCK_OPS = ("block_boundary", "qk_norm_rope", "swiglu")
BACKWARD = ("bwd", "wgrad")


def residency(regs: int, warps: int, smem: int, arch: int) -> int:
    """Programs resident per SM: registers (allocated per warp in units of 256), shared memory (+1 KB reserved per
    block), 64 warps and 32 blocks per SM."""
    per_warp = math.ceil(max(regs, 1) * 32 / 256) * 256
    by_regs = 65536 // (per_warp * warps)
    by_smem = GPUS[arch]["smem"] // (smem + 1024) if smem else 32
    return max(0, min(by_regs, by_smem, 64 // warps, 32))


def _run(args: list, env: dict | None = None) -> None:
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"{args[1]} failed:\n{done.stderr[-3000:]}")


def capture(backend: str, preset: str, batch: int, depth: int, tmp: Path) -> dict:
    """One step's launches and glue (kernel_capture.py in a subprocess with the interpreter and the emulator)."""
    out = tmp / f"capture_{backend}.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "DIP_CUDA_EMULATE": "1", "DIP_LAUNCH_AS_SMS": "132"}
    _run(["-m", "benchmarks.tools.kernel_capture", backend, preset, str(batch), str(depth), str(out)], env)
    return json.loads(out.read_text())


def compile_all(launches: list, arch: int, with_cuda: bool, tmp: Path) -> dict:
    """kernel_compile.py in a subprocess without the interpreter: per-launch Triton metrics and CUDA kernels."""
    src, out = tmp / f"launches_{arch}.json", tmp / f"compiled_{arch}.json"
    src.write_text(json.dumps(launches))
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    cuda = ["--cuda"] if with_cuda else []
    _run(["-m", "benchmarks.tools.kernel_compile", str(src), str(arch), str(out), *cuda], env)
    return json.loads(out.read_text())


def _widths(m: dict, kind: str) -> str:
    parts = [(int(k.split(".")[1]), v) for k, v in m.items() if k.startswith(kind + ".")]
    return " ".join(f"{w}:{n}" for w, n in sorted(parts, reverse=True)) or "-"


def triton_rows(cap: dict, compiled: list, arch: int, full_depth: int) -> list:
    """One row per distinct (op, kernel, specialisation) with its launches per step and occupancy."""
    rows = {}
    scale = full_depth / cap["depth"]
    for launch, m in zip(cap["launches"], compiled):
        key = (launch["op"], launch["kernel"], tuple(m["specialisation"]), tuple(launch["grid"]))
        row = rows.get(key)
        if row is None:
            grid = math.prod(launch["grid"])
            res = residency(m["regs"], m["num_warps"], m["shared_bytes"], arch)
            row = rows[key] = {
                "backend": "triton", "op": launch["op"], "kernel": launch["kernel"].lstrip("_"), "launches": 0.0,
                "grid": grid, "warps": m["num_warps"], "stages": m["num_stages"], "regs": m["regs"],
                "spill": m.get("stack_bytes", 0), "smem": round(m["shared_bytes"] / 1024, 1), "res/SM": res,
                "waves": round(grid / max(res * GPUS[arch]["sms"], 1), 2), "ldg": _widths(m, "LDG"),
                "stg": _widths(m, "STG"), "mma": m["wgmma"] if arch == 90 else m["mma"], "async": m["cp_async"],
                "dot": launch["kernel"] in ("_conv_fwd_kernel", "_conv_wgrad_kernel") or "patch_embed" == launch["op"]
                and launch["kernel"] != "_bwd_input_kernel"}
        row["launches"] += scale if launch["op"] in PER_BLOCK_OPS else 1
    for row in rows.values():
        row["launches"] = round(row["launches"])
    return list(rows.values())


def cuda_rows(cap: dict, kernels: dict, full_depth: int) -> list:
    """One row per compiled CUDA kernel instantiation; launches per step from the capture, by family."""
    calls = {}
    for launch in cap["launches"]:
        if launch["backend"] == "cuda":
            calls[launch["kernel"]] = calls.get(launch["kernel"], 0) + (full_depth / cap["depth"]
                                                                        if launch["op"] in PER_BLOCK_OPS else 1)
    rows = []
    for name, m in kernels.items():
        family = m["family"]
        rows.append({"backend": "cuda", "op": m["source"].removesuffix(".cu"), "kernel": m["short"],
                     "launches": round(calls.get(family, 0)), "regs": m["regs"], "spill": m.get("stack_bytes", 0),
                     "smem": round(m.get("shared_bytes", 0) / 1024, 1), "ldg": _widths(m, "LDG"),
                     "stg": _widths(m, "STG"), "mma": m["wgmma"] + m["mma"], "async": m["cp_async"]})
    return rows


def traffic(cap: dict) -> list:
    """Per memory-bound op and direction: bytes the launches move (+ the op's glue) over the bytes it must move."""
    totals = {}
    for launch in cap["launches"]:
        if launch["op"] not in MEMORY_BOUND or launch["backend"] not in ("triton", "cuda-launcher"):
            continue
        direction = "bwd" if any(b in launch["kernel"] for b in BACKWARD) else "fwd"
        seen, moved, needed = set(), 0, 0
        for a in launch.get("args", []):
            if isinstance(a, dict) and "tensor" in a and (a["ptr"], a["bytes"]) not in seen:
                seen.add((a["ptr"], a["bytes"]))
                moved += a["bytes"]
                needed += 0 if a["partial"] else a["bytes"]
        entry = totals.setdefault((launch["op"], direction), {"op": launch["op"], "dir": direction, "moved": 0,
                                                               "needed": 0})
        entry["moved"] += moved
        entry["needed"] += needed
    glue = {}
    for g in cap["glue"]:
        glue[g["where"]] = glue.get(g["where"], 0) + g["bytes"]
    rows = []
    for (op, direction), e in sorted(totals.items()):
        extra = glue.get(op, 0) if direction == "bwd" else 0  # the kernel layer's copies run in the backward
        rows.append({**e, "glue": extra, "ratio": round((e["moved"] + extra) / max(e["needed"], 1), 3)})
    return rows


def launches_per_step(cap: dict, full_depth: int) -> int:
    """Kernel launches of one training step at the preset's depth (per-block ops scaled from the captured depth)."""
    return round(sum(full_depth / cap["depth"] if launch["op"] in PER_BLOCK_OPS else 1
                     for launch in cap["launches"] if launch["backend"] in ("triton", "cuda")))


def glue_summary(cap: dict) -> dict:
    """Bytes of zero-fills and copies per step: the kernel layer's, the reference ops' a backend falls back to, and
    the autograd engine's / model's."""
    out = {}
    for g in cap["glue"]:
        where = g["where"] if g["where"] in ("autograd/model", "reference") else "kernels"
        key = f"{where} {g['kind']}"
        out[key] = out.get(key, 0) + g["bytes"]
    return out


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="DiP-XL/16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--depth", type=int, default=2, help="blocks captured (launch counts are scaled to the preset's)")
    p.add_argument("--archs", default="90,80")
    p.add_argument("--backends", default="triton,cuda")
    p.add_argument("--out", default=None, help="JSON output")
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    full_depth = get_preset(args.preset).model["depth"]
    archs = [int(a) for a in args.archs.split(",")]
    backends = args.backends.split(",")
    report = {"environment": environment(__import__("torch").device("cpu")), "preset": args.preset,
              "batch": args.batch, "archs": {}, "tf32": "fp32 tl.dot uses TF32 only where "
              "torch.backends.cuda.matmul.allow_tf32 is set (the training CLI sets it); bf16 autocast uses bf16"}
    with tempfile.TemporaryDirectory() as tmp:
        caps = {b: capture(b, args.preset, args.batch, args.depth, Path(tmp)) for b in backends}
        for arch in archs:
            compiled = compile_all(caps["triton"]["launches"] if "triton" in caps else [], arch, "cuda" in caps,
                                   Path(tmp))
            rows = triton_rows(caps["triton"], compiled["triton"], arch, full_depth) if "triton" in caps else []
            rows += cuda_rows(caps["cuda"], compiled["cuda"], full_depth) if "cuda" in caps else []
            report["archs"][f"sm_{arch}"] = rows
    report["traffic"] = {b: traffic(c) for b, c in caps.items()}
    report["glue_bytes_per_step"] = {b: glue_summary(c) for b, c in caps.items()}
    report["launches_per_step"] = {b: launches_per_step(c, full_depth) for b, c in caps.items()}
    for arch, rows in report["archs"].items():
        print(f"\n{args.preset} batch {args.batch}, {arch} ({GPUS[int(arch[3:])]['name']}):")
        print_table(rows, ["backend", "op", "kernel", "launches", "grid", "warps", "stages", "regs", "spill", "smem",
                           "res/SM", "waves", "ldg", "stg", "mma", "async"])
    for backend, rows in report["traffic"].items():
        print(f"\ntraffic model ({backend}): moved / needed bytes per step at depth {args.depth}")
        print_table(rows, ["op", "dir", "moved", "needed", "glue", "ratio"])
    print("\nzero-fill and copy bytes per step:", json.dumps(report["glue_bytes_per_step"]))
    print("launches per step:", report["launches_per_step"])
    write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
