#!/usr/bin/env bash
# Packs what a session on a GPU machine needs into gpu-pack.tar.xz (about 10 MB: the binaries are
# ~60 MB each, mostly candle's PTX, which compresses well and repeats across them): the stripped
# CUDA `bench` and `op-bench` and the GPU test binary `cuda_parity`, default build in cuda/ and,
# where built, the cuDNN build in cudnn/. The scripts and fixtures come with the working tree.
#
# Run after `CUDA_TESTS=1 [CUDNN=1] scripts/build-cuda.sh`; carry gpu-pack.tar.xz (git ignores
# it) and run scripts/gpu_session.sh there.
set -euo pipefail
cd "$(dirname "$0")/.."
pack=$(mktemp -d)
trap 'rm -rf "$pack"' EXIT
for variant in cuda cudnn; do
  dir=target-cuda/release
  [ "$variant" = cudnn ] && dir=$dir/cudnn
  [ -x "$dir/bench" ] || continue
  mkdir -p "$pack/$variant"
  for binary in bench op-bench cuda_parity; do
    if [ ! -x "$dir/$binary" ]; then
      echo "gpu_pack: $dir/$binary is missing: run CUDA_TESTS=1 scripts/build-cuda.sh" >&2
      exit 1
    fi
    strip -o "$pack/$variant/$binary" "$dir/$binary"
  done
done
if [ ! -d "$pack/cuda" ]; then
  echo "gpu_pack: no CUDA build in target-cuda/release: run scripts/build-cuda.sh first" >&2
  exit 1
fi
# One stream with a dictionary larger than a binary, so the repeated PTX is stored once.
tar -C "$pack" -cf - . | xz -T1 --lzma2=preset=6,dict=128MiB > gpu-pack.tar.xz.tmp
mv gpu-pack.tar.xz.tmp gpu-pack.tar.xz
echo "gpu_pack: gpu-pack.tar.xz, $(du -h gpu-pack.tar.xz | cut -f1): $(cd "$pack" && echo */*)" >&2
