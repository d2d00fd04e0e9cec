#!/usr/bin/env bash
# Per-operation CPU table: this project's kernels (`op-bench`), candle's own operations for the
# same computation, and PyTorch, on ResNet-like shapes, same machine, same run, same threads.
#
# Usage: scripts/bench_ops_vs_torch.sh
#   env: BATCH=8  THREADS=<all cores>  WARMUP=2  ITERS=7  ONLY=<case name filter>
#        PYTHON=<python with torch>  (default: .bench-venv, created as in bench_vs_timm.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

batch=${BATCH:-8}
threads=${THREADS:-$(nproc)}
warmup=${WARMUP:-2}
iters=${ITERS:-7}
only=()
if [ -n "${ONLY:-}" ]; then only=(--only "$ONLY"); fi

if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .bench-venv/bin/python ]; then
    echo "creating .bench-venv with torch and timm (one-time download)..." >&2
    python3 -m venv .bench-venv
    .bench-venv/bin/pip install --quiet torch timm
  fi
  PYTHON=.bench-venv/bin/python
fi

cargo build --release --quiet -p tresnet-apps --bin op-bench
export RAYON_NUM_THREADS=$threads OMP_NUM_THREADS=$threads
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

target/release/op-bench -b "$batch" -j "$threads" --warmup "$warmup" --iters "$iters" \
  "${only[@]}" > "$work/ours.jsonl"
target/release/op-bench -b "$batch" "${only[@]}" --list |
  "$PYTHON" scripts/torch_op_bench.py --threads "$threads" --warmup "$warmup" --iters "$iters" \
  > "$work/torch.jsonl"

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads=$threads, batch=$batch, f32, median of $iters"
"$PYTHON" - "$work/ours.jsonl" "$work/torch.jsonl" <<'EOF'
import json, sys
ours = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
torch = {c["name"]: c["torch_ms"] for c in map(json.loads, filter(str.strip, open(sys.argv[2])))}
print("| case | ours ms | candle ms | torch ms | ours vs candle | ours vs torch |")
print("|---|---:|---:|---:|---:|---:|")
for c in ours:
    t = torch[c["name"]]
    print(f"| {c['name']} | {c['ours_ms']:.3f} | {c['candle_ms']:.3f} | {t:.3f} | "
          f"{c['candle_ms'] / c['ours_ms']:.2f}x | {t / c['ours_ms']:.2f}x |")
print("\n(ratios > 1: ours is faster)")
EOF
