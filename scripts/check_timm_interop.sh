#!/usr/bin/env bash
# `convert-weights` checked with timm: official (TResNet repo), ASL and ML-Decoder checkpoints
# converted to timm's hub layout, each built by timm from its config.json alone, loaded with
# strict=True and compared with timm's reference logits (f32 at 1e-4; --dtype f16 at 2e-2).
#
# Usage: scripts/check_timm_interop.sh    env: PYTHON=<python with torch, timm, safetensors>
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PYTHON:-}" ]; then
  if [ ! -x .bench-venv/bin/python ]; then
    python3 -m venv .bench-venv
    .bench-venv/bin/pip install --quiet torch timm safetensors
  fi
  PYTHON=.bench-venv/bin/python
fi
cargo build --release --quiet -p tresnet-apps --bin convert-weights
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
f=tests/fixtures
convert() { target/release/convert-weights --weights "$1" -o "$work/$2" "${@:3}" >/dev/null; }
convert $f/tiny_v1_official.pth official
convert $f/tiny_v1_official.pth official_f16 --dtype f16
convert $f/tiny_v1_official_bare.pth official_bare
convert $f/tiny_asl_coco.pth asl
convert $f/tiny_mld_coco.pth ml_decoder
"$PYTHON" scripts/timm_interop.py \
  "$work/official" $f/tiny_v1.safetensors input0 out0.logits 1e-4 \
  "$work/official_f16" $f/tiny_v1.safetensors input0 out0.logits 2e-2 \
  "$work/official_bare" $f/tiny_v1.safetensors input0 out0.logits 1e-4 \
  "$work/asl" $f/tiny_official_heads.safetensors input asl_logits 1e-4 \
  "$work/ml_decoder" $f/tiny_official_heads.safetensors input mld_logits 1e-4
