#!/usr/bin/env bash
# Side-by-side CPU inference benchmark: this project's `bench` against timm on PyTorch, same
# machine, same run, same threads, same protocol (random weights, warm-up, mean step time).
#
# Usage: scripts/bench_vs_timm.sh [MODEL ...]
#   env: BATCH_SIZES="1 8"  IMG_SIZE=224  THREADS=<all cores>  WARMUP=3  ITERS=10
#        PYTHON=<python with torch + timm>  (default: a venv in .bench-venv, created on first use
#        with `pip install torch timm`; PyTorch is not a dependency of the project)
set -euo pipefail
cd "$(dirname "$0")/.."

models=("${@:-tresnet_m}")
batch_sizes=${BATCH_SIZES:-"1 8"}
img_size=${IMG_SIZE:-224}
threads=${THREADS:-$(nproc)}
warmup=${WARMUP:-3}
iters=${ITERS:-10}

if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .bench-venv/bin/python ]; then
    echo "creating .bench-venv with torch and timm (one-time download)..." >&2
    python3 -m venv .bench-venv
    .bench-venv/bin/pip install --quiet torch timm
  fi
  PYTHON=.bench-venv/bin/python
fi

cargo build --release --quiet -p tresnet-apps --bin bench
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads=$threads, f32, warmup=$warmup, iters=$iters"
printf '%-14s %5s %5s %12s %12s %8s\n' model size batch 'ours img/s' 'timm img/s' ratio
for model in "${models[@]}"; do
  for b in $batch_sizes; do
    theirs=$("$PYTHON" scripts/timm_bench.py --model "$model" --batch-size "$b" --img-size "$img_size" \
      --threads "$threads" --warmup "$warmup" --iters "$iters" | tail -1)
    ours=$(target/release/bench --backbone "$model" -b "$b" --input-size "$img_size" -j "$threads" \
      --warmup "$warmup" --iters "$iters" --no-header 2>/dev/null | tail -1)
    o=$(echo "$ours" | cut -d, -f4)
    t=$(echo "$theirs" | cut -d, -f4)
    ratio=$(awk -v o="$o" -v t="$t" 'BEGIN { printf "%.2f", o / t }')
    printf '%-14s %5s %5s %12s %12s %8s\n' "$model" "$img_size" "$b" "$o" "$t" "${ratio}x"
  done
done
