"""Fill the ``auto`` backend table from measurements (docs/kernels.md §4; issue 6 item 4).

Reads the JSON of ``bench_ops.py`` (ops A, B, C, E, F: rows per op × batch) and of ``bench_detailer.py
--per-layer`` (the head's stage ops: rows per layer), all from one GPU run, and picks for every op the backend
with the lowest forward+backward time summed over that op's rows — among the reference (``torch``: eager, the
fallback) and the kernel backends measured for every one of those rows. Writes the table for the run's
architecture in the layout of ``dip_kernels/preferences.json`` (committed; ``dip_kernels/preferences.py`` reads it),
merged into an existing file so other architectures are kept, with the measured times and the run's environment.

    python benchmarks/tools/derive_preferences.py bench_out/bench_ops.json bench_out/bench_detailer_8k.json \\
        --out dip_kernels/preferences.json
"""
from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from dip_kernels.preferences import load_preferences

BACKEND_OF = {"eager": "torch", "eager_channels_last": "torch", "triton": "triton", "cuda": "cuda"}


def timings(payload: dict) -> dict:
    """{op: {row key: {backend: fwd+bwd ms}}} from one benchmark JSON (adaln rows or detailer per-layer rows)."""
    out = defaultdict(lambda: defaultdict(dict))
    for row in payload.get("rows", []) + payload.get("layers", []):
        if "op" not in row:
            continue
        if "impl" in row and row.get("mode") == "fwd+bwd":  # bench_ops
            backend, key, ms = BACKEND_OF.get(row["impl"]), ("batch", row["batch"]), row["ms"]
        elif "variant" in row and "fwd+bwd ms" in row:  # bench_detailer --per-layer
            backend, key, ms = BACKEND_OF.get(row["variant"]), ("layer", row["layer"]), row["fwd+bwd ms"]
        else:
            continue
        if backend is not None:
            out[row["op"]][key][backend] = ms
    return out


def choose(per_key: dict) -> tuple[str, dict]:
    """(fastest backend, {backend: summed ms}) over backends measured at every key; torch when nothing else is."""
    keys = list(per_key.values())
    common = set.intersection(*(set(k) for k in keys)) if keys else {"torch"}
    totals = {b: sum(k[b] for k in keys) for b in sorted(common)}
    return (min(totals, key=totals.get) if totals else "torch"), totals


def derive(paths: list, arch: str | None = None) -> tuple[str, dict, dict, dict]:
    """(arch, {op: backend}, {op: {backend: ms}}, environment) from benchmark JSON files of one run (``arch``: the
    architecture to file them under when the files name none — the CPU rehearsal)."""
    merged, envs = defaultdict(dict), []
    for path in paths:
        payload = json.loads(Path(path).read_text())
        envs.append(payload.get("environment", {}))
        for op, per_key in timings(payload).items():
            merged[op].update(per_key)
    archs = {e.get("arch") or arch for e in envs}
    if len(archs) != 1 or None in archs:
        raise ValueError(f"the files must come from one CUDA architecture, got {sorted(map(str, archs))}")
    table, measured = {}, {}
    for op, per_key in sorted(merged.items()):
        table[op], measured[op] = choose(per_key)
    return archs.pop(), table, measured, envs[0]


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="bench_ops / bench_detailer --per-layer JSON of one GPU run")
    p.add_argument("--out", default="dip_kernels/preferences.json")
    p.add_argument("--arch", default=None, help="file CPU measurements under this architecture (the rehearsal)")
    args = p.parse_args(argv)
    arch, table, measured, env = derive(args.files, args.arch)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc[arch] = {"backends": table, "fwd+bwd ms": measured, "environment": env,
                 "sources": [Path(f).name for f in args.files]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    for op, backend in table.items():
        print(f"{arch} {op:<26} {backend:<7} " + "  ".join(f"{b} {ms:.3f} ms" for b, ms in measured[op].items()))
    print(f"wrote {out}")
    loaded = load_preferences(out)[arch]  # what ``auto`` will pick from this file
    if {op: loaded[op] for op in table} != table:
        raise SystemExit(f"{out} does not load back as written: {loaded} vs {table}")
    return doc


if __name__ == "__main__":
    main()
