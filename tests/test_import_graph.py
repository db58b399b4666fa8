"""The package structure (docs/architecture.md): no import cycles among the project's modules (lazy imports
included), dip's layers import one way (runtime, io → model → diffusion → evaluation → training → cli; only the model
imports dip_kernels), and each backend independent of the other (the CUDA backend works with Triton absent)."""
import ast
import subprocess
import sys
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# dip's layers, lowest first: a module may import its own layer and those before it (runtime and io: neither the other)
LAYERS = ("runtime", "io", "model", "diffusion", "evaluation", "training", "cli")
PACKAGES = ("dip", "dip_kernels", "benchmarks")


def _module(path: Path) -> tuple:
    """(dotted name, is a package __init__) of a file under ROOT."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return (".".join(parts[:-1]), True) if parts[-1] == "__init__" else (".".join(parts), False)


def _imported(path: Path, name: str, is_package: bool) -> set:
    """Dotted names a file imports anywhere (function bodies too), relative imports resolved; ``from a import b``
    yields both ``a`` and ``a.b`` (b may be a submodule)."""
    here = name.split(".") if is_package else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            base = ".".join(base + ([node.module] if node.module else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def import_graph() -> dict:
    """{module: modules of the project it imports}. Importing a submodule also runs its parent packages, but a
    module naming its own parent package (e.g. ``from . import reference``) is not an edge back to it."""
    files = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            files[_module(path)[0]] = path
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        deps = {d for d in _imported(path, name, is_package) if d in files and d != name}
        graph[name] = {d for d in deps if is_package or not name.startswith(d + ".")}
    return graph


def test_no_import_cycles():
    graph = import_graph()
    assert "dip_kernels.block_boundary.op" in graph and "dip.train" in graph  # the walk sees the packages
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as err:
        pytest.fail(f"import cycle: {' -> '.join(err.args[1])}")


def layer_of(module: str) -> int | None:
    """The rank of a dip module's layer (the command modules and the package itself above every layer); None outside
    dip."""
    parts = module.split(".")
    if parts[0] != "dip":
        return None
    return LAYERS.index(parts[1]) if len(parts) > 1 and parts[1] in LAYERS else len(LAYERS)


def layer_violations(graph: dict) -> list:
    """(importer, imported) pairs that break the layer order, or import dip_kernels from outside the model (the CLI
    may name the backend list, ``dip_kernels`` itself)."""
    bad = []
    for name, deps in graph.items():
        mine = layer_of(name)
        if mine is None:
            continue
        for dep in deps:
            theirs = layer_of(dep)
            if theirs is not None:
                if theirs > mine or {mine, theirs} == {0, 1}:  # upwards, or between runtime and io
                    bad.append((name, dep))
            elif dep.startswith("dip_kernels") and mine != LAYERS.index("model") and not (
                    dep == "dip_kernels" and mine == LAYERS.index("cli")):
                bad.append((name, dep))
    return sorted(bad)


def test_dip_layers_import_one_way():
    graph = import_graph()
    assert {layer_of(name) for name in graph if name.startswith("dip.")} == set(range(len(LAYERS) + 1))
    assert layer_violations(graph) == []


def test_the_layer_check_sees_a_lower_layer_importing_a_higher_one():
    graph = import_graph()
    assert layer_violations({**graph, "dip.io.atomic": {"dip.training.step"}}) == [("dip.io.atomic",
                                                                                       "dip.training.step")]
    assert layer_violations({**graph, "dip.runtime.folders": {"dip.io.atomic"}}) != []
    assert layer_violations({**graph, "dip.diffusion.flow": {"dip_kernels.registry"}}) != []


def test_launchers_import_neither_their_op_layer_nor_the_other_backend():
    graph = import_graph()
    for name, deps in graph.items():
        if name.startswith("dip_kernels.") and name.rsplit(".", 1)[-1] in ("triton", "cuda"):
            package = name.rsplit(".", 1)[0]
            assert not deps & {f"{package}.op", f"{package}.triton", f"{package}.cuda"}, (name, deps)


def test_cuda_backend_works_without_triton():
    script = """
import os, sys
sys.modules["triton"] = None  # `import triton` now fails, as on an install without it
os.environ["DIP_CUDA_EMULATE"] = "1"
import torch
import dip_kernels
from dip_kernels.cuda_ext import extension
impls = dip_kernels.implementations("block_boundary")
assert "triton" not in impls, impls
if extension() is None:
    print("no-extension"); sys.exit(0)
assert "cuda" in impls, impls
x = 0.5 + torch.randn(2, 3, 8)
mod = 0.1 * torch.randn(2, 48)
r, h = impls["cuda"](x, x + 1, mod[:, :8], torch.ones(8), mod[:, 8:16], mod[:, 16:24])
ref_r, ref_h = impls["torch"](x, x + 1, mod[:, :8], torch.ones(8), mod[:, 8:16], mod[:, 16:24])
torch.testing.assert_close(h, ref_h, rtol=1e-5, atol=1e-5)
import dip
dip.create_model("DiP-T/8", kernels="cuda")
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("ok", "no-extension")
