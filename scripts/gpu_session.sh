#!/usr/bin/env bash
# A whole GPU check in one command, on a GPU machine (NVIDIA driver, python3 with torch + timm; no
# Rust, no network), from the gpu-pack.tar.xz that scripts/gpu_pack.sh makes:
#   1. unpacks the binaries, points the loader at PyTorch's CUDA libraries, checks they resolve;
#   2. the GPU tests (`cuda_parity`: every CUDA path against the CPU) of each build in the pack;
#   3. `op-bench`: the blur kernel against the tensor path it replaced, f16 and f32;
#   4. scripts/gpu_side_by_side.sh: ours (default and cuDNN builds) against timm eager AMP.
# Logs and tables go to $OUT (default gpu-session/); a failing step is reported and the rest run.
#
# Usage: scripts/gpu_session.sh
#   env: OUT   SIDE_BY_SIDE=0 skips step 4 (its env, e.g. MODELS, ITERS, MAX_BATCH, passes through)
#        PYTHON=python3
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-session}
python=${PYTHON:-python3}
mkdir -p "$out"
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
failures=0
step() { # name status
  echo "gpu_session: $1: $([ "$2" = 0 ] && echo ok || echo "FAILED (exit $2)")" | tee -a "$out/summary.txt" >&2
  [ "$2" = 0 ] || failures=$((failures + 1))
}

"$python" - gpu-pack.tar.xz "$bin" <<'PY' || { echo "gpu_session: cannot unpack gpu-pack.tar.xz" >&2; exit 1; }
import sys, tarfile
with tarfile.open(sys.argv[1]) as pack:
    try:
        pack.extractall(sys.argv[2], filter="data")
    except TypeError:  # Python < 3.12
        pack.extractall(sys.argv[2])
PY
if [ -z "${LD_LIBRARY_PATH:-}" ]; then
  nv=$("$python" -c "import nvidia, sys; sys.stdout.write(list(nvidia.__path__)[0])")
  LD_LIBRARY_PATH=$(find "$nv" -name 'lib*.so*' -printf '%h\n' | sort -u | paste -sd:)
  export LD_LIBRARY_PATH
fi
nvidia-smi > "$out/nvidia-smi.txt" 2>&1
step "nvidia-smi" $?

variants=()
for variant in cuda cudnn; do
  [ -d "$bin/$variant" ] || continue
  variants+=("$variant")
  missing=$(ldd "$bin/$variant/bench" "$bin/$variant/cuda_parity" | grep 'not found')
  echo "${missing:-every library resolves}" > "$out/ldd-$variant.txt"
  step "$variant: libraries" "$([ -z "$missing" ] && echo 0 || echo 1)"
  TRESNET_FIXTURES=$PWD/tests/fixtures "$bin/$variant/cuda_parity" --nocapture --test-threads 1 \
    > "$out/cuda_parity-$variant.log" 2>&1
  status=$?
  # The tests pass by skipping where no GPU is usable: here that is a failure.
  if [ "$status" = 0 ] && grep -q "skipped: no usable CUDA device" "$out/cuda_parity-$variant.log"; then
    status=2
  fi
  step "$variant: GPU tests (cuda_parity; 2 = skipped, no usable GPU)" "$status"
  for dtype in f16 f32; do
    "$bin/$variant/op-bench" --device cuda --dtype "$dtype" -b 64 \
      > "$out/op-bench-$variant-$dtype.jsonl" 2> "$out/op-bench-$variant-$dtype.log"
    step "$variant: op-bench blur $dtype" $?
  done
done

if [ "${SIDE_BY_SIDE:-1}" != 0 ]; then
  cudnn_bench=""
  [ -x "$bin/cudnn/bench" ] && cudnn_bench=$bin/cudnn/bench
  CUDNN_BENCH=$cudnn_bench OUT=$out/gpu-side-by-side.md PYTHON=$python \
    scripts/gpu_side_by_side.sh "$bin/cuda/bench" > "$out/side-by-side.log" 2>&1
  step "side by side vs timm" $?
fi
echo "gpu_session: builds ${variants[*]}; $failures failed step(s); logs in $out" >&2
[ "$failures" = 0 ]
