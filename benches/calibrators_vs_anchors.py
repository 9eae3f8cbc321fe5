#!/usr/bin/env python3
"""calibench's calibrators beside the independent ones, on the same models, data and activations.

    python3 benches/calibrators_vs_anchors.py [--calibench BIN] [--models digits,ppocr-cls,...]
                                              [--repeat 3] [--jobs N]

Anchors (installs nothing itself; `pip install onnxruntime nvidia-modelopt torch`):
- NVIDIA ModelOpt's HistogramCalibrator (a port of TensorRT's entropy calibration; 2048 bins) for
  `--method entropy` (compute_amax("entropy")) and `--method percentile=99.99`, and its max for
  `--method minmax`;
- onnxruntime.quantization's calibrators for `minmax` (MinMax), `percentile=99.99` (Percentile,
  symmetric) and `entropy-onnxruntime --num-bins 128 --num-quantized-bins 128` (Entropy at its
  defaults).
The activations every anchor sees are onnxruntime's fp32 outputs of each tensor calibench
calibrates (the tensor list of calibench's cache), all samples in one batch, as calibench's
default batch holds them. Prints, per method and anchor, the median and max |amax ratio − 1| over
tensors, and wall times: calibench's whole process (`calibrate --backend auto`) against
onnxruntime's whole calibration process (a fresh python3 running its calibrator), each the median
of --repeat runs, and ModelOpt's collect + compute_amax time (its threshold search is Python, about
4 s per tensor on two cores: --jobs spreads the tensors over processes).

Models: the digits CNN (committed calibration data), the PP-OCR orientation classifier
(fixtures/ppocr-cls, Pillow text lines of `fixtures/real_models.py --text`), and the torchvision
exports of `fixtures/real_models.py --torchvision` that are present.
"""
import argparse
import os
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnx

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "digits": ("fixtures/digits/digits_cnn.onnx", "fixtures/digits/calib.npy"),
    "ppocr-cls": ("fixtures/ppocr-cls/ch_ppocr_mobile_v2.0_cls_infer.onnx", "fixtures/real/ppocr-cls.text.calib.npy"),
    "mobilenet_v2": ("fixtures/real/mobilenet_v2.onnx", "fixtures/real/mobilenet_v2.calib.npy"),
    "resnet50": ("fixtures/real/resnet50.onnx", "fixtures/real/resnet50.calib.npy"),
}

ORT_SCRIPT = r"""
import sys, numpy as np, onnxruntime as ort
from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator
model, data, method, out = sys.argv[1:5]
x = np.load(data)
name = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).get_inputs()[0].name
class R(CalibrationDataReader):
    def __init__(self): self.done = False
    def get_next(self):
        if self.done: return None
        self.done = True
        return {name: x}
extra = {"symmetric": True, "percentile": 99.99} if method == "Percentile" else {}
cal = create_calibrator(model, op_types_to_calibrate=None, augmented_model_path=out + ".aug.onnx",
                        calibrate_method=getattr(CalibrationMethod, method), extra_options=extra)
cal.collect_data(R())
ranges = cal.compute_data()
with open(out, "w") as f:
    for t, r in ranges.data.items():
        lo, hi = (float(np.asarray(v).reshape(-1)[0]) for v in r.range_value)
        f.write(f"{t} {max(abs(lo), abs(hi))}\n")
"""


def read_cache(path):
    amax = {}
    for line in open(path).read().splitlines()[1:]:
        name, _, hexv = line.rpartition(": ")
        amax[name] = struct.unpack(">f", bytes.fromhex(hexv))[0] * 127.0
    return amax


def timed(command, repeat):
    """Runs `command` `repeat` times; the median wall time."""
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def calibench(bin_, model, data, method, out, extra=(), repeat=1):
    elapsed = timed([bin_, "calibrate", "-m", model, "-d", data, "--method", method, *extra, "-o", out], repeat)
    return read_cache(out), elapsed


def ort_ranges(model, data, method, out, repeat=1):
    elapsed = timed([sys.executable, "-c", ORT_SCRIPT, model, data, method, out], repeat)
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in open(out)}, elapsed


def activations(model_path, data, tensors):
    import onnxruntime as ort

    m = onnx.load(model_path)
    del m.graph.output[:]
    for t in tensors:
        m.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    outs = s.run(None, {s.get_inputs()[0].name: np.load(data)})
    return dict(zip(tensors, outs))


def modelopt_one(item):
    """ModelOpt's entropy, percentile and max of one tensor's activations."""
    import torch
    from modelopt.torch.quantization.calib import HistogramCalibrator

    name, a = item
    torch.set_num_threads(1)
    x = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    cal = HistogramCalibrator(num_bits=8, axis=None, unsigned=False, num_bins=2048)
    cal.collect(x)
    return name, (float(cal.compute_amax("entropy")),
                  float(cal.compute_amax("percentile", percentile=99.99)),
                  float(x.abs().max()))


def modelopt_ranges(acts, jobs=1):
    t = time.perf_counter()
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("spawn").Pool(jobs) as pool:
            results = pool.map(modelopt_one, list(acts.items()), chunksize=1)
    else:
        results = [modelopt_one(item) for item in acts.items()]
    out = {"entropy": {}, "percentile": {}, "minmax": {}}
    for name, (entropy, percentile, amax) in results:
        out["entropy"][name], out["percentile"][name], out["minmax"][name] = entropy, percentile, amax
    return out, time.perf_counter() - t


def compare(ours, theirs):
    r = [abs(ours[t] / theirs[t] - 1.0) for t in ours if t in theirs and theirs[t] > 0 and ours[t] > 0]
    missing = sum(1 for t in ours if t not in theirs)
    return (float(np.median(r)) if r else float("nan"), float(np.max(r)) if r else float("nan"), len(r), missing)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calibench", default=os.path.join(ROOT, "target/release/calibench"))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--repeat", type=int, default=3, help="runs per wall time (the median is printed)")
    p.add_argument("--jobs", type=int, default=1, help="processes for ModelOpt's per-tensor search")
    p.add_argument("--no-modelopt", action="store_true", help="wall times and onnxruntime only")
    a = p.parse_args()
    for name in a.models.split(","):
        model, data = (os.path.join(ROOT, f) for f in MODELS[name])
        if not (os.path.exists(model) and os.path.exists(data)):
            print(f"{name}: skipped ({model} or {data} absent; see fixtures/real_models.py)")
            continue
        with tempfile.TemporaryDirectory() as d:
            ours, times = {}, {}
            for method, extra in (("entropy", ()), ("minmax", ()), ("percentile=99.99", ()),
                                  ("entropy-onnxruntime", ("--num-bins", "128", "--num-quantized-bins", "128"))):
                ours[method], times[method] = calibench(a.calibench, model, data, method, os.path.join(d, "c.cache"), extra, a.repeat)
            tensors = list(ours["entropy"])
            theirs = {}
            for method in ("MinMax", "Percentile", "Entropy"):
                theirs[method] = ort_ranges(model, data, method, os.path.join(d, f"{method}.txt"), a.repeat)
            if a.no_modelopt:
                mo, mo_time = {"entropy": {}, "percentile": {}, "minmax": {}}, 0.0
            else:
                mo, mo_time = modelopt_ranges(activations(model, data, tensors), a.jobs)
            rows = [
                ("entropy", "ModelOpt entropy" if mo["entropy"] else "(time only)", mo["entropy"], theirs["Entropy"][1]),
                ("percentile=99.99", "ModelOpt percentile", mo["percentile"], None),
                ("percentile=99.99", "onnxruntime Percentile", *theirs["Percentile"]),
                ("minmax", "ModelOpt max", mo["minmax"], None),
                ("minmax", "onnxruntime MinMax", *theirs["MinMax"]),
                ("entropy-onnxruntime", "onnxruntime Entropy (defaults)", *theirs["Entropy"]),
            ]
            print(f"{name}: {len(tensors)} tensors; ModelOpt collect + compute {mo_time:.2f} s")
            for method, anchor, amax, anchor_time in rows:
                if not amax and not anchor_time:
                    continue
                med, mx, n, missing = compare(ours[method], amax) if amax else (float("nan"),) * 2 + (0, 0)
                speed = (f"  time {times[method]:.2f} s vs onnxruntime's {anchor_time:.2f} s ({times[method] / anchor_time:.2f}x)"
                         if anchor_time else f"  time {times[method]:.2f} s")
                print(f"  {method:20} vs {anchor:32} |ratio-1| median {med:.2e} max {mx:.2e} over {n}"
                      f"{f' ({missing} not in the anchor)' if missing else ''}{speed}")


if __name__ == "__main__":
    main()
