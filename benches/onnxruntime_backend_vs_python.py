#!/usr/bin/env python3
"""calibench's onnxruntime backend against onnxruntime's own Python session, tract beside it.

For each model (the digits CNN, the PP-OCR classifier, and fixtures/real/*.onnx when present),
runs `calibench run` at fp32, batch 1, on the onnxruntime and reference backends (criterion,
one thread each: CALIBENCH_ORT_THREADS=1), then times an onnxruntime InferenceSession on the
same model file with one intra-op thread, and prints the medians and the ratios.

    pip install onnxruntime numpy
    cargo build --release
    python3 benches/onnxruntime_backend_vs_python.py
"""
import json
import os
import subprocess
import sys
import tempfile
import timeit

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("CALIBENCH", os.path.join(ROOT, "target", "release", "calibench"))
MODELS = [
    ("digits", os.path.join(ROOT, "fixtures/digits/digits_cnn.onnx"), None),
    ("ppocr-cls", os.path.join(ROOT, "fixtures/ppocr-cls/ch_ppocr_mobile_v2.0_cls_infer.onnx"), [1, 3, 48, 192]),
]
for name, shape in (("ppocr-rec", [1, 3, 48, 320]), ("resnet50", [1, 3, 224, 224]), ("mobilenet_v2", [1, 3, 224, 224])):
    path = os.path.join(ROOT, "fixtures", "real", f"{name}.onnx")
    if os.path.exists(path):
        MODELS.append((name, path, shape))


def python_median_ms(model, shape):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    i = s.get_inputs()[0]
    dims = shape or [1 if not isinstance(d, int) else d for d in i.shape]
    feed = {i.name: np.random.default_rng(0).standard_normal(dims).astype(np.float32)}
    for _ in range(20):
        s.run(None, feed)
    n = max(20, min(500, int(2.0 / max(timeit.timeit(lambda: s.run(None, feed), number=3) / 3, 1e-6))))
    return float(np.median(timeit.repeat(lambda: s.run(None, feed), number=1, repeat=n)) * 1e3)


def calibench_medians(name, model, shape, out):
    shape_toml = ""
    if shape:
        import onnx
        m = onnx.load(model, load_external_data=False)
        inits = {t.name for t in m.graph.initializer}
        first = next(x.name for x in m.graph.input if x.name not in inits)
        shape_toml = f'[models.inputs."{first}"]\nshape = {shape}\n'
    spec = os.path.join(out, f"{name}.toml")
    with open(spec, "w") as f:
        f.write(f'version = 1\nname = "{name}"\n[axes]\nprecisions = ["fp32"]\n'
                f'backends = ["onnxruntime", "reference"]\n[[models]]\nid = "{name}"\npath = "{model}"\n'
                f'{shape_toml}[latency]\nwarmup_ms = 500\nmeasurement_ms = 2000\nsamples = 50\n')
    env = dict(os.environ, CALIBENCH_ORT_THREADS="1")
    run = subprocess.run([BIN, "run", "-q", "--run-id", name, "-o", out, spec],
                         capture_output=True, text=True, env=env)
    if run.returncode != 0:
        sys.exit(f"{name}: calibench run failed:\n{run.stderr}")
    medians = {}
    with open(os.path.join(out, name, "results.jsonl")) as f:
        for line in f:
            r = json.loads(line)
            medians[r["cell"]["backend"]] = r["latency"]["median_ms"]
    return medians


def main():
    print(f"onnxruntime {ort.__version__}, one thread; median ms per inference, batch 1, fp32")
    print(f"{'model':14} {'python ort':>11} {'calibench ort':>14} {'ratio':>6} {'tract':>9} {'ratio':>6}")
    with tempfile.TemporaryDirectory() as out:
        for name, model, shape in MODELS:
            py = python_median_ms(model, shape)
            cb = calibench_medians(name, model, shape, out)
            print(f"{name:14} {py:11.4f} {cb['onnxruntime']:14.4f} {cb['onnxruntime'] / py:6.3f} "
                  f"{cb['reference']:9.4f} {cb['reference'] / py:6.3f}")


if __name__ == "__main__":
    main()
