"""Writes a VGG-style CNN at 224x224 with random weights (seeded) for the cuda backend's
latency bench and `calibench profile` (Conv/Relu/MaxPool/Flatten/Gemm, int8-friendly shapes).

    python3 benches/make_cnn224.py /tmp/cnn224.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(224)
nodes, inits = [], []
x, c = "input", 3
layers = [(32, 2), (64, 1), (128, 1), (256, 1)]  # (output channels, stride)
for i, (cout, stride) in enumerate(layers):
    w = (rng.standard_normal((cout, c, 3, 3)) * np.sqrt(2.0 / (c * 9))).astype(np.float32)
    b = np.zeros(cout, np.float32)
    inits += [numpy_helper.from_array(w, f"conv{i}.w"), numpy_helper.from_array(b, f"conv{i}.b")]
    nodes += [
        helper.make_node("Conv", [x, f"conv{i}.w", f"conv{i}.b"], [f"conv{i}"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[stride, stride]),
        helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"]),
        helper.make_node("MaxPool", [f"relu{i}"], [f"pool{i}"], kernel_shape=[2, 2], strides=[2, 2]),
    ]
    x, c = f"pool{i}", cout
fc_w = (rng.standard_normal((100, 256 * 7 * 7)) * 0.01).astype(np.float32)
inits += [numpy_helper.from_array(fc_w, "fc.w"), numpy_helper.from_array(np.zeros(100, np.float32), "fc.b")]
nodes += [
    helper.make_node("Flatten", [x], ["flat"], axis=1),
    helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1),
]
graph = helper.make_graph(
    nodes, "cnn224", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 100])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1] if len(sys.argv) > 1 else "cnn224.onnx")
