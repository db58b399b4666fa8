"""Which backend ``auto`` picks for each op on each CUDA architecture (docs/kernels.md §4).

Measured tables live in ``preferences.json`` beside this file, written by ``benchmarks/tools/derive_preferences.py``
from one GPU run of ``bench_ops.py`` and ``bench_detailer.py --per-layer`` (the fastest of torch / triton / cuda by
forward+backward time, with the times and the run's environment recorded). An architecture without a measured
table gets the provisional one below: the fused Triton ops read and write each tensor once where the eager chain
moves 2–3× the bytes (docs/kernels.md §1). Ops not listed use the reference.
"""
import json
from pathlib import Path

MEASURED = Path(__file__).with_name("preferences.json")

_FUSED_TRITON = {"block_boundary": "triton", "modulated_norm": "triton", "qk_norm_rope": "triton",
                 "final_context": "triton", "swiglu": "triton", "patch_embed": "triton"}
PROVISIONAL = {"sm_80": dict(_FUSED_TRITON), "sm_90": dict(_FUSED_TRITON)}


def load_preferences(path: Path = MEASURED) -> dict:
    """{arch: {op: backend}}: the measured tables over the provisional ones."""
    table = {arch: dict(ops) for arch, ops in PROVISIONAL.items()}
    if path.is_file():
        for arch, entry in json.loads(path.read_text()).items():
            table[arch] = dict(entry["backends"])
    return table


PREFERENCES = load_preferences()
