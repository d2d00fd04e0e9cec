#!/usr/bin/env bash
# Data pipeline benchmarks, ours against the Python stack in the same run:
#  - decode + resize + to-tensor of real JPEGs (224 crop, 448 squish; 1 and 2 workers) against
#    PIL + torchvision transforms in a DataLoader with the same number of workers;
#  - parsing a COCO instances file the size of instances_val2014.json against pycocotools.
# env: PYTHON=<python with torch, torchvision, pillow, pycocotools> (default: .bench-venv,
#      created on first use), WORK=<scratch dir> (default: target/bench-data), N_IMAGES=256
set -euo pipefail
cd "$(dirname "$0")/.."
work=${WORK:-target/bench-data}
n=${N_IMAGES:-256}
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .bench-venv/bin/python ]; then
    python3 -m venv .bench-venv
    .bench-venv/bin/pip install --quiet torch torchvision timm pycocotools pillow
  fi
  PYTHON=.bench-venv/bin/python
fi
cargo build --release --quiet -p tresnet-apps --bin data-bench
mkdir -p "$work"
[ -d "$work/photos" ] || "$PYTHON" scripts/make_bench_data.py photos "$work/photos" "$n"
[ -f "$work/instances.json" ] || "$PYTHON" scripts/make_bench_data.py coco "$work/instances.json"

field() { "$PYTHON" -c "import json,sys; print(round(json.loads(sys.stdin.read())['$1'], 3))"; }
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores"
printf '%-22s %8s %12s %12s %7s\n' task workers 'ours' 'python' ratio
for spec in "224 crop" "448 squish"; do
  set -- $spec
  for w in 1 2; do
    ours=$(target/release/data-bench --images "$work/photos" --input-size "$1" --resize "$2" -j "$w" | field img_per_sec)
    theirs=$("$PYTHON" scripts/torch_data_bench.py --images "$work/photos" --input-size "$1" --resize "$2" --workers "$w" | field img_per_sec)
    printf '%-22s %8s %10s/s %10s/s %6.2fx\n' "images $1 $2" "$w" "$ours" "$theirs" "$(awk -v o="$ours" -v t="$theirs" 'BEGIN{print o/t}')"
  done
done
ours=$(target/release/data-bench --coco "$work/instances.json" | field seconds)
theirs=$("$PYTHON" scripts/torch_data_bench.py --coco "$work/instances.json" | field seconds)
printf '%-22s %8s %11ss %11ss %6.2fx\n' "coco json parse ($(du -m "$work/instances.json" | cut -f1) MB)" - "$ours" "$theirs" "$(awk -v o="$ours" -v t="$theirs" 'BEGIN{print t/o}')"
