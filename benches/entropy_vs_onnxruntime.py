#!/usr/bin/env python3
"""calibench's entropy calibration next to onnxruntime's, on the demo model's calibration split.

Prints, per tensor, the range (amax) from
  1. `calibench calibrate --method entropy` (TensorRT's published algorithm: |x| histogram,
     2048 bins, 128 levels, KL search from bin 128, threshold (i + 0.5) * bin width),
  2. an independent numpy implementation of that same algorithm (a cross-check of 1),
  3. onnxruntime's entropy calibrator (2048 and 4096 bins, all samples in one batch),
  4. `calibench calibrate --method entropy-onnxruntime` (onnxruntime's variant, reproduced),
     next to 3 at 2048 bins,
and the wall time of 1 and 3 measured here, side by side.

onnxruntime's calibrator is a different variant of the search: a signed histogram over
[-max|x|, max|x|] with the window centred on zero, quantized mass spread over empty bins too,
and integer truncation of the expanded distribution. On the small digits model the KL minimum
is flat, so the two variants pick thresholds several percent apart (see the printed table).

    pip install -r fixtures/requirements.txt scipy
    python3 benches/entropy_vs_onnxruntime.py
"""
import os
import subprocess
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(ROOT, "fixtures", "digits")
MODEL = os.path.join(DIGITS, "digits_cnn.onnx")
CALIB = np.load(os.path.join(DIGITS, "calib.npy"))


def read_trt_cache(path):
    out = {}
    for line in open(path).read().splitlines()[1:]:
        name, value = line.rsplit(": ", 1)
        out[name] = float(np.frombuffer(bytes.fromhex(value)[::-1], dtype="<f4")[0]) * 127.0
    return out


def calibench_entropy(tmp, method="entropy"):
    out = os.path.join(tmp, method + ".cache")
    exe = os.path.join(ROOT, "target", "release", "calibench")
    if not os.path.exists(exe):
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    start = time.perf_counter()
    subprocess.run([exe, "calibrate", "-m", MODEL, "-d", os.path.join(DIGITS, "calib.npy"),
                    "--method", method, "--batch", "200", "-o", out], check=True, capture_output=True)
    return read_trt_cache(out), time.perf_counter() - start


def ort_entropy(tmp, bins):
    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": CALIB}])

        def get_next(self):
            return next(self.it, None)

    start = time.perf_counter()
    cal = create_calibrator(MODEL, None, augmented_model_path=os.path.join(tmp, "aug.onnx"),
                            calibrate_method=CalibrationMethod.Entropy,
                            extra_options={"num_bins": bins, "num_quantized_bins": bins // 16, "symmetric": True})
    cal.collect_data(Reader())
    data = cal.compute_data()
    took = time.perf_counter() - start
    return {k: max(abs(float(v.range_value[0])), abs(float(v.range_value[1]))) for k, v in data.data.items()}, took


def activations(tmp):
    m = onnx.load(MODEL)
    names = ["input"] + [o for n in m.graph.node for o in n.output]
    del m.graph.output[:]
    for n in names[1:]:
        m.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    path = os.path.join(tmp, "all.onnx")
    onnx.save(m, path)
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return dict(zip(names, [CALIB] + s.run(None, {"input": CALIB})))


def smooth(p, eps=1e-4):
    zero = p == 0
    if zero.all() or not zero.any():
        return p
    p = p.copy()
    take = eps * zero.sum() / (~zero).sum()
    p[~zero] = np.maximum(p[~zero] - take, eps)
    p[zero] = eps
    return p


def kl(p, q):
    p, q = p / p.sum(), q / q.sum()
    m = p > 0
    return float((p[m] * np.log(p[m] / q[m])).sum())


def published_entropy(x, bins=2048, levels=128):
    a = np.abs(x.ravel()).astype(np.float64)
    amax = a.max()
    if amax == 0:
        return 0.0
    hist = np.bincount(np.minimum((a * (bins / amax)).astype(np.int64), bins - 1), minlength=bins)
    best = (np.inf, bins)
    for i in range(levels, bins + 1):
        p = hist[:i].astype(np.float64)
        p[-1] += hist[i:].sum()
        q = np.zeros(i)
        for k in range(levels):
            s, e = k * i // levels, (k + 1) * i // levels
            seg = hist[s:e]
            nz = seg > 0
            if nz.any():
                q[s:e] = np.where(nz, seg.sum() / nz.sum(), 0.0)
        d = kl(smooth(p), smooth(q))
        if d < best[0]:
            best = (d, i)
    return min((best[1] + 0.5) * amax / bins, amax)


def main():
    with tempfile.TemporaryDirectory() as tmp:
        mine, t_mine = calibench_entropy(tmp)
        acts = activations(tmp)
        ort2k, t_ort = ort_entropy(tmp, 2048)
        ort4k, _ = ort_entropy(tmp, 4096)
        variant, t_variant = calibench_entropy(tmp, "entropy-onnxruntime")
    print(f"{'tensor':<12}{'calibench':>11}{'numpy (same alg.)':>19}{'ort 2048':>10}{'diff':>8}{'ort 4096':>10}{'diff':>8}")
    worst = 0.0
    for name, amax in mine.items():
        ref = published_entropy(acts[name])
        d2, d4 = (abs(amax - o[name]) / o[name] * 100 for o in (ort2k, ort4k))
        worst = max(worst, abs(amax - ref) / max(ref, 1e-12) * 100)
        print(f"{name:<12}{amax:>11.5f}{ref:>19.5f}{ort2k[name]:>10.5f}{d2:>7.2f}%{ort4k[name]:>10.5f}{d4:>7.2f}%")
    print(f"\ncalibench vs numpy implementation of the same algorithm: max difference {worst:.4f}%")
    print(f"\n{'tensor':<12}{'entropy-onnxruntime':>21}{'ort 2048':>10}{'diff':>10}")
    worst_variant = 0.0
    for name, amax in variant.items():
        d = abs(amax - ort2k[name]) / ort2k[name] * 100
        worst_variant = max(worst_variant, d)
        print(f"{name:<12}{amax:>21.5f}{ort2k[name]:>10.5f}{d:>9.5f}%")
    print(f"calibench entropy-onnxruntime vs onnxruntime: max difference {worst_variant:.5f}% (goal 1%); "
          f"{t_variant:.3f} s vs {t_ort:.3f} s")
    print(f"wall time, 200 samples: calibench {t_mine:.3f} s (process incl. model load), onnxruntime {t_ort:.3f} s; "
          f"ratio calibench/onnxruntime {t_mine / t_ort:.2f}")


if __name__ == "__main__":
    main()
