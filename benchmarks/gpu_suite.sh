#!/usr/bin/env bash
# The one prepared script for the GPU machine (README, "Benchmarks and the GPU suite").
#
#   benchmarks/gpu_suite.sh [--rehearse] [--tier default|extended] [--out DIR] [--deadline SECONDS]
#
# default tier, by value per second: install, smoke, kernel parity tests on CUDA, op and head benchmarks, the auto
# table they imply, dip.train's training step, sampling, then a schema check of every JSON. Step limits add up to
# 480 s after the install; a hard deadline (default 500 s from the start: one `run` of 600 s with room to spare)
# kills a step that would overrun it and lists every later step as skipped. extended: what does not fit (the
# 64K-patch head, max-autotune, the compiled model).
#
# Only what lies under DIR ($OUT, else bench_out/) comes back from the device, at most 8 files: summary.txt (one line
# per step: name, rc or "skipped", seconds, limit), environment.txt, and results.tar.gz — every step's log and JSON,
# re-packed after each step so that a killed run still returns everything done so far.
#
# --rehearse runs every step on CPU at toy sizes (the same scripts and flags; Triton under its interpreter, the CUDA
# kernels through their emulator), adds a step that overruns its limit on purpose (it must be killed and the
# following steps must still run), and exits 1 if any other step failed. CI runs it (tests/test_gpu_suite.py).
set -u
cd "$(dirname "$0")/.."
REHEARSE=0 TIER=default DIR="${OUT:-bench_out}" DEADLINE=500
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) REHEARSE=1 ;;
    --tier) TIER="$2"; shift ;;
    --out) DIR="$2"; shift ;;
    --deadline) DEADLINE="$2"; shift ;;
    *) echo "usage: $0 [--rehearse] [--tier default|extended] [--out DIR] [--deadline SECONDS]"; exit 2 ;;
  esac
  shift
done
case "$TIER" in default|extended) ;; *) echo "unknown tier $TIER (expected default or extended)"; exit 2 ;; esac
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
WORK=$(mktemp -d)  # logs and JSON: packed into results.tar.gz, never more than 8 files under DIR
trap 'rm -rf "$WORK"' EXIT
: >"$DIR/summary.txt"
export PYTHONUNBUFFERED=1 DIP_CUDA_ARCHS="${DIP_CUDA_ARCHS:-sm_90a}"
if [ "$REHEARSE" = 1 ]; then
  export TRITON_INTERPRET=1 DIP_CUDA_EMULATE=1 CUDA_VISIBLE_DEVICES=""
else
  export DIP_SKIP_CUDA_EMULATION=1  # the host-emulated twin is for machines without a GPU
fi
START=$SECONDS FAILED=0

pack() { tar -czf "$DIR/results.tar.gz.tmp" -C "$WORK" . && mv "$DIR/results.tar.gz.tmp" "$DIR/results.tar.gz"; }

step() {  # step NAME LIMIT CMD...: run CMD under min(LIMIT, time left), log it, record it, re-pack
  local name=$1 limit=$2; shift 2
  local left=$((DEADLINE - (SECONDS - START)))
  if [ "$left" -lt 5 ]; then
    echo "$name skipped (deadline: ${left}s left of ${DEADLINE}s) limit=${limit}s" | tee -a "$DIR/summary.txt"
    FAILED=1  # an incomplete run says so in its exit status too
    return 0
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  local begin=$SECONDS
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=5 "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  echo "$name rc=$rc $((SECONDS - begin))s limit=${limit}s" | tee -a "$DIR/summary.txt"
  tail -n 15 "$WORK/$name.log"
  [ "$rc" -ne 0 ] && [ "$name" != overrun_probe ] && FAILED=1
  pack
  return 0
}

# toy sizes for the rehearsal; the GPU run uses each script's CUDA defaults
if [ "$REHEARSE" = 1 ]; then
  INSTALL=(python -m pip install --dry-run --no-build-isolation --no-deps -e .)
  SMOKE=(--preset DiP-T/8 --batch 1 --image-size 16 --backends torch,auto) KERNEL_TESTS=(-k "test_swiglu or test_final_context")
  OPS=(--batch 2 --reps 1 --ops swiglu,final_context) HEAD=(--patches 2 --reps 1 --variants eager_channels_last)
  ARCH=(--arch sm_90) MODEL=(--reps 1 --sample-steps 2) CHECK=(--require-all)
else
  INSTALL=(pip install --no-build-isolation --no-deps -e .)
  SMOKE=() KERNEL_TESTS=() OPS=() HEAD=(--patches 8192) ARCH=() MODEL=() CHECK=()
fi

{ date -u; nvidia-smi 2>&1 | head -n 15; git rev-parse HEAD 2>/dev/null
  python -c "import sys, torch, triton; print('python', sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
  nvcc --version 2>&1 | tail -n 2; } >"$DIR/environment.txt" 2>&1
cp "$DIR/environment.txt" "$WORK/environment.txt"

if [ "$TIER" = default ]; then
  step install 240 "${INSTALL[@]}"
  step smoke 45 python -m benchmarks.smoke "${SMOKE[@]}" --out "$WORK/smoke.json"
  [ "$REHEARSE" = 1 ] && step overrun_probe 2 sleep 30  # must be killed; the next steps still run
  step kernels 140 python -m pytest -q -x -p no:cacheprovider --junitxml="$WORK/kernels_junit.xml" \
    tests/kernels tests/diffusion/test_graphed_sampler.py "${KERNEL_TESTS[@]}"
  step ops 75 python benchmarks/bench_ops.py "${OPS[@]}" --out "$WORK/bench_ops.json"
  step head 75 python benchmarks/bench_detailer.py --per-layer "${HEAD[@]}" --out "$WORK/bench_detailer.json"
  cp -f dip_kernels/preferences.json "$WORK/preferences.json" 2>/dev/null  # other architectures carried over
  step preferences 15 python -m benchmarks.tools.derive_preferences "$WORK/bench_ops.json" \
    "$WORK/bench_detailer.json" "${ARCH[@]}" --out "$WORK/preferences.json"
  step train_step 60 python benchmarks/bench_model.py --modes train --compile eager --backends torch,auto \
    "${MODEL[@]}" --out "$WORK/bench_model_train.json"
  step sampling 60 python benchmarks/bench_model.py --modes sample,split --compile eager --backends torch,auto \
    --graph "${MODEL[@]}" --out "$WORK/bench_model_sample.json"
else
  step head_64k 150 python benchmarks/bench_detailer.py --patches 65536 \
    --variants eager_nchw,eager_channels_last,compile,triton --out "$WORK/bench_detailer_64k.json"
  step head_autotune 180 python benchmarks/bench_detailer.py --patches 8192 \
    --variants eager_channels_last,max_autotune,triton --out "$WORK/bench_detailer_8k_autotune.json"
  step model_compiled 240 python benchmarks/bench_model.py --compile compiled --backends torch,auto \
    --out "$WORK/bench_model_compiled.json"
fi
step check_results 10 python -m benchmarks.tools.check_results "$WORK" "${CHECK[@]}"
[ -f "$WORK/preferences.json" ] && cp "$WORK/preferences.json" "$DIR/preferences.json"
pack
echo "done in $((SECONDS - START))s: $DIR/summary.txt, $DIR/results.tar.gz"
exit "$FAILED"
