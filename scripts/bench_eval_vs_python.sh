#!/usr/bin/env bash
# Evaluation benchmarks, ours against the Python tools in the same run:
#  - COCO box evaluation, 5000 images x 80 categories x ~100 detections per image, against
#    pycocotools, faster-coco-eval and hotcoco's Python package (those installed);
#  - multi-label mAP over a 40000 x 80 score matrix against scikit-learn (and the ASL helper).
# env: PYTHON=<python with pycocotools, scikit-learn, safetensors[, faster-coco-eval, hotcoco]>
#      (default: .bench-venv, created on first use), WORK=target/bench-eval
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK:-target/bench-eval}
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .bench-venv/bin/python ]; then
    python3 -m venv .bench-venv
  fi
  .bench-venv/bin/pip install --quiet numpy safetensors scikit-learn pycocotools faster-coco-eval hotcoco
  PYTHON=.bench-venv/bin/python
fi
cargo build --release --quiet -p tresnet-apps --bin eval-bench
mkdir -p "$work"
[ -f "$work/dt.json" ] || "$PYTHON" scripts/make_bench_eval.py coco "$work/gt.json" "$work/dt.json"
[ -f "$work/scores.safetensors" ] || "$PYTHON" scripts/make_bench_eval.py scores "$work/scores.safetensors"

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
ours=$(target/release/eval-bench --gt "$work/gt.json" --dt "$work/dt.json")
echo "ours (hotcoco crate)     $ours"
"$PYTHON" scripts/time_eval_python.py coco "$work/gt.json" "$work/dt.json" | sed 's/^/python                   /'
ours=$(target/release/eval-bench --scores "$work/scores.safetensors")
echo "ours                     $ours"
"$PYTHON" scripts/time_eval_python.py scores "$work/scores.safetensors" | sed 's/^/python                   /'
