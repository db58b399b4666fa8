"""Which backend ``auto`` picks for each op on each CUDA architecture (kernels.md §4).

Filled from benchmark results committed under ``benchmarks/results/``; an op that is not listed uses the
reference. No kernel backend has landed yet, so every architecture resolves to ``torch``.
"""

PREFERENCES = {
    "sm_80": {},
    "sm_90": {},
}
