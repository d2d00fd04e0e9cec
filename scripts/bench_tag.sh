#!/usr/bin/env bash
# `tag` throughput on a folder of real photos (the test photos, copied COPIES times), split into
# model time and time spent waiting for decoding, next to the same job in Python (PIL + DataLoader
# + timm) in the same run. Random weights: speed only.
#
# Usage: scripts/bench_tag.sh            env: MODEL=tresnet_m SIZE=224 COPIES=20 BATCH=16
#        PYTHON=<python with torch, timm, torchvision, safetensors> (default: .bench-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-tresnet_m}
size=${SIZE:-224}
copies=${COPIES:-20}
batch=${BATCH:-16}
threads=$(nproc)
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .bench-venv/bin/python ]; then
    python3 -m venv .bench-venv
    .bench-venv/bin/pip install --quiet torch torchvision timm safetensors
  fi
  PYTHON=.bench-venv/bin/python
fi
cargo build --release --quiet -p tresnet-apps --bin tag
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/photos"
for i in $(seq 1 "$copies"); do
  for f in astronaut.jpg chelsea.png rocket_exif_rot90.jpg hubble_deep_field_cmyk.jpg camera_gray.png logo_rgba.webp; do
    cp "tests/fixtures/photos/$f" "$work/photos/${i}_$f"
  done
done
"$PYTHON" scripts/tag_bench_python.py bundle --model "$model" --size "$size" --bundle "$work/bundle"
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads=$threads, $model @$size squish, batch $batch, $(ls "$work/photos" | wc -l) photos"
ours=$(target/release/tag "$work/photos" --weights "$work/bundle" -b "$batch" -o "$work/tags.jsonl" 2>/dev/null)
theirs=$("$PYTHON" scripts/tag_bench_python.py tag --model "$model" --size "$size" --photos "$work/photos" --batch-size "$batch" --threads "$threads")
"$PYTHON" - "$ours" "$theirs" <<'PY'
import json, sys
o, t = json.loads(sys.argv[1]), json.loads(sys.argv[2])
for name, r in (("ours (tag)", o), ("python (PIL+timm)", t)):
    print(f"{name:18s} {r['tagged'] / r['seconds']:7.1f} img/s  total {r['seconds']:6.2f} s  model {r['model_seconds']:6.2f} s  waiting for decode {r['decode_wait_seconds']:5.2f} s")
print(f"ratio ours/python: {(o['tagged'] / o['seconds']) / (t['tagged'] / t['seconds']):.2f}x")
PY
