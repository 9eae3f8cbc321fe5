#!/usr/bin/env bash
# Makes the showcase in docs/example/ on a machine with one NVIDIA GPU (it was made on an H200):
# the digits CNN's cache calibrated on the GPU (cuda backend) next to the one calibrated on the
# CPU (reference backend), both — and the fine-tune reuse case — run on the CPU and on the GPU by
# matrices/release-qualification.toml, then the signed-off report.
#   docs/example/make.sh [CALIBENCH] [OUT]
set -euo pipefail
cd "$(dirname "$0")/../.."
CALIBENCH="${1:-target/release/calibench}"
OUT="${2:-docs/example}"
# 1. Calibrate on the GPU (the CPU-calibrated cache is fixtures/digits/digits_cnn.calibench-entropy.cache).
"$CALIBENCH" calibrate --model fixtures/digits/digits_cnn.onnx --data fixtures/digits/calib.npy \
  --backend cuda --gpu 0 --dataset-id digits-calib-200 -o fixtures/digits/digits_cnn.gpu-entropy.cache
"$CALIBENCH" cache diff fixtures/digits/digits_cnn.calibench-entropy.cache fixtures/digits/digits_cnn.gpu-entropy.cache
# 2. The release matrix on the CPU and every GPU (TensorRT is not installed here: its cells are
#    left out rather than recorded as not measured).
"$CALIBENCH" run matrices/release-qualification.toml --only backend=reference,backend=cuda \
  --measurement-ms 1000 --warmup-ms 200 --samples 30 --no-criterion --run-id showcase -o "$OUT/runs"
# 3. The report a release manager signs off, and its Markdown summary.
"$CALIBENCH" report "$OUT/runs/showcase" --sign-off -o "$OUT/report.html"
"$CALIBENCH" report "$OUT/runs/showcase" --sign-off -o "$OUT/summary.md"
# 4. The run's records beside the report (the engine cache under runs/ stays out of the repo).
cp "$OUT/runs/showcase/results.jsonl" "$OUT/runs/showcase/matrix.toml" "$OUT/runs/showcase/inputs.json" "$OUT/"
