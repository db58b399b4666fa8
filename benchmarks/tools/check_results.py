"""Schema check of the GPU suite's results (benchmarks/gpu_suite.sh): every JSON a step wrote has the fields the
README, derive_preferences and the results commit read, so a GPU run's output is known to be readable before it
exists (the CPU rehearsal runs this on toy-size output). Files a step did not write are reported, not guessed.

    python -m benchmarks.tools.check_results DIR
"""
from __future__ import annotations

import argparse
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ENVIRONMENT = {"torch", "device", "arch"}
# file name → (top-level keys, {list key: keys every row has})
SCHEMAS = {
    "smoke.json": ({"benchmark", "preset", "ok", "environment", "backends"}, {}),
    "bench_ops.json": ({"benchmark", "shapes", "dtype", "copy_gbps", "environment", "rows"},
                       {"rows": {"op", "batch", "mode", "impl", "ms", "GB/s"}}),
    "bench_detailer.json": ({"benchmark", "preset", "patches", "dtype", "forward_tflop", "gemm_tflops", "environment",
                             "rows", "layers"},
                            {"rows": {"variant", "mode", "ms", "TFLOP/s", "speedup"},
                             "layers": {"layer", "op", "variant", "fwd ms", "fwd+bwd ms"}}),
    "bench_model_train.json": ({"benchmark", "preset", "batch", "gemm_tflops", "environment", "rows"},
                               {"rows": {"mode", "backend", "compiled", "batch", "ms", "img/s", "MFU%", "speedup"}}),
    "bench_model_sample.json": ({"benchmark", "preset", "sample_steps", "environment", "rows"},
                                {"rows": {"mode", "backend", "batch", "ms"}}),
}


def check_json(path: Path) -> list:
    """What is missing from ``path`` against its schema ([] when it conforms)."""
    payload = json.loads(path.read_text())
    keys, lists = SCHEMAS[path.name]
    problems = [f"{path.name}: no {k}" for k in sorted(keys - set(payload))]
    if "environment" in payload:
        problems += [f"{path.name}: environment has no {k}" for k in sorted(ENVIRONMENT - set(payload["environment"]))]
    for name, row_keys in lists.items():
        rows = payload.get(name) or []
        if not rows:
            problems.append(f"{path.name}: {name} is empty")
        problems += [f"{path.name}: {name}[{i}] has no {k}" for i, row in enumerate(rows)
                     for k in sorted(row_keys - set(row))]
    return problems


def check_preferences(path: Path) -> list:
    """Each architecture's entry has the table ``auto`` loads and the measurements behind it."""
    problems = []
    for arch, entry in json.loads(path.read_text()).items():
        if not arch.startswith("sm_"):
            problems.append(f"{path.name}: {arch!r} is not an architecture (sm_XY)")
        problems += [f"{path.name}: {arch} has no {k}" for k in ("backends", "fwd+bwd ms", "environment", "sources")
                     if k not in entry]
    return problems


def check_junit(path: Path) -> list:
    """The parity tests' report parses and counts no failures or errors."""
    root = ElementTree.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    failed = sum(int(s.get("failures", 0)) + int(s.get("errors", 0)) for s in suites)
    ran = sum(int(s.get("tests", 0)) for s in suites)
    return [f"{path.name}: {failed} of {ran} tests failed"] if failed else [] if ran else [f"{path.name}: no tests"]


def check(folder: Path) -> tuple[list, list]:
    """(problems, files checked) of every known result file in ``folder``."""
    problems, seen = [], []
    for path in sorted(Path(folder).iterdir()):
        checker = check_json if path.name in SCHEMAS else check_preferences if path.name == "preferences.json" \
            else check_junit if path.suffix == ".xml" else None
        if checker is not None:
            seen.append(path.name)
            problems += checker(path)
    return problems, seen


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder")
    p.add_argument("--require-all", action="store_true", help="every known result file must be there (rehearsal)")
    args = p.parse_args(argv)
    problems, seen = check(Path(args.folder))
    missing = sorted(set(SCHEMAS) - set(seen))
    if args.require_all:
        problems += [f"{name}: not written" for name in missing]
    print(f"checked {', '.join(seen) or 'nothing'}" + (f"; not written: {', '.join(missing)}" if missing else ""))
    for problem in problems:
        print(problem)
    if problems:
        raise SystemExit(1)
    return seen


if __name__ == "__main__":
    main()
