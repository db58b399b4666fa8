"""Which backend ``auto`` picks for each op on each CUDA architecture (kernels.md §4).

Ops not listed use the reference. Provisional until benchmarks/results/ holds an H100 run of
``benchmarks/bench_adaln.py``: the fused Triton ops read and write each tensor once where the eager chain moves
2–3× the bytes (kernels.md §1), so they are listed for the architectures Triton compiles for.
"""

_FUSED_TRITON = {"block_boundary": "triton", "modulated_norm": "triton", "qk_norm_rope": "triton",
                 "final_context": "triton", "swiglu": "triton", "patch_embed": "triton"}

PREFERENCES = {
    "sm_80": dict(_FUSED_TRITON),
    "sm_90": dict(_FUSED_TRITON),
}
