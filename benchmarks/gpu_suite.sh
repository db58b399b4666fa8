#!/usr/bin/env bash
# The one prepared script for the GPU machine (README, "Benchmarks and the GPU suite").
#
#   benchmarks/gpu_suite.sh [--out DIR] [tier ...]      tiers: smoke kernels ops head model (the default, in that
#                                                       order, ~6 minutes) and extended (64K patches, max-autotune,
#                                                       the compiled model: run it only with device time to spare)
#
# Offline install (the machine has torch, no network), then each tier's steps under their own timeout. Every
# step writes its log and results under DIR ($OUT by default, else bench_out/) as soon as it finishes, and
# appends "step rc seconds" to DIR/summary.txt. The default tiers stay under 8 minutes.
# Later issues add their checks to the right tier below.
set -u
cd "$(dirname "$0")/.."
DIR="${OUT:-bench_out}"
if [ "${1:-}" = "--out" ]; then DIR="$2"; shift 2; fi
TIERS="${*:-smoke kernels ops head model}"
mkdir -p "$DIR"
export DIP_CUDA_ARCHS="${DIP_CUDA_ARCHS:-sm_90a}"
export DIP_SKIP_CUDA_EMULATION=1  # the host-emulated twin is for machines without a GPU
export PYTHONUNBUFFERED=1

step() {  # step NAME SECONDS CMD...: run CMD with a timeout, log to DIR/NAME.log, record rc and time
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$DIR/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - start))s" | tee -a "$DIR/summary.txt"
  tail -n 25 "$DIR/$name.log"
  return 0
}

{ date -u; nvidia-smi
  python -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"; } \
  >"$DIR/environment.txt" 2>&1
step install 300 pip install --no-build-isolation --no-deps -e .

for tier in $TIERS; do
  case "$tier" in
    smoke)
      step smoke 120 python benchmarks/smoke.py --out "$DIR/smoke.json" ;;
    kernels)  # every kernel parity test on CUDA (Triton compiled for real, the CUDA extension, graph capture)
      step kernels 200 python -m pytest -q --durations=15 --junitxml="$DIR/kernels_junit.xml" \
        tests/kernels tests/diffusion/test_graphed_sampler.py ;;
    ops)
      step ops 150 python benchmarks/bench_ops.py --out "$DIR/bench_ops.json" ;;
    head)
      step head_8k 150 python benchmarks/bench_detailer.py --patches 8192 --per-layer \
        --out "$DIR/bench_detailer_8k.json"
      # the measured auto table of this architecture (commit it as dip_kernels/preferences.json); other
      # architectures' tables are carried over from the committed file
      cp -f dip_kernels/preferences.json "$DIR/preferences.json" 2>/dev/null
      step preferences 30 python benchmarks/tools/derive_preferences.py "$DIR/bench_ops.json" \
        "$DIR/bench_detailer_8k.json" --out "$DIR/preferences.json" ;;
    model)  # end-to-end, eager and CUDA-graph sampling (Inductor compiling the 632M model: extended tier)
      step model_eager 180 python benchmarks/bench_model.py --compile eager --backends torch,auto --graph \
        --out "$DIR/bench_model_eager.json" ;;
    extended)
      step head_64k 120 python benchmarks/bench_detailer.py --patches 65536 \
        --variants eager_nchw,eager_channels_last,compile,triton --out "$DIR/bench_detailer_64k.json"
      step head_autotune 180 python benchmarks/bench_detailer.py --patches 8192 \
        --variants eager_channels_last,max_autotune,triton --out "$DIR/bench_detailer_8k_autotune.json"
      step model_compiled 240 python benchmarks/bench_model.py --compile compiled --backends torch,auto \
        --out "$DIR/bench_model_compiled.json" ;;
    *) echo "unknown tier $tier (expected smoke, kernels, ops, head, model, extended)"; exit 2 ;;
  esac
done
echo "done: $DIR"
