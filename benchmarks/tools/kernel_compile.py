"""Compile kernels as a real launch would and read what the GPU would run (the second half of
benchmarks/tools/kernel_report.py). No GPU needed: Triton's own compiler and the CUDA toolkit's nvcc produce the cubins,
and cuobjdump (shipped with Triton) reads registers, local memory and SASS out of them.

- Triton: a launch recorded by benchmarks/tools/kernel_capture.py is rebuilt with Triton's launcher logic (its binder
  derives the signature and the specialisation — dtypes, 16-byte alignment of pointers, divisibility by 16 and
  ints equal to 1 — from stand-ins of the real arguments), compiled for the target and read.
- CUDA: every csrc/*.cu kernel file compiled by nvcc to a cubin for the target and read the same way.

Run as a subprocess without TRITON_INTERPRET:  python benchmarks/tools/kernel_compile.py CAPTURE.json ARCH OUT.json
"""
from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> str:
    """Path of a CUDA binary tool: Triton's bundled copy (cuobjdump, nvdisasm, ptxas)."""
    import triton

    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    return str(bundled) if bundled.exists() else name


def read_cubin(cubin: bytes) -> dict:
    """{function: metrics} of a cubin: registers, local (spill) bytes, shared bytes, and SASS counts of global
    loads/stores by width, async copies (cp.async / TMA) and tensor-core instructions."""
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        usage = subprocess.run([_tool("cuobjdump"), "-res-usage", f.name], capture_output=True, text=True).stdout
        sass = subprocess.run([_tool("cuobjdump"), "-sass", f.name], capture_output=True, text=True).stdout
    out = {}
    for fn, body in re.findall(r"Function (\S+):\s*\n\s*(REG:.*)", usage):
        vals = dict(re.findall(r"(\w+):(\d+)", body))
        out[fn] = {"regs": int(vals.get("REG", 0)), "stack_bytes": int(vals.get("STACK", 0)),
                   "local_bytes": int(vals.get("LOCAL", 0)), "shared_bytes": int(vals.get("SHARED", 0))}
    for fn, code in re.findall(r"Function : (\S+)\n(.*?)(?=\n\s*Function : |\Z)", sass, re.S):
        out.setdefault(fn, {}).update(sass_counts(code))
    return out


def _width(mnemonic: str) -> str:
    for w in ("128", "64", "U16", "S16", "U8", "S8"):
        if f".{w}" in mnemonic:
            return {"U16": "16", "S16": "16", "U8": "8", "S8": "8"}.get(w, w)
    return "32"


def sass_counts(code: str) -> dict:
    """Global access widths by bits of plain loads and stores (LDG/STG) and of cp.async (LDGSTS), whole opcodes only
    (LDGSTS and LDGDEPBAR are not LDGs), TMA loads, wgmma (HGMMA) and mma (HMMA) counts."""
    counts = {}
    for op, mnemonic in re.findall(r"\b(LDGSTS|LDG|STG)(?![A-Z0-9_])((?:\.\w+)*)", code):
        key = f"{op}.{_width(mnemonic)}"
        counts[key] = counts.get(key, 0) + 1
    counts["tma"] = len(re.findall(r"\bUTMALDG\b", code))
    counts["cp_async"] = sum(v for k, v in counts.items() if k.startswith("LDGSTS.")) + counts["tma"]
    counts["wgmma"] = len(re.findall(r"\bHGMMA\b", code))
    counts["mma"] = len(re.findall(r"\bHMMA\b", code))
    return counts


class _Tensor:
    """What Triton's binder reads of a tensor argument: its dtype and its address (for the 16-byte alignment)."""

    def __init__(self, dtype, aligned: bool):
        self.dtype, self._ptr = dtype, 1024 if aligned else 1026

    def data_ptr(self) -> int:
        return self._ptr


def _argument(recorded: dict):
    """A stand-in for a recorded launch argument."""
    import torch
    import triton.language as tl

    if "tensor" in recorded:
        return _Tensor(getattr(torch, recorded["tensor"]), recorded["aligned16"])
    if "tl_dtype" in recorded:
        return {"fp32": tl.float32, "bf16": tl.bfloat16, "fp16": tl.float16}[recorded["tl_dtype"]]
    if recorded["name"] == "UPCAST":  # interpreter-only (triton_support.dot_args): a GPU launch gets 0
        return 0
    return recorded["value"]


def compile_triton(launch: dict, arch: int) -> dict:
    """Compile one recorded launch for sm_<arch> with the specialisation the launch gets; its cubin's metrics."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = getattr(importlib.import_module(launch["module"]), launch["kernel"])
    args = [_argument(a) for a in launch["args"]]
    assert [a["name"] for a in launch["args"]] == [p.name for p in kernel.params], launch["kernel"]
    options = dict(launch["options"])
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, spec, opts = binder(*args, **options)  # every parameter, in order
    opts, signature, constexprs, attrs = kernel._pack_args(backend, options, bound, spec, opts)
    compiled = triton.compile(ASTSource(kernel, signature, constexprs, attrs), target=target, options=opts.__dict__)
    metrics = next(iter(read_cubin(compiled.asm["cubin"]).values()))
    return {**metrics, "num_warps": compiled.metadata.num_warps, "num_stages": compiled.metadata.num_stages,
            "shared_bytes": max(metrics.get("shared_bytes", 0), compiled.metadata.shared),
            "specialisation": [s[0] + (f"/{s[1]}" if s[1] not in (None, "") else "") for s in spec]}


def compile_cuda(arch: int) -> dict:
    """{kernel: metrics} of every csrc/*.cu compiled by nvcc for sm_<arch> (sm_90a for 90)."""
    out = {}
    gpu = f"sm_{arch}a" if arch == 90 else f"sm_{arch}"
    with tempfile.TemporaryDirectory() as tmp:
        for source in sorted((ROOT / "csrc").glob("*.cu")):
            cubin = Path(tmp) / (source.stem + ".cubin")
            done = subprocess.run(["nvcc", "-cubin", f"-arch={gpu}", "-O3", "-std=c++17", "-I", str(ROOT / "csrc"),
                                   "-o", str(cubin), str(source)], capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"nvcc failed on {source.name}: {done.stderr[-2000:]}")
            for fn, metrics in read_cubin(cubin.read_bytes()).items():
                short = demangle(fn)
                out[fn] = {**metrics, "source": source.name, "short": short}
    return out


def demangle(symbol: str) -> str:
    """``dip::(anonymous namespace)::block_boundary_fwd_kernel<__nv_bfloat16, 8>`` → ``block_boundary_fwd_kernel<bf16,
    8>`` (c++filt, then the namespace and parameter list dropped)."""
    name = subprocess.run(["c++filt", symbol], capture_output=True, text=True).stdout.strip() or symbol
    name = name.removeprefix("void ").replace("dip::(anonymous namespace)::", "").replace("dip::", "")
    name = name[: name.index(">(") + 1] if ">(" in name else name.split("(")[0]  # drop the parameter list
    return name.replace("__nv_bfloat16", "bf16").replace("__half", "fp16").replace("float", "fp32")


def main(capture_path: str, arch: int, out_path: str) -> None:
    launches = json.loads(Path(capture_path).read_text())
    results, cache = [], {}
    for launch in launches:
        key = json.dumps([launch["module"], launch["kernel"], launch["args"], launch["options"]], sort_keys=True,
                         default=str)
        key = re.sub(r'"(bytes|ptr)": \d+', "", key)  # sizes and addresses do not change the code
        if key not in cache:
            cache[key] = compile_triton(launch, arch)
        results.append(cache[key])
    Path(out_path).write_text(json.dumps({"triton": results, "cuda": compile_cuda(arch) if "--cuda" in sys.argv
                                          else {}}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
