#!/usr/bin/env bash
# Compile-checks calibench's TensorRT shim and its Rust side against TensorRT header folders you
# provide (nothing is fetched or vendored):
#
#   CUDA_INCLUDE_DIR=/usr/local/cuda/include scripts/check-tensorrt-headers.sh /opt/TensorRT-10.16.0 /opt/TensorRT-11.1.0
#
# Each DIR is a TensorRT install or source tree (DIR/include/NvInfer.h) or an include folder.
# CUDA_INCLUDE_DIR (':'-separated) holds cuda_runtime_api.h and crt/host_defines.h (a CUDA
# toolkit's include/, or the PyPI wheels nvidia-cuda-runtime-cu12 + nvidia-cuda-nvcc-cu12, see
# README). For each folder it runs
#   1. g++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror on the shim, TensorRT and CUDA headers as
#      -isystem (their own warnings are not calibench's), plus -Wno-deprecated-declarations for
#      TensorRT 10 (its calibrator classes are deprecated since 10.1; calibench uses them on purpose);
#   2. cargo clippy --features tensorrt --all-targets -- -D warnings (build.rs compiles the shim
#      against the same headers, then the Rust side is linted).
# Exit status 0 only if every step passed for every folder.
set -uo pipefail

if [ "$#" -eq 0 ]; then
  sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
if [ -z "${CUDA_INCLUDE_DIR:-}" ]; then
  echo "error: set CUDA_INCLUDE_DIR to the folder(s) with cuda_runtime_api.h and crt/host_defines.h" >&2
  exit 2
fi
root="$(cd "$(dirname "$0")/.." && pwd)"
shim="$root/src/backend/tensorrt/shim"
cuda_flags=()
IFS=':' read -r -a cuda_dirs <<< "$CUDA_INCLUDE_DIR"
for d in "${cuda_dirs[@]}"; do
  [ -n "$d" ] && cuda_flags+=(-isystem "$d")
done

status=0
for dir in "$@"; do
  inc="$dir"
  [ -f "$dir/include/NvInfer.h" ] && inc="$dir/include"
  if [ ! -f "$inc/NvInfer.h" ] || [ ! -f "$inc/NvOnnxParser.h" ]; then
    echo "error: $dir has no NvInfer.h and NvOnnxParser.h (neither in it nor in its include/)" >&2
    status=1
    continue
  fi
  major=$(sed -n 's/^#define TRT_MAJOR_ENTERPRISE \([0-9]*\).*/\1/p; s/^#define NV_TENSORRT_MAJOR \([0-9][0-9]*\).*/\1/p' "$inc/NvInferVersion.h" | head -1)
  minor=$(sed -n 's/^#define TRT_MINOR_ENTERPRISE \([0-9]*\).*/\1/p; s/^#define NV_TENSORRT_MINOR \([0-9][0-9]*\).*/\1/p' "$inc/NvInferVersion.h" | head -1)
  extra=()
  [ "${major:-0}" -lt 11 ] && extra+=(-Wno-deprecated-declarations)
  echo "== TensorRT ${major:-?}.${minor:-?} headers in $inc"
  echo "-- g++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror ${extra[*]}"
  if g++ -std=c++17 -fsyntax-only -Wall -Wextra -Werror "${extra[@]}" \
      -I "$shim" -isystem "$inc" "${cuda_flags[@]}" "$shim/calibench_trt.cpp"; then
    echo "   ok"
  else
    echo "   FAILED"
    status=1
  fi
  echo "-- cargo clippy --features tensorrt --all-targets -- -D warnings"
  if (cd "$root" && TENSORRT_INCLUDE_DIR="$inc" CUDA_INCLUDE_DIR="$CUDA_INCLUDE_DIR" \
      CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target/tensorrt-check}" \
      cargo clippy --quiet --features tensorrt --all-targets -- -D warnings); then
    echo "   ok"
  else
    echo "   FAILED"
    status=1
  fi
done
exit $status
