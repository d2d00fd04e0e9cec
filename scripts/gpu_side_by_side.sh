#!/usr/bin/env bash
# Side by side on one GPU: this project's CUDA `bench` (built by scripts/build-cuda.sh and carried
# to the GPU machine) against timm on PyTorch (eager AMP, channels_last off and on), ResNet50 and
# TResNet-M/L/XL at 224 plus TResNet-L at 448, inference and training, one table with the ratios.
# Needs on the GPU machine: the NVIDIA driver, python3 with torch + timm (no network, no Rust).
#
# Usage: scripts/gpu_side_by_side.sh [BENCH_BINARY]     (default target-cuda/release/bench)
#   env: BATCH=64 TRAIN_BATCH=32 ITERS=20 WARMUP=5 PYTHON=python3 OUT=benchmarks/gpu-<date>.md
#        CUDNN_BENCH (default: cudnn/bench next to BENCH_BINARY, built by CUDNN=1
#        scripts/build-cuda.sh): where it exists, its figures (convolutions through cuDNN) get
#        their own columns.
#        MODELS="resnet50:224 tresnet_m:224 tresnet_l:224 tresnet_xl:224 tresnet_l:448" (model:size)
#        MODES="infer train"   MAX_BATCH=1 (0 skips the largest-batch table)
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-target-cuda/release/bench}
cudnn_bench=${CUDNN_BENCH:-$(dirname "$bench")/cudnn/bench}
[ -x "$cudnn_bench" ] || cudnn_bench=""
python=${PYTHON:-python3}
batch=${BATCH:-64}
train_batch=${TRAIN_BATCH:-32}
iters=${ITERS:-20}
warmup=${WARMUP:-5}
models=${MODELS:-resnet50:224 tresnet_m:224 tresnet_l:224 tresnet_xl:224 tresnet_l:448}
modes=${MODES:-infer train}
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
  nv=$("$python" -c "import nvidia, sys; sys.stdout.write(list(nvidia.__path__)[0])")
  LD_LIBRARY_PATH=$(find "$nv" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd:)
  export LD_LIBRARY_PATH
fi
for binary in "$bench" $cudnn_bench; do
  if ldd "$binary" | grep -q 'not found'; then
    echo "gpu_side_by_side: $binary cannot load its libraries:" >&2
    ldd "$binary" | grep 'not found' >&2
    exit 1
  fi
done
card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
out=${OUT:-benchmarks/gpu-$(date -u +%Y-%m-%d).md}
mkdir -p "$(dirname "$out")"

ours() { # binary mode model size batch -> img/s
  [ -n "$1" ] || { echo "n/a"; return; }
  local args=(--backbone "$3" --input-size "$4" -b "$5" --device cuda --iters "$iters" --warmup "$warmup" --format csv --no-header)
  # Training in f16 is mixed precision (f32 master weights, dynamic loss scaling), as timm's AMP.
  if [ "$2" = train ]; then args+=(--train); fi
  "$1" "${args[@]}" --dtype f16 2>/dev/null | tail -1 | cut -d, -f4 || echo "n/a"
}
theirs() { # mode model size batch [channels-last] -> img/s
  local args=(--model "$2" --img-size "$3" --batch-size "$4" --device cuda --amp --iters "$iters" --warmup "$warmup")
  if [ "$1" = train ]; then args+=(--train); fi
  if [ "${5:-}" = cl ]; then args+=(--channels-last); fi
  "$python" scripts/timm_bench.py "${args[@]}" | tail -1 | cut -d, -f4
}
ratio() { "$python" -c "
import sys
try:
    print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')
except (ValueError, ZeroDivisionError):
    print('n/a')" "$1" "$2"; }

{
  echo "# GPU side by side — $(date -u +%Y-%m-%dT%H:%MZ), $card"
  echo
  echo "ours: \`bench --dtype f16\` (training: mixed precision, f32 master weights, loss scaling); timm: eager AMP (f16 autocast, GradScaler), channels_last off / on."
  echo
  echo "| mode | model | size | batch | ours img/s | ours cuDNN img/s | timm img/s | timm CL img/s | ours / timm | ours / timm CL | cuDNN / timm | cuDNN / timm CL |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  for mode in $modes; do
    b=$batch; [ "$mode" = train ] && b=$train_batch
    for spec in $models; do
      model=${spec%%:*}; size=${spec##*:}
      o="n/a"; oc="n/a"
      if [ "$model" != resnet50 ]; then
        o=$(ours "$bench" "$mode" "$model" "$size" "$b")
        oc=$(ours "$cudnn_bench" "$mode" "$model" "$size" "$b")
      fi
      t=$(theirs "$mode" "$model" "$size" "$b")
      tc=$(theirs "$mode" "$model" "$size" "$b" cl)
      echo "| $mode | $model | $size | $b | $o | $oc | $t | $tc | $(ratio "$o" "$t") | $(ratio "$o" "$tc") | $(ratio "$oc" "$t") | $(ratio "$oc" "$tc") |"
    done
  done
  if [ "${MAX_BATCH:-1}" != 0 ]; then
    echo
    echo "Largest batch that fits (ours, \`bench --max-batch\`: doubling from 64, then bisecting) and img/s at it:"
    echo
    echo "| mode | model | size | largest batch | img/s at it |"
    echo "|---|---|---|---|---|"
    for mode in $modes; do
      for model in tresnet_m tresnet_l tresnet_xl; do
        args=(--backbone "$model" --input-size 224 -b 64 --max-batch --device cuda --iters "$iters" --warmup 2 --format json)
        if [ "$mode" = train ]; then args+=(--train); fi
        args+=(--dtype f16)
        line=$("$bench" "${args[@]}" 2>/dev/null | tail -1 || true)
        echo "| $mode | $model | 224 | $("$python" -c "import json, sys; r = json.loads(sys.argv[1] or '{}'); print(r.get('max_batch_size', 'n/a'), '|', round(r['infer_samples_per_sec'], 1) if r else 'n/a')" "$line") |"
      done
    done
  fi
} | tee "$out"
echo "written to $out" >&2
