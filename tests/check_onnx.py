#!/usr/bin/env python3
"""Checks models calibench rewrote: onnx.checker with full shape inference, then one run in
onnxruntime on the given inputs; prints one line per model, exits 1 if any fails.

    python3 tests/check_onnx.py INPUTS.npz MODEL.onnx [MODEL.onnx …]
"""
import sys

import numpy as np
import onnx
import onnxruntime as ort

feeds = dict(np.load(sys.argv[1]))
failed = False
for path in sys.argv[2:]:
    try:
        onnx.checker.check_model(onnx.load(path), full_check=True)
        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        outs = session.run(None, {i.name: feeds[i.name] for i in session.get_inputs()})
        finite = all(np.isfinite(o).all() for o in outs)
        print(f"{path}: ok ({len(outs)} outputs, finite={finite})")
        failed |= not finite
    except Exception as e:  # noqa: BLE001 - report every failure by model
        print(f"{path}: FAILED: {e}")
        failed = True
sys.exit(1 if failed else 0)
