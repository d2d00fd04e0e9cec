#!/usr/bin/env bash
# `tag` throughput on a folder of real photos (the test photos, copied COPIES times), split into
# model time and time spent waiting for decoding, next to the same job in Python (PIL + DataLoader
# + timm) in the same run; then the same on camera-sized copies (4032x3024 JPEG q92, BIG_COPIES
# of each test photo), where `tag` runs its defaults (JPEGs decoded at a DCT scale; bf16 products
# on CPUs with AVX-512 BF16), then --dtype f32, then exact decoding in f32. Random weights: speed
# only. Last, label agreement of the defaults with exact decoding, with f32, and with both, for
# the embedded default model (calibrated thresholds) on the test photos and the big copies.
# Each run is timed twice: its loop over the photos (what the program reports) and its whole
# process by the wall clock (start-up included: loading the model; for Python importing torch).
#
# Usage: scripts/bench_tag.sh      env: MODEL=tresnet_m SIZE=224 COPIES=20 BIG_COPIES=8 BATCH=16
#        PYTHON=<python with torch, timm, torchvision, safetensors> (default: .bench-venv)
set -euo pipefail
cd "$(dirname "$0")/.."
model=${MODEL:-tresnet_m}
size=${SIZE:-224}
copies=${COPIES:-20}
big_copies=${BIG_COPIES:-8}
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
# timed NAME COMMAND...: runs COMMAND (which prints its JSON report) and stores that report in
# the variable NAME with the whole process's wall-clock seconds added as "process_seconds"
# (start-up included: loading the model, for Python also importing torch and timm).
timed() {
  local name=$1
  shift
  local start=$EPOCHREALTIME out
  out=$("$@")
  local end=$EPOCHREALTIME
  printf -v "$name" '%s' "$("$PYTHON" -c 'import json, sys; r = json.loads(sys.argv[1]); r["process_seconds"] = float(sys.argv[3]) - float(sys.argv[2]); print(json.dumps(r))' "$out" "$start" "$end")"
}
report() {
  "$PYTHON" - "$@" <<'PY'
import json, sys
runs = [(sys.argv[i], json.loads(sys.argv[i + 1])) for i in range(1, len(sys.argv), 2)]
for name, r in runs:
    print(f"{name:22s} {r['tagged'] / r['seconds']:7.1f} img/s in the loop ({r['seconds']:5.2f} s: model {r['model_seconds']:5.2f} s, waiting for decode {r['decode_wait_seconds']:4.2f} s); whole process {r['tagged'] / r['process_seconds']:5.1f} img/s ({r['process_seconds']:5.2f} s)")
python = runs[-1][1]
for name, r in runs[:-1]:
    loop = (r["tagged"] / r["seconds"]) / (python["tagged"] / python["seconds"])
    process = (r["tagged"] / r["process_seconds"]) / (python["tagged"] / python["process_seconds"])
    print(f"ratio {name} / python: {process:.2f}x whole process, {loop:.2f}x in the loop")
PY
}
timed ours target/release/tag "$work/photos" --weights "$work/bundle" -b "$batch" -o "$work/tags.jsonl" 2>/dev/null
timed theirs "$PYTHON" scripts/tag_bench_python.py tag --model "$model" --size "$size" --photos "$work/photos" --batch-size "$batch" --threads "$threads"
report "ours (tag)" "$ours" "python (PIL+timm)" "$theirs"

names="astronaut.jpg chelsea.png rocket_exif_rot90.jpg hubble_deep_field_cmyk.jpg camera_gray.png logo_rgba.webp"
"$PYTHON" scripts/tag_bench_python.py enlarge --photos tests/fixtures/photos --out "$work/big" --copies "$big_copies" --names $names
echo "# 12 MP: $(ls "$work/big" | wc -l) JPEGs of 4032x3024 / 3024x4032, $(du -sm "$work/big" | cut -f1) MB"
timed scaled target/release/tag "$work/big" --weights "$work/bundle" -b "$batch" -o "$work/big_scaled.jsonl" 2>/dev/null
timed f32 target/release/tag "$work/big" --weights "$work/bundle" -b "$batch" -o "$work/big_f32.jsonl" --dtype f32 2>/dev/null
timed exact target/release/tag "$work/big" --weights "$work/bundle" -b "$batch" -o "$work/big_exact.jsonl" --exact-decode --dtype f32 2>/dev/null
timed theirs "$PYTHON" scripts/tag_bench_python.py tag --model "$model" --size "$size" --photos "$work/big" --batch-size "$batch" --threads "$threads"
echo "# ours (tag) runs in its default precision: $(echo "$scaled" | "$PYTHON" -c 'import json,sys; r=json.load(sys.stdin); print(r["dtype"], "(bf16 products)" if r["bf16_products"] else "(f32 products)")')"
report "ours (tag)" "$scaled" "ours --dtype f32" "$f32" "ours exact, f32" "$exact" "python (PIL+timm)" "$theirs"

# Label agreement of `tag`'s defaults against a reference run, embedded default model:
# agree NAME REFERENCE_FLAGS... (the default run has no flags).
agree() {
  local name=$1
  shift
  echo "# label agreement, tag's default vs $name, embedded default model"
  for folder in test_photos big; do
    target/release/tag "$work/$folder" -o "$work/agree_default_$folder.jsonl" >/dev/null 2>&1
    target/release/tag "$work/$folder" -o "$work/agree_ref_$folder.jsonl" "$@" >/dev/null 2>&1
    "$PYTHON" - "$folder" "$work/agree_ref_$folder.jsonl" "$work/agree_default_$folder.jsonl" <<'PY'
import json, sys
read = lambda p: {r["file"]: r for r in map(json.loads, open(p))}
exact, scaled = read(sys.argv[2]), read(sys.argv[3])
names = lambda r: sorted(l["label"] for l in r["labels"])
ok = [f for f in exact if exact[f].get("error") is None]
same = [f for f in ok if names(exact[f]) == names(scaled[f])]
change = max((abs(a["score"] - b["score"]) for f in ok for a in exact[f]["labels"] for b in scaled[f]["labels"] if a["label"] == b["label"]), default=0.0)
print(f"{sys.argv[1]:12s} same labels on {len(same)}/{len(ok)} readable photos ({100 * len(same) / max(len(ok), 1):.1f} %), largest score change {change:.4f}")
for f in sorted(set(ok) - set(same)):
    print(f"  differs: {f}: {names(exact[f])} -> {names(scaled[f])}")
PY
    rm -f "$work/agree_default_$folder.jsonl" "$work/agree_ref_$folder.jsonl"
  done
}
cp -r tests/fixtures/photos "$work/test_photos"
agree "exact decode (same precision)" --exact-decode
agree "f32 (same decode)" --dtype f32
agree "exact decode in f32 (what coco-eval does)" --exact-decode --dtype f32
