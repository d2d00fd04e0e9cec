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
#        CUDA_TESTS=1  also build and run the GPU tests (tests/tests/cuda_parity.rs; they skip,
#                      saying why, where no GPU is usable) and check that a CUDA binary on a
#                      machine without a GPU reports it as an error instead of crashing (CI)
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
# Everything on CUDA 13.0: the GPU machines' driver (580) loads no PTX from a newer compiler, and
# nvvm must match nvcc's ptxas.
"$venv/bin/pip" install --quiet nvidia-cuda-nvcc==13.0.88 nvidia-cuda-runtime==13.0.96 \
  nvidia-cuda-crt==13.0.88 'nvidia-cuda-cccl==13.0.*' nvidia-nvvm==13.0.88 \
  nvidia-cublas==13.0.2.14 'nvidia-cuda-nvrtc==13.0.*' 'nvidia-curand==10.4.0.*'
CU=$(cd "$(ls -d "$venv"/lib/python3*/site-packages/nvidia/cu13)" && pwd)
[ -e "$CU/lib64" ] || ln -s lib "$CU/lib64"
export PATH=$CU/bin:$PATH CUDA_ROOT=$CU CUDA_PATH=$CU CUDA_HOME=$CU CUDA_COMPUTE_CAP=90

link=$PWD/.cuda-link
mkdir -p "$link"
for l in cudart cublas cublasLt curand nvrtc; do
  ln -sf "$(ls "$CU"/lib/lib$l.so.* | sort | head -1)" "$link/lib$l.so"
done
# One RUSTFLAGS for every step: changing it rebuilds everything.
export RUSTFLAGS="-L $link"
export CARGO_TARGET_DIR=target-cuda

# Pass 1: the libraries (no linking yet), to learn which driver symbols they reference.
cargo build --release --features cuda -p tresnet-apps --lib "$@"
if [ ! -e "$link/libcuda.so" ]; then
  stub=$(mktemp -d)
  nm -u --format=just-symbols target-cuda/release/deps/*.rlib 2>/dev/null \
    | grep -E '^cu[A-Z][A-Za-z0-9_]*$' | sort -u > "$stub/symbols.txt"
  echo "build-cuda: stub libcuda.so with $(wc -l < "$stub/symbols.txt") driver symbols" >&2
  sed 's/.*/int &(void) { return 999; }/' "$stub/symbols.txt" > "$stub/stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$link/libcuda.so" "$stub/stub.c"
  ln -sf libcuda.so "$link/libcuda.so.1"
  rm -rf "$stub"
fi
# Pass 2: the binaries.
cargo build --release --features cuda -p tresnet-apps --bins "$@"
echo "build-cuda: binaries in target-cuda/release (sm_90, CUDA 13.0)" >&2

if [ "${CUDA_TESTS:-0}" = 1 ]; then
  # The wheel libraries and (where no driver is installed) the stub stand in for a GPU machine's.
  runtime=$CU/lib
  if ! ldconfig -p 2>/dev/null | grep -q 'libcuda.so.1 '; then runtime=$link:$runtime; fi
  LD_LIBRARY_PATH=$runtime${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH} \
    cargo test --release --features cuda -p tresnet-tests --test cuda_parity "$@" -- --nocapture
  if [ "$runtime" != "$CU/lib" ]; then
    set +e
    message=$(LD_LIBRARY_PATH=$runtime target-cuda/release/bench --device cuda -b 1 --iters 1 2>&1)
    status=$?
    set -e
    if [ "$status" != 1 ] || ! grep -q "cannot open the GPU" <<<"$message"; then
      echo "build-cuda: expected a clean 'cannot open the GPU' error without a GPU, got status $status:" >&2
      echo "$message" >&2
      exit 1
    fi
    echo "build-cuda: without a GPU the CUDA bench fails cleanly: $(head -1 <<<"$message")" >&2
  fi
fi
