"""Every Triton kernel compiles for the GPU (sm_90 and sm_80) with its real dtypes, here without a GPU.

The interpreter runs the kernels' arithmetic on CPU but not the compiler; this ahead-of-time compilation through
Triton's own backend (bf16 operands, tensor-core dots, 3-D reshapes, int8 stores) catches what would otherwise
first fail on the GPU machine. The compilation runs in a subprocess without TRITON_INTERPRET (under the
interpreter the kernels are not compilable objects).

    python tests/test_triton_compile.py 90      # compile every case for sm_90, one line per case
"""
import os
import subprocess
import sys

import pytest
import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from dip_kernels.block_boundary import triton as block_boundary_triton
from dip_kernels.detailer import conv_triton as detailer_conv_triton
from dip_kernels.final_context import triton as final_context_triton
from dip_kernels.patch_embed import triton as patch_embed_triton
from dip_kernels.qk_norm_rope import triton as qk_norm_rope_triton
from dip_kernels.swiglu import triton as swiglu_triton

FP32_NAMES = ("rstd_ptr", "mean_ptr", "w_ptr", "p_gate_ptr", "p_shift_ptr", "p_scale_ptr", "p_w_ptr", "cos_ptr",
              "sin_ptr", "qw_ptr", "kw_ptr", "pw_ptr", "part_ptr", "dw_ptr", "db_ptr", "bias_ptr", "bo_ptr")


def signature(kernel, pointer_types: dict):
    sig = {}
    for p in kernel.params:
        if p.is_constexpr:
            sig[p.name] = "constexpr"
        elif p.name.endswith("_ptr"):
            sig[p.name] = pointer_types.get(p.name, "*fp32" if p.name in FP32_NAMES else "*bf16")
        else:
            sig[p.name] = "fp32" if p.name == "eps" else "i64"
    return sig


BF16_DOT = {"COMPUTE": tl.bfloat16, "UPCAST": 0, "PRECISION": "ieee"}
CASES = {
    "block_boundary_fwd": (block_boundary_triton._fwd_kernel, {},
                           dict(HAS_RES=1, HAS_W=1, LAYER=0, BLOCK_M=2, BLOCK_D=2048)),
    "block_boundary_fwd_layer": (block_boundary_triton._fwd_kernel, {},
                                 dict(HAS_RES=0, HAS_W=0, LAYER=1, BLOCK_M=2, BLOCK_D=2048)),
    "block_boundary_bwd": (block_boundary_triton._bwd_kernel, {},
                           dict(HAS_RES=1, HAS_DR=1, HAS_W=1, LAYER=0, BLOCK_M=2, BLOCK_D=2048)),
    "final_context_fwd": (final_context_triton._fwd_kernel, {}, dict(BLOCK_M=2, BLOCK_D=2048)),
    "final_context_bwd": (final_context_triton._bwd_kernel, {}, dict(BLOCK_M=2, BLOCK_D=2048)),
    "swiglu_fwd": (swiglu_triton._fwd_kernel, {}, dict(BLOCK_M=8, BLOCK_H=256)),
    "swiglu_bwd": (swiglu_triton._bwd_kernel, {}, dict(BLOCK_M=8, BLOCK_H=256)),
    "qk_norm_rope_fwd": (qk_norm_rope_triton._fwd_kernel, {"qw_ptr": "*fp32", "kw_ptr": "*fp32"},
                         dict(BLOCK_T=16, BLOCK_P=64)),
    "qk_norm_rope_bwd": (qk_norm_rope_triton._bwd_kernel, {}, dict(BLOCK_T=16, BLOCK_P=64)),
    "patch_embed_fwd": (patch_embed_triton._fwd_kernel, {"img_ptr": "*fp32", "w_ptr": "*fp32"},
                        dict(**BF16_DOT, BLOCK_M=128, BLOCK_N=128, BLOCK_K=32)),
    "patch_embed_bwd_weight": (patch_embed_triton._bwd_weight_kernel, {"img_ptr": "*fp32"},
                               dict(**BF16_DOT, BLOCK_M=32, BLOCK_N=128, BLOCK_K=32)),
    "patch_embed_bwd_input": (patch_embed_triton._bwd_input_kernel, {"w_ptr": "*fp32", "dimg_ptr": "*fp32"},
                              dict(**BF16_DOT, BLOCK_M=128, BLOCK_N=32, BLOCK_K=32)),
}
_CONV = dict(**BF16_DOT, BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, BLOCK_O=16)
_FLAGS = dict(KS=3, STRIDE=1, PAD=1, HAS_B=0, HAS_BIAS=1, SILU=1, STORE_PRE=1, POOL=0, ORDER=2, SCATTER2=0,
              FUSE_OUT=0)
CASES.update({
    "conv_stem_pool": (detailer_conv_triton._conv_fwd_kernel, {"a_ptr": "*fp32", "idx_ptr": "*i8"},
                       dict(_CONV, **{**_FLAGS, "POOL": 1, "ORDER": 1})),
    "conv_two_sources": (detailer_conv_triton._conv_fwd_kernel, {"idx_ptr": "*i8"}, dict(_CONV, **{**_FLAGS,
                                                                                                 "HAS_B": 1})),
    "conv_transpose": (detailer_conv_triton._conv_fwd_kernel, {"idx_ptr": "*i8"},
                       dict(_CONV, **{**_FLAGS, "KS": 1, "PAD": 0, "SILU": 0, "STORE_PRE": 0, "ORDER": 0,
                                      "SCATTER2": 1})),
    "conv_fused_output": (detailer_conv_triton._conv_fwd_kernel, {"idx_ptr": "*i8", "wo_ptr": "*bf16"},
                          dict(_CONV, **{**_FLAGS, "HAS_B": 1, "FUSE_OUT": 1})),
    "conv_dgrad_stride2": (detailer_conv_triton._conv_fwd_kernel, {"idx_ptr": "*i8"},
                           dict(_CONV, **{**_FLAGS, "KS": 2, "STRIDE": 2, "PAD": 0, "HAS_BIAS": 0, "SILU": 0,
                                          "STORE_PRE": 0})),
    "conv_wgrad": (detailer_conv_triton._conv_wgrad_kernel, {},
                   dict(**BF16_DOT, KS=3, STRIDE=1, PAD=1, HAS_B=1, G_SCATTER2=0, BLOCK_M=64, BLOCK_N=64,
                        BLOCK_K=64)),
    "conv_wgrad_scatter": (detailer_conv_triton._conv_wgrad_kernel, {},
                           dict(**BF16_DOT, KS=1, STRIDE=1, PAD=0, HAS_B=0, G_SCATTER2=1, BLOCK_M=64, BLOCK_N=64,
                                BLOCK_K=64)),
    "act_bwd_pool": (detailer_conv_triton._act_bwd_kernel, {"idx_ptr": "*i8"}, dict(POOL=1, BLOCK_M=64, BLOCK_C=64)),
})


def compile_case(case: str, arch: int) -> int:
    """Compile one case for sm_<arch>; returns the cubin size."""
    kernel, pointers, constexprs = CASES[case]
    src = ASTSource(kernel, signature(kernel, pointers), constexprs=constexprs)
    return len(triton.compile(src, target=GPUTarget("cuda", arch, 32), options={"num_warps": 4}).asm["cubin"])


@pytest.mark.parametrize("arch", [90, 80])
def test_every_kernel_compiles_for_the_gpu(arch):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, __file__, str(arch)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert sorted(line.split()[0] for line in done.stdout.splitlines() if line.endswith("ok")) == sorted(CASES)


if __name__ == "__main__":
    for name in sorted(CASES):
        print(name, compile_case(name, int(sys.argv[1])), "ok", flush=True)
