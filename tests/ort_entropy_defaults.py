#!/usr/bin/env python3
"""Prints `RANGE name amax` for every tensor onnxruntime's calibrators range: its entropy
calibrator with its own defaults (create_calibrator(..., CalibrationMethod.Entropy,
extra_options={})), or with `percentile P` its percentile calibrator (symmetric, 2048 bins,
all samples in one batch so that its histogram is not re-binned between batches).

    python3 tests/ort_entropy_defaults.py MODEL.onnx CALIB.npy [percentile P]
"""
import os
import sys
import tempfile

import numpy as np
from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

model, calib = sys.argv[1], np.load(sys.argv[2])
percentile = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "percentile" else None


class Reader(CalibrationDataReader):
    def __init__(self):
        if percentile is None:
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])
        else:
            self.it = iter([{"input": calib}])

    def get_next(self):
        return next(self.it, None)


with tempfile.TemporaryDirectory() as tmp:
    if percentile is None:
        method, options = CalibrationMethod.Entropy, {}
    else:
        method = CalibrationMethod.Percentile
        options = {"symmetric": True, "num_bins": 2048, "percentile": percentile}
    cal = create_calibrator(model, None, augmented_model_path=os.path.join(tmp, "aug.onnx"),
                            calibrate_method=method, extra_options=options)
    cal.collect_data(Reader())
    for name, td in cal.compute_data().data.items():
        lo, hi = (float(v) for v in td.range_value)
        print("RANGE", name, max(abs(lo), abs(hi)))
