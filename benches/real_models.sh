#!/usr/bin/env bash
# Real third-party models on both CPU backends: for every model in fixtures/ppocr-cls and
# fixtures/real (made by fixtures/real_models.py), calibrate an entropy cache on its calib
# inputs, then run fp32/fp16/int8/best on the reference (tract) and onnxruntime backends with
# the cross-check on, and print one line per cell. Figures for the README come from here.
#
#   python3 fixtures/real_models.py --ocr --torchvision     # once (torchvision needs torch)
#   benches/real_models.sh [OUT_DIR [MODEL…]]                 # needs onnxruntime (ORT_DYLIB_PATH or pip)
#
# Environment: CALIBENCH (the binary, default target/release/calibench), EVAL (samples per
# model, default 4).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-benches/out/real}
shift || true
ONLY=" $* "
BIN=${CALIBENCH:-target/release/calibench}
EVAL=${EVAL:-4}
mkdir -p "$OUT"

# name, model, calibration inputs (.npy or empty for generated), input shape
models=()
[ -f fixtures/ppocr-cls/ch_ppocr_mobile_v2.0_cls_infer.onnx ] &&
  models+=("ppocr-cls|fixtures/ppocr-cls/ch_ppocr_mobile_v2.0_cls_infer.onnx|1, 3, 48, 192")
for m in ppocr-det:"1, 3, 320, 320" ppocr-rec:"1, 3, 48, 320" resnet50:"1, 3, 224, 224" mobilenet_v2:"1, 3, 224, 224" \
  mobilenet_v3_small:"1, 3, 224, 224" efficientnet_b0:"1, 3, 224, 224"; do
  name=${m%%:*}
  [ -f "fixtures/real/$name.onnx" ] && models+=("$name|fixtures/real/$name.onnx|${m#*:}")
done

for entry in "${models[@]}"; do
  IFS='|' read -r name model shape <<<"$entry"
  if [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $name "* ]]; then continue; fi
  dir="$OUT/$name"
  mkdir -p "$dir"
  calib="fixtures/real/$name.calib.npy"
  eval="fixtures/real/$name.eval.npy"
  if [ ! -f "$calib" ]; then
    # The committed classifier: text-line-sized inputs in PaddleOCR's [-1, 1] range.
    python3 - "$dir" "$shape" <<'PY'
import sys, numpy as np
d, shape = sys.argv[1], [int(s) for s in sys.argv[2].split(",")[1:]]
rng = np.random.default_rng(7)
np.save(f"{d}/calib.npy", rng.uniform(-1, 1, (16, *shape)).astype(np.float32))
np.save(f"{d}/eval.npy", rng.uniform(-1, 1, (16, *shape)).astype(np.float32))
PY
    calib="$dir/calib.npy"
    eval="$dir/eval.npy"
  fi
  python3 -c "import numpy as np, sys; np.save(sys.argv[2], np.load(sys.argv[1])[:$EVAL])" "$eval" "$dir/eval_n.npy"
  start=$(date +%s.%N)
  if ! "$BIN" calibrate -m "$model" -d "$calib" --method entropy -o "$dir/entropy.cache" 2>"$dir/calibrate.log"; then
    echo "$name: calibrate failed:"; cat "$dir/calibrate.log"; continue
  fi
  echo "$name: calibrate $(tail -1 "$dir/calibrate.log")"
  input=$(python3 -c "import onnx,sys; m=onnx.load(sys.argv[1]); i=set(x.name for x in m.graph.initializer); print([x.name for x in m.graph.input if x.name not in i][0])" "$model")
  cat >"$dir/spec.toml" <<EOF
version = 1
name = "$name"
[axes]
precisions = ["fp32", "fp16", "int8", "best"]
backends = ["reference", "onnxruntime"]
[[models]]
id = "$name"
path = "$(realpath "$model")"
eval_inputs = "$(realpath "$dir/eval_n.npy")"
reference_backend = "onnxruntime"
[models.inputs."$input"]
shape = [$shape]
[models.tolerance]
atol = 1e-4
rtol = 1e-3
[models.tolerance.precision.fp16]
atol = 0.05
rtol = 0.05
check = "quantile=0.99"
[models.tolerance.precision.int8]
atol = 1000.0
min_cosine = 0.99
[models.tolerance.precision.best]
atol = 1000.0
min_cosine = 0.99
[[caches]]
id = "entropy"
model = "$name"
path = "$(realpath "$dir/entropy.cache")"
[cross_check]
backends = ["reference", "onnxruntime"]
[latency]
warmup_ms = 1
measurement_ms = 20
samples = 3
EOF
  "$BIN" run -q --no-criterion --run-id run -o "$dir/runs" "$dir/spec.toml" >/dev/null 2>"$dir/run.log" || true
  python3 - "$dir/runs/run/results.jsonl" "$name" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    a = (r.get("accuracy") or {}).get("outputs", [{}])[0]
    x = (r.get("cross_check") or [{}])[0]
    a = {k: (float("nan") if v is None else v) for k, v in a.items()}
    x = {k: (float("nan") if v is None else v) for k, v in x.items()}
    lat = (r.get("latency") or {}).get("median_ms")
    err = (r.get("error") or {}).get("message", "").split("\n")[0][:160]
    print(f"{sys.argv[2]:13} {r['cell']['precision']:5} {r['cell']['backend']:11} {r['status']:7} "
          f"cos_vs_fp32 {a.get('cosine', float('nan')):.6f} max|d| {a.get('max_abs', float('nan')):.3e} "
          f"x-check {x.get('backend', '-')}: cos {x.get('cosine', float('nan')):.6f} max|d| {x.get('max_abs', float('nan')):.3e} "
          f"median {lat if lat is None else round(lat, 3)} ms {err}")
PY
done
