#!/usr/bin/env python3
"""Prints `name amax` for every tensor onnxruntime's entropy calibrator ranges with its own
defaults (create_calibrator(..., CalibrationMethod.Entropy, extra_options={})).

    python3 tests/ort_entropy_defaults.py MODEL.onnx CALIB.npy
"""
import os
import sys
import tempfile

import numpy as np
from onnxruntime.quantization.calibrate import CalibrationDataReader, CalibrationMethod, create_calibrator

model, calib = sys.argv[1], np.load(sys.argv[2])


class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

    def get_next(self):
        return next(self.it, None)


with tempfile.TemporaryDirectory() as tmp:
    cal = create_calibrator(model, None, augmented_model_path=os.path.join(tmp, "aug.onnx"),
                            calibrate_method=CalibrationMethod.Entropy, extra_options={})
    cal.collect_data(Reader())
    for name, td in cal.compute_data().data.items():
        lo, hi = (float(v) for v in td.range_value)
        print("RANGE", name, max(abs(lo), abs(hi)))
