"""The kernels as the GPU will run them, without a GPU (docs/kernels.md §8).

    python benchmarks/tools/kernel_report.py [--preset DiP-XL/16] [--batch 32] [--depth 2] [--archs 90,80]
                                       [--backends triton,cuda] [--out kernel_report.json]

1. benchmarks/tools/kernel_capture.py runs one bf16 training step of the preset at two reduced depths (d and d + 1:
   every later block launches what the second one does) at the real batch on CPU tensors with the launch geometry of
   an H100 (132 SMs), recording every Triton launch, every CUDA kernel launch (by template instantiation, as the
   extension's own launchers pick it in the emulator's dry run) and every copy, zero-fill and partial-sum pass the
   step runs; every per-step figure is extrapolated from the two to the preset's depth.
2. benchmarks/tools/kernel_compile.py compiles each distinct Triton launch with the specialisation the launch gets,
   and every csrc/ kernel with nvcc, for each arch, and reads the cubins (registers, stack = spills, shared
   memory, SASS access widths, cp.async/TMA, wgmma/mma).
3. This script adds launches per step, grid, theoretical residency and waves, and
   a traffic model of the memory-bound ops: bytes the launches move (every tensor argument once; fp32 partials twice:
   written, then read by the second pass that sums them) plus the copies and zero-fills the op's glue runs, over the
   bytes the op must move (its inputs and outputs once).

Columns: `launches` per training step at the preset's depth; `grid` programs; `warps`, `stages`; `regs` per thread;
`spill` stack bytes per thread (register spills); `smem` KB per program; `res/SM` programs resident per SM
(registers, shared memory, warp and block limits); `waves` = grid / (res/SM × SMs); `ldg`/`stg` the global
access widths in SASS (bits: count); `mma` wgmma (sm_90) / mma (sm_80) instructions; `async` cp.async by width
(bits: count) and TMA loads. CUDA rows: one per instantiation and launch geometry the step uses (`smem` includes the
launch's dynamic shared memory); an instantiation the step never launches is listed once with 0 launches.
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
BACKWARD = ("bwd", "wgrad")
NOTES = ["the stem convs' 4-byte cp.async (async 32:96) stay: the image is read as passed, (B, 3, H, W) fp32, whose "
         "channel stride is H·W, and the pooled stem orders a tile's pixels window-major (at most 2 adjacent); "
         "padding C_in to 4 widens nothing, an NHWC copy moves more bytes than the reads it would widen "
         "(docs/kernels.md §8)"]


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
    out = tmp / f"capture_{backend}_depth{depth}.json"  # kept under --captures DIR
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


def _async(m: dict) -> str:
    """cp.async by width (bits:count) and TMA loads."""
    widths = _widths(m, "LDGSTS")
    tma = m.get("tma", 0)
    return (widths if widths != "-" or not tma else "") + (f" tma:{tma}" if tma else "") or "-"


def extrapolate(at_depth: dict, one_more: dict, blocks: int) -> dict:
    """A per-step figure at the preset's depth from captures at depth d and d + 1: f(d) + blocks·(f(d + 1) − f(d)),
    ``blocks`` = full depth − d. Exact for anything that adds up per block (the first block's own launches, such as
    its residual-free ``modulated_norm``, stay counted once)."""
    return {k: at_depth.get(k, 0) + blocks * (one_more.get(k, 0) - at_depth.get(k, 0))
            for k in at_depth.keys() | one_more.keys()}


def _per_step(caps: tuple, blocks: int, count) -> dict:
    """``count(cap)`` (a dict of additive figures) extrapolated to the full depth."""
    return extrapolate(count(caps[0]), count(caps[1]), blocks)


def _triton_key(launch: dict, m: dict) -> tuple:
    return launch["op"], launch["kernel"], tuple(m["specialisation"]), tuple(launch["grid"])


def triton_rows(caps: tuple, compiled: tuple, arch: int, blocks: int) -> list:
    """One row per distinct (op, kernel, specialisation, grid) with its launches per step and occupancy."""
    rows = {}
    for cap, comp in zip(caps, compiled):
        for launch, m in zip(cap["launches"], comp):
            key = _triton_key(launch, m)
            if key in rows:
                continue
            grid = math.prod(launch["grid"])
            res = residency(m["regs"], m["num_warps"], m["shared_bytes"], arch)
            rows[key] = {
                "backend": "triton", "op": launch["op"], "kernel": launch["kernel"].lstrip("_"), "launches": 0,
                "grid": grid, "warps": m["num_warps"], "stages": m["num_stages"], "regs": m["regs"],
                "spill": m.get("stack_bytes", 0), "smem": round(m["shared_bytes"] / 1024, 1), "res/SM": res,
                "waves": round(grid / max(res * GPUS[arch]["sms"], 1), 2), "ldg": _widths(m, "LDG"),
                "stg": _widths(m, "STG"), "mma": m["wgmma"] if arch == 90 else m["mma"], "async": _async(m),
                "dot": launch["kernel"] in ("_conv_fwd_kernel", "_conv_wgrad_kernel") or "patch_embed" == launch["op"]
                and launch["kernel"] != "_bwd_input_kernel"}

    def count(cap_and_comp) -> dict:
        cap, comp = cap_and_comp
        out = {}
        for launch, m in zip(cap["launches"], comp):
            out[_triton_key(launch, m)] = out.get(_triton_key(launch, m), 0) + 1
        return out

    per_step = _per_step(tuple(zip(caps, compiled)), blocks, count)
    for key, row in rows.items():
        row["launches"] = round(per_step.get(key, 0))
    return list(rows.values())


def cuda_rows(caps: tuple, kernels: dict, arch: int, blocks: int) -> list:
    """One row per compiled CUDA kernel instantiation and launch geometry (grid, block, dynamic shared memory) the
    step's launches use, with its launches per step; an instantiation the step never launches gets one row with 0."""
    def count(cap) -> dict:
        out = {}
        for launch in cap["launches"]:
            if launch["backend"] == "cuda":
                key = (launch["kernel"], tuple(launch["grid"]), launch["block"], launch["shared"])
                out[key] = out.get(key, 0) + 1
        return out

    calls = _per_step(caps, blocks, count)
    rows = []
    for m in kernels.values():
        launched = [(key[1:], n) for key, n in calls.items() if key[0] == m["short"]]
        for (grid, block, shared), n in launched or [(((0,), 0, 0), 0)]:  # never launched: no geometry
            rows.append(_cuda_row(m, arch, round(n), grid, block, shared))
    return rows


def _cuda_row(m: dict, arch: int, launches: int, grid: tuple, block: int, shared: int) -> dict:
    """A CUDA table row: the cubin's metrics with residency and waves at one launch geometry (dynamic shared memory
    included)."""
    warps, smem, programs = math.ceil(block / 32), m.get("shared_bytes", 0) + shared, math.prod(grid)
    res = residency(m["regs"], warps, smem, arch) if block else 0
    return {"backend": "cuda", "op": m["source"].removesuffix(".cu"), "kernel": m["short"], "launches": launches,
            "grid": programs, "warps": warps, "regs": m["regs"], "spill": m.get("stack_bytes", 0),
            "smem": round(smem / 1024, 1), "res/SM": res, "waves": round(programs / max(res * GPUS[arch]["sms"], 1), 2),
            "ldg": _widths(m, "LDG"), "stg": _widths(m, "STG"), "mma": m["wgmma"] + m["mma"], "async": _async(m)}


def _traffic_counts(cap: dict) -> dict:
    """{(op, dir, "moved" | "needed"): bytes} of the memory-bound ops' launches, and {(op, "glue"): bytes} of their
    kernel layer's copies, zero-fills and partial-sum passes."""
    out = {}
    for launch in cap["launches"]:
        if launch["op"] not in MEMORY_BOUND or launch["backend"] not in ("triton", "cuda-launcher"):
            continue
        direction = "bwd" if any(b in launch["kernel"] for b in BACKWARD) else "fwd"
        args = [a for a in launch.get("args", []) if isinstance(a, dict)]
        no_residual = any(a["name"] == "HAS_RES" and not a.get("value") for a in args)
        seen = set()
        for a in args:
            if "tensor" not in a or (a["ptr"], a["bytes"]) in seen or (no_residual and a["name"] == "p_gate_ptr"):
                continue  # a HAS_RES=0 launch never writes the gate's partials
            seen.add((a["ptr"], a["bytes"]))
            # fp32 partials are written here and read once more by the eager second pass (checks.sum_partials)
            moved = 2 * a["bytes"] if a["partial"] else a["bytes"]
            out[(launch["op"], direction, "moved")] = out.get((launch["op"], direction, "moved"), 0) + moved
            if not a["partial"]:
                out[(launch["op"], direction, "needed")] = out.get((launch["op"], direction, "needed"), 0) + a["bytes"]
    for g in cap["glue"]:
        if g["where"] in MEMORY_BOUND:
            out[(g["where"], "glue")] = out.get((g["where"], "glue"), 0) + g["bytes"]
    return out


def traffic(caps: tuple, blocks: int) -> list:
    """Per memory-bound op and direction, per step: bytes the launches move, plus the op's glue (copies, zero-fills,
    the second pass over fp32 partial sums: all in the backward), over the bytes it must move."""
    counts = _per_step(caps, blocks, _traffic_counts)
    rows = []
    for op, direction in sorted({(k[0], k[1]) for k in counts if len(k) == 3}):
        moved, needed = counts.get((op, direction, "moved"), 0), counts.get((op, direction, "needed"), 0)
        extra = counts.get((op, "glue"), 0) if direction == "bwd" else 0
        rows.append({"op": op, "dir": direction, "moved": moved, "needed": needed, "glue": extra,
                     "ratio": round((moved + extra) / max(needed, 1), 3)})
    return rows


def launches_per_step(caps: tuple, blocks: int) -> int:
    """Kernel launches of one training step at the preset's depth."""
    def count(cap) -> dict:
        return {"launches": sum(launch["backend"] in ("triton", "cuda") for launch in cap["launches"])}

    return round(_per_step(caps, blocks, count)["launches"])


def glue_summary(caps: tuple, blocks: int) -> dict:
    """Bytes of zero-fills, copies and partial-sum passes per step: the kernel layer's, the reference ops' a backend
    falls back to, and the autograd engine's / model's."""
    def count(cap) -> dict:
        out = {}
        for g in cap["glue"]:
            where = g["where"] if g["where"] in ("autograd/model", "reference") else "kernels"
            out[f"{where} {g['kind']}"] = out.get(f"{where} {g['kind']}", 0) + g["bytes"]
        return out

    return {k: round(v) for k, v in sorted(_per_step(caps, blocks, count).items())}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="DiP-XL/16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--depth", type=int, default=2, help="blocks captured, and one more (every per-step figure is "
                                                          "extrapolated from the two to the preset's depth)")
    p.add_argument("--archs", default="90,80")
    p.add_argument("--backends", default="triton,cuda")
    p.add_argument("--out", default=None, help="JSON output")
    p.add_argument("--captures", default=None, help="keep the raw captures in this folder")
    return p


def main(argv=None) -> dict:
    args = parser().parse_args(argv)
    full_depth = get_preset(args.preset).model["depth"]
    archs = [int(a) for a in args.archs.split(",")]
    backends = args.backends.split(",")
    report = {"environment": environment(__import__("torch").device("cpu")), "preset": args.preset,
              "batch": args.batch, "archs": {}, "tf32": "fp32 tl.dot uses TF32 only where "
              "torch.backends.cuda.matmul.allow_tf32 is set (the training CLI sets it); bf16 autocast uses bf16"}
    blocks = full_depth - args.depth
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(args.captures or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        caps = {b: tuple(capture(b, args.preset, args.batch, d, tmp) for d in (args.depth, args.depth + 1))
                for b in backends}
        for arch in archs:
            launches = [cap["launches"] for cap in caps.get("triton", ({"launches": []}, {"launches": []}))]
            compiled = compile_all(launches[0] + launches[1], arch, "cuda" in caps, Path(tmp))
            split = (compiled["triton"][:len(launches[0])], compiled["triton"][len(launches[0]):])
            rows = triton_rows(caps["triton"], split, arch, blocks) if "triton" in caps else []
            rows += cuda_rows(caps["cuda"], compiled["cuda"], arch, blocks) if "cuda" in caps else []
            report["archs"][f"sm_{arch}"] = rows
    report["traffic"] = {b: traffic(c, blocks) for b, c in caps.items()}
    report["glue_bytes_per_step"] = {b: glue_summary(c, blocks) for b, c in caps.items()}
    report["launches_per_step"] = {b: launches_per_step(c, blocks) for b, c in caps.items()}
    report["depth"] = {"captured": [args.depth, args.depth + 1], "preset": full_depth}
    report["notes"] = NOTES
    for arch, rows in report["archs"].items():
        print(f"\n{args.preset} batch {args.batch}, {arch} ({GPUS[int(arch[3:])]['name']}):")
        print_table(rows, ["backend", "op", "kernel", "launches", "grid", "warps", "stages", "regs", "spill", "smem",
                           "res/SM", "waves", "ldg", "stg", "mma", "async"])
    for backend, rows in report["traffic"].items():
        print(f"\ntraffic model ({backend}): moved / needed bytes per step at depth {full_depth}")
        print_table(rows, ["op", "dir", "moved", "needed", "glue", "ratio"])
    print("\nzero-fill and copy bytes per step:", json.dumps(report["glue_bytes_per_step"]))
    print("launches per step:", report["launches_per_step"])
    print("\n".join(f"note: {n}" for n in NOTES))
    write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
