#!/usr/bin/env bash
# The CPU engines side by side in one run: this project's `bench` in f32 and bf16 against timm
# eager / channels_last / bf16 autocast, ONNX Runtime and OpenVINO (timm's model exported to ONNX),
# on the same threads. Prints a markdown table of img/s and each engine's ratio to ours.
#
# Usage: scripts/bench_cpu_peers.sh [MODEL SIZE BATCHES]...   (default: tresnet_m 224 1,8 and
#                                                              tresnet_l 448 1)
#   env: THREADS=<all cores>  ITERS=7  ROUNDS=2
#        PYTHON=<python with torch timm onnx onnxscript onnxruntime openvino> (default: a venv in
#        .bench-venv, created on first use; none of it is a dependency of the project)
set -euo pipefail
cd "$(dirname "$0")/.."

threads=${THREADS:-$(nproc)}
iters=${ITERS:-7}
rounds=${ROUNDS:-2}
cases=("$@")
if [ ${#cases[@]} -eq 0 ]; then cases=(tresnet_m 224 1,8 tresnet_l 448 1); fi

if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .bench-venv/bin/python ]; then
    echo "creating .bench-venv (torch, timm, onnx, onnxruntime, openvino; one-time download)..." >&2
    python3 -m venv .bench-venv
    .bench-venv/bin/pip install --quiet torch timm onnx onnxscript onnxruntime openvino numpy
  fi
  PYTHON=.bench-venv/bin/python
fi

cargo build --release --quiet -p tresnet-apps --bin bench
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
field() { "$PYTHON" -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "$(grep -o -m1 'avx512_bf16' /proc/cpuinfo || echo 'no avx512_bf16'), threads=$threads"
echo
echo "| model | size | batch | engine | img/s | ours f32 / it | ours bf16 / it |"
echo "|---|---:|---:|---|---:|---:|---:|"
i=0
while [ $i -lt ${#cases[@]} ]; do
  model=${cases[$i]} size=${cases[$((i + 1))]} batches=${cases[$((i + 2))]}
  i=$((i + 3))
  peers=$("$PYTHON" scripts/cpu_peers.py --model "$model" --size "$size" --batches "$batches" \
    --threads "$threads" --iters "$iters" --rounds "$rounds")
  for b in ${batches//,/ }; do
    declare -A ours=()
    for dtype in f32 bf16; do
      best=0
      for _ in $(seq "$rounds"); do
        v=$(target/release/bench --backbone "$model" -b "$b" --input-size "$size" -j "$threads" \
          --warmup 2 --iters "$iters" --dtype "$dtype" --format json 2>/dev/null | field infer_samples_per_sec)
        best=$("$PYTHON" -c "print(max($best, $v))")
      done
      ours[$dtype]=$best
    done
    for dtype in f32 bf16; do
      printf '| %s | %s | %s | ours %s | %.2f | | |\n' "$model" "$size" "$b" "$dtype" "${ours[$dtype]}"
    done
    echo "$peers" | "$PYTHON" -c "
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if r['batch'] != $b:
        continue
    v = r['img_per_sec']
    print(f\"| $model | $size | $b | {r['engine']} | {v:.2f} | {${ours[f32]} / v:.2f} | {${ours[bf16]} / v:.2f} |\")
"
    unset ours
  done
done
