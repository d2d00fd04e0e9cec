#!/usr/bin/env bash
# Builds the CUDA binaries (compute capability 9.0: H100/H200) on a machine without a GPU or a
# CUDA installation, from NVIDIA's CUDA 13.0 wheels on PyPI:
#   .cuda-venv/   nvcc, headers and libraries (about 1.1 GB)
#   .cuda-link/   unversioned link names for the wheel libraries, and a stub libcuda.so (soname
#                 libcuda.so.1) exporting the driver symbols the build references — at run time
#                 the real driver's libcuda.so.1 is loaded instead
#   target-cuda/  the build (kept apart from the CPU build: other flags, other artefacts)
# Result: target-cuda/release/{bench,embed,coco-eval,top1-eval,tag,finetune,...} with the `cuda`
# feature. They load libcuda.so.1 (driver), libcudart.so.13, libcublas.so.13, libcublasLt.so.13,
# libcurand.so.10 (`readelf -d` lists them): on a GPU machine point LD_LIBRARY_PATH at the
# directories that hold them (README, "GPU").
#
# Usage: scripts/build-cuda.sh [extra cargo args]
#   env: CUDA_VENV (default .cuda-venv)
#        CUDNN=1       also build the binaries with the `cudnn` feature (candle's convolutions
#                      through cuDNN 9, from the nvidia-cudnn-cu13 wheel; they load libcudnn.so.9
#                      too) into target-cuda/release/cudnn/, to measure against the default path
#        CUDA_TESTS=1  also build and run the GPU tests (tests/tests/cuda_parity.rs, with CUDNN=1
#                      for both builds; they skip, saying why, where no GPU is usable) and check
#                      that a CUDA binary on a machine without a GPU reports it as an error
#                      instead of crashing (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${CUDA_VENV:-.cuda-venv}
if [ ! -x "$venv/bin/python" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    # Debian keeps ensurepip in a separate package.
    rm -rf "$venv"
    sudo_cmd=""
    if [ "$(id -u)" != 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$venv"
  fi
fi
cudnn=${CUDNN:-0}
cuda_tests=${CUDA_TESTS:-0}
# Everything on CUDA 13.0: the GPU machines' driver (580) loads no PTX from a newer compiler, and
# nvvm must match nvcc's ptxas. cuDNN 9.21 is the version cudarc 0.19's bindings were made from
# (any cuDNN 9 library, as PyTorch's wheels bring, serves them at run time).
wheels=(nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88
  'nvidia-cuda-cccl==13.0.*' nvidia-nvvm==13.0.88 nvidia-cublas==13.0.2.14
  'nvidia-cuda-nvrtc==13.0.*' 'nvidia-curand==10.4.0.*')
if [ "$cudnn" = 1 ]; then wheels+=('nvidia-cudnn-cu13==9.21.*'); fi
"$venv/bin/pip" install --quiet "${wheels[@]}"
CU=$(cd "$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13)" && pwd)
[ -e "$CU/lib64" ] || ln -s lib "$CU/lib64"
export PATH=$CU/bin:$PATH CUDA_ROOT=$CU CUDA_PATH=$CU CUDA_HOME=$CU CUDA_COMPUTE_CAP=90

link=$PWD/.cuda-link
mkdir -p "$link"
for l in cudart cublas cublasLt curand nvrtc; do
  ln -sf "$(ls "$CU"/lib/lib$l.so.* | sort | head -1)" "$link/lib$l.so"
done
runtime=$CU/lib
if [ "$cudnn" = 1 ]; then
  cudnn_lib=$(find "$venv"/lib/python3*/site-packages/nvidia -name 'libcudnn.so.9' | head -1)
  ln -sf "$(cd "$(dirname "$cudnn_lib")" && pwd)/libcudnn.so.9" "$link/libcudnn.so"
  runtime=$runtime:$(cd "$(dirname "$cudnn_lib")" && pwd)
fi
# One RUSTFLAGS for every step: changing it rebuilds everything.
export RUSTFLAGS="-L $link"
export CARGO_TARGET_DIR=target-cuda

# One cargo selection for every step, so that the binaries and the GPU tests share one build
# (another package selection would unify dependency features differently and rebuild it all).
packages=(-p tresnet-apps)
targets=(--bins)
if [ "$cuda_tests" = 1 ]; then packages+=(-p tresnet-tests); targets+=(--test cuda_parity); fi
# The cuDNN variant first: both share the build directory (candle's kernels are compiled once),
# and the default binaries, built last, are the ones left in target-cuda/release.
features=(cuda)
if [ "$cudnn" = 1 ]; then features=(cudnn cuda); fi

# Linking needs a libcuda.so. Where the stub is missing (or lacks the cuDNN build's symbols),
# compile everything first (the links fail), then stub every driver symbol the compiled
# libraries reference.
stub_kind=$link/stub-features
if [ ! -e "$link/libcuda.so" ] || ! grep -qx "${features[*]}" "$stub_kind" 2>/dev/null; then
  for feature in "${features[@]}"; do
    cargo build --release --features "$feature" "${packages[@]}" "${targets[@]}" --keep-going "$@" \
      || echo "build-cuda: links failed as expected before the libcuda stub exists" >&2
  done
  stub=$(mktemp -d)
  nm -u --format=just-symbols target-cuda/release/deps/*.rlib 2>/dev/null \
    | grep -E '^cu[A-Z][A-Za-z0-9_]*$' | sort -u > "$stub/symbols.txt"
  echo "build-cuda: stub libcuda.so with $(wc -l < "$stub/symbols.txt") driver symbols" >&2
  sed 's/.*/int &(void) { return 999; }/' "$stub/symbols.txt" > "$stub/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$stub/stub.c"
  ln -sf libcuda.so "$link/libcuda.so.1"
  echo "${features[*]}" > "$stub_kind"
  rm -rf "$stub"
fi
for feature in "${features[@]}"; do
  cargo build --release --features "$feature" "${packages[@]}" "${targets[@]}" "$@"
  if [ "$feature" = cudnn ]; then
    mkdir -p target-cuda/release/cudnn
    find target-cuda/release -maxdepth 1 -type f -perm -u+x ! -name cuda_parity \
      -exec cp -f {} target-cuda/release/cudnn/ \;
    echo "build-cuda: cuDNN binaries in target-cuda/release/cudnn" >&2
  fi
done
echo "build-cuda: binaries in target-cuda/release (sm_90, CUDA 13.0)" >&2

if [ "$cuda_tests" = 1 ]; then
  # The wheel libraries and (where no driver is installed) the stub stand in for a GPU machine's.
  without_gpu=0
  if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '; then runtime=$link:$runtime; without_gpu=1; fi
  for feature in "${features[@]}"; do
    LD_LIBRARY_PATH=$runtime${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
      cargo test --release --features "$feature" "${packages[@]}" --test cuda_parity "$@" -- --nocapture
    # Beside the binaries of its build, for scripts/gpu_pack.sh.
    exe=$(cargo test --release --features "$feature" "${packages[@]}" --test cuda_parity --no-run "$@" 2>&1 \
      | grep -o 'target-cuda/release/deps/cuda_parity-[0-9a-f]*' | tail -1)
    dest=target-cuda/release; [ "$feature" = cudnn ] && dest=$dest/cudnn
    cp -f "$exe" "$dest/cuda_parity"
  done
  if [ "$without_gpu" = 1 ]; then
    benches=(target-cuda/release/bench)
    if [ "$cudnn" = 1 ]; then benches+=(target-cuda/release/cudnn/bench); fi
    for bench in "${benches[@]}"; do
      set +e
      message=$(LD_LIBRARY_PATH=$runtime "$bench" --device cuda -b 1 --iters 1 2>&1)
      status=$?
      set -e
      if [ "$status" != 1 ] || ! grep -q "cannot open the GPU" <<<"$message"; then
        echo "build-cuda: expected a clean 'cannot open the GPU' error from $bench without a GPU, got status $status:" >&2
        echo "$message" >&2
        exit 1
      fi
      echo "build-cuda: without a GPU $bench fails cleanly: $(head -1 <<<"$message")" >&2
    done
  fi
fi
