"""Install dip and dip_kernels; build the torch-free CUDA extension ``dip_kernels._cuda`` when nvcc is found, and
its host-emulated twin ``dip_kernels._cuda_emulated`` (the same kernels on CPU tensors, for tests without a GPU).

Environment:
  DIP_CUDA_ARCHS   semicolon list of targets, default "sm_80;sm_90a;compute_90" (compute_XX embeds PTX;
                   sm_90a PTX does not carry forward, hence the separate compute_90).
  DIP_SKIP_CUDA=1  install without the extension.
  DIP_SKIP_CUDA_EMULATION=1  install without the emulated twin (also skipped, saying so, without a C++20
                   host compiler).
  CUDA_HOME        toolkit location (else nvcc on PATH).
The extension links the CUDA runtime statically and nothing from torch (docs/kernels.md §6), so it builds with nvcc
alone, under build isolation, against any torch version. Sources compile in parallel.
"""
import os
import shutil
import subprocess
import sysconfig
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
DEFAULT_ARCHS = "sm_80;sm_90a;compute_90"


def find_nvcc():
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home and (Path(home) / "bin" / "nvcc").exists():
        return str(Path(home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def gencode_flags(archs: str):
    flags = []
    for arch in filter(None, (a.strip() for a in archs.split(";"))):
        kind, _, num = arch.partition("_")
        if kind == "sm":
            flags.append(f"-gencode=arch=compute_{num},code=sm_{num}")
        elif kind == "compute":
            flags.append(f"-gencode=arch=compute_{num},code=compute_{num}")
        else:
            raise ValueError(f"DIP_CUDA_ARCHS entries must look like sm_90a or compute_90, got {arch!r}")
    return flags


class NvccBuildExt(build_ext):
    """Compiles CUDA extensions with nvcc (objects in parallel, cudart static); the emulated twin compiles the same
    sources as host C++ (-DDIP_EMULATE, nvcc driving the host compiler with the CUDA headers, no CUDA runtime)."""

    def build_extension(self, ext):
        if not getattr(ext, "is_cuda", False):
            return super().build_extension(ext)
        nvcc = find_nvcc()
        import pybind11

        out = Path(self.get_ext_fullpath(ext.name))
        tmp = Path(self.build_temp) / ext.name
        tmp.mkdir(parents=True, exist_ok=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        includes = [f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}", f"-I{ROOT / 'csrc'}"]
        host = ["-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden", *includes]
        if ext.emulated:
            flags = ["-x", "c++", "-O1", "-std=c++20", "-DDIP_EMULATE", "-Xcompiler", "-pthread", "-Xcompiler",
                     "-Wno-attributes", *host]
            link_flags = ["-cudart", "none", "-Xcompiler", "-pthread"]
        else:
            archs = gencode_flags(os.environ.get("DIP_CUDA_ARCHS", DEFAULT_ARCHS))
            flags = ["-x", "cu", "-O3", "-std=c++17", "--expt-relaxed-constexpr", *archs, *host]
            link_flags = ["-cudart", "static", *archs]

        def compile_one(src):
            obj = tmp / (Path(src).name + ".o")
            cmd = [nvcc, "-c", src, "-o", str(obj), *flags]
            print(" ".join(cmd))
            subprocess.run(cmd, check=True)
            return str(obj)

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            objects = list(pool.map(compile_one, ext.sources))
        link = [nvcc, "-shared", *link_flags, *objects, "-o", str(out)]
        print(" ".join(link))
        subprocess.run(link, check=True)
        return None


def host_cxx20(nvcc: str) -> bool:
    """Whether nvcc's host compiler builds C++20 with <barrier> (what the emulator needs)."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text("#include <barrier>\nint main() { std::barrier<> b(1); b.arrive_and_wait(); }\n")
        probe = [nvcc, "-x", "c++", "-std=c++20", "-c", str(src), "-o", str(Path(tmp) / "probe.o")]
        return subprocess.run(probe, capture_output=True).returncode == 0


def cuda_extensions():
    """[the CUDA extension, its emulated twin] when nvcc is found and DIP_SKIP_CUDA is not 1, else [] (saying
    why)."""
    why = "DIP_SKIP_CUDA=1" if os.environ.get("DIP_SKIP_CUDA") == "1" else \
        None if find_nvcc() else "nvcc not found (set CUDA_HOME or put nvcc on PATH)"
    if why:
        print(f"dip: building without the CUDA extension dip_kernels._cuda: {why}; the torch and Triton backends "
              f"still work")
        return []
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").glob("*.c*") if p.suffix in (".cu", ".cpp"))
    variants = [("dip_kernels._cuda", False)]
    if os.environ.get("DIP_SKIP_CUDA_EMULATION") != "1":
        if host_cxx20(find_nvcc()):
            variants.append(("dip_kernels._cuda_emulated", True))
        else:
            print("dip: building without the emulated twin dip_kernels._cuda_emulated: the host compiler lacks "
                  "C++20 <barrier>; only the tests without a GPU use it")
    exts = []
    for name, emulated in variants:
        ext = Extension(name, sources=sources)
        ext.is_cuda, ext.emulated = True, emulated
        exts.append(ext)
    return exts


setup(
    name="dip",
    version="0.1.0",
    description="DiP: pixel-space diffusion (DiT on 16×16 patches + Patch Detailer Head) with fused kernels",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["dip", "dip.*", "dip_kernels", "dip_kernels.*", "benchmarks", "benchmarks.*"]),
    install_requires=[
        "torch>=2.4",
        "triton>=3.0; platform_system=='Linux'",
        "einops>=0.7",
        "numpy>=1.24",
        "pillow>=9",
        "tqdm>=4.60",
        "safetensors>=0.4",
    ],
    extras_require={
        "test": ["pytest>=7", "ruff>=0.5", "scikit-learn>=1.2", "scikit-image>=0.21", "hypothesis",
                 "torchdiffeq>=0.2.3", "diffusers>=0.32", "huggingface_hub>=0.24"],
        "solvers": ["torchdiffeq>=0.2.3"],
        "hub": ["huggingface_hub>=0.24", "diffusers>=0.32"],
        "demo": ["scikit-learn>=1.2", "scikit-image>=0.21"],
        "tensorboard": ["tensorboard>=2.10"],
        "flash": ["flash-attn>=2"],
    },
    entry_points={"console_scripts": ["dip-train=dip.train:main", "dip-sample=dip.sample:main",
                                      "dip-data=dip.data:main", "dip-evaluate=dip.evaluate:main",
                                      "dip-convert=dip.convert:main"]},
    ext_modules=cuda_extensions(),
    cmdclass={"build_ext": NvccBuildExt},
    zip_safe=False,
)
