#!/usr/bin/env python3
"""Reference backend (tract) vs onnxruntime CPU on the demo digits CNN, side by side.

Runs `cargo bench --bench reference_inference` (criterion), then times onnxruntime on the same
model and inputs with one intra-op thread (tract runs on one thread), and prints the median
latency of each and their ratio. fp16/int8/best rows compare calibench's simulated precisions
with onnxruntime fp32 (onnxruntime runs the model as exported) and with its own Q/DQ model
from `calibench cache to-qdq` when that file exists.

    pip install -r fixtures/requirements.txt
    python3 benches/onnxruntime_side_by_side.py
"""
import json
import os
import subprocess
import sys
import timeit

import numpy as np
import onnxruntime as ort

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "fixtures", "digits")


def ort_median_ms(model, x, repeat=200):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    feed = {s.get_inputs()[0].name: x}
    for _ in range(50):
        s.run(None, feed)
    times = timeit.repeat(lambda: s.run(None, feed), number=1, repeat=repeat)
    return float(np.median(times) * 1e3)


def criterion_median_ms(precision, batch):
    path = os.path.join(ROOT, "target", "criterion", "reference", precision, str(batch), "new", "estimates.json")
    with open(path) as f:
        return json.load(f)["median"]["point_estimate"] / 1e6


def main():
    if "--no-cargo" not in sys.argv:
        subprocess.run(["cargo", "bench", "--bench", "reference_inference"], cwd=ROOT, check=True)
    x_all = np.load(os.path.join(DIGITS, "eval_inputs.npy"))
    qdq = os.path.join(ROOT, "target", "digits_cnn.qdq.onnx")
    if not os.path.exists(qdq):
        subprocess.run(["cargo", "run", "--release", "--quiet", "--", "cache", "to-qdq", "--model",
                        os.path.join(DIGITS, "digits_cnn.onnx"), "--cache",
                        os.path.join(DIGITS, "digits_cnn.entropy.cache"), "-o", qdq], cwd=ROOT, check=False)
    print(f"{'precision':<10}{'batch':>6}{'calibench ms':>14}{'onnxruntime ms':>16}{'ratio':>8}  onnxruntime model")
    for batch in (1, 32):
        x = np.ascontiguousarray(x_all[:batch])
        ort_fp32 = ort_median_ms(os.path.join(DIGITS, "digits_cnn.onnx"), x)
        ort_qdq = ort_median_ms(qdq, x) if os.path.exists(qdq) else None
        for p in ("fp32", "fp16", "int8", "best"):
            mine = criterion_median_ms(p, batch)
            theirs, which = (ort_qdq, "Q/DQ (to-qdq)") if p in ("int8", "best") and ort_qdq else (ort_fp32, "fp32")
            print(f"{p:<10}{batch:>6}{mine:>14.4f}{theirs:>16.4f}{mine / theirs:>8.2f}  {which}")


if __name__ == "__main__":
    main()
