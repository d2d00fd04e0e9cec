#!/usr/bin/env bash
# Where a CPU `bench` run spends its time: a frame-pointer build of `bench` (target-profile/),
# `perf record` with call stacks over the run, then
#   - a flame graph (SVG, via inferno: `cargo install inferno` once), and
#   - a per-operation breakdown by thread role (scripts/profile_breakdown.py), markdown.
#
# Usage: scripts/cpu_profile.sh NAME [bench arguments...]
#   e.g. scripts/cpu_profile.sh train-m-b8 --train -b 8 --warmup 2 --iters 6
#   env: THREADS=<all cores>  FREQ=299  OUT=benchmarks/profiles
# Needs: perf (linux-tools), python3; inferno-collapse-perf + inferno-flamegraph for the SVG.
set -euo pipefail
cd "$(dirname "$0")/.."

name=${1:?usage: scripts/cpu_profile.sh NAME [bench arguments...]}
shift
threads=${THREADS:-$(nproc)}
freq=${FREQ:-299}
out=${OUT:-benchmarks/profiles}
mkdir -p "$out"

RUSTFLAGS="-C force-frame-pointers=yes" CARGO_TARGET_DIR=target-profile \
  cargo build --release --quiet -p tresnet-apps --bin bench
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

RAYON_NUM_THREADS=$threads perf record -q -F "$freq" -g -o "$work/perf.data" \
  target-profile/release/bench -j "$threads" "$@" 2> "$work/bench.txt"
grep '^bench:' "$work/bench.txt" >&2 || true
perf script -i "$work/perf.data" 2>/dev/null > "$work/stacks.txt"

{
  echo "# CPU profile: bench $* — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), threads=$threads, perf at ${freq} Hz, frame pointers."
  echo "Command: \`scripts/cpu_profile.sh $name $*\`"
  echo
  grep '^bench:' "$work/bench.txt" | sed 's/^/    /' || true
  echo
  echo "The whole process is sampled: setup (random weights, BN folding: \`random_init\`,"
  echo "\`to_dtype\`) is in it too, a small share once --iters is large enough. An operation is the"
  echo "innermost frame naming one of this project's functions or a candle tensor operation; \`main\`"
  echo "is the calling thread (set-up: each pass runs on a pool worker), \`pool\` the rayon workers"
  echo "(the passes, their serial parts included)."
  python3 scripts/profile_breakdown.py < "$work/stacks.txt"
} > "$out/$name.md"
echo "breakdown: $out/$name.md" >&2

if command -v inferno-collapse-perf > /dev/null && command -v inferno-flamegraph > /dev/null; then
  inferno-collapse-perf < "$work/stacks.txt" > "$work/folded.txt"
  inferno-flamegraph --title "bench $*" < "$work/folded.txt" > "$out/$name.svg"
  echo "flame graph: $out/$name.svg" >&2
else
  echo "no inferno on PATH: skipped the flame graph (cargo install inferno)" >&2
fi
