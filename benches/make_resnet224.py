"""Writes a ResNet-18-style CNN at 224x224 with random weights (seeded) for the cuda backend's
latency bench and `calibench profile`: 7x7/2 stem, 3x3/2 max pool, four stages of two basic
blocks (64, 128, 256, 512 channels; residual Add + Relu, 1x1/2 projections), global average
pool, 1000-way Gemm. BatchNormalization is folded into the convolutions' biases, as exporters
of inference graphs do.

    python3 benches/make_resnet224.py /tmp/resnet224.onnx
"""
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(18)
nodes, inits = [], []


def he(shape, fan_in):
    """He-scaled normal weights, rounded to a 256-level grid so the file compresses (xz)."""
    w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
    step = np.abs(w).max() / 127
    return (np.round(w / step) * step).astype(np.float32)


def conv(x, cin, cout, k, stride, name, relu=True):
    w = he((cout, cin, k, k), cin * k * k)
    b = (rng.standard_normal(cout) * 0.01).astype(np.float32)
    inits.extend([numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")])
    nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [name], kernel_shape=[k, k],
                                  pads=[k // 2] * 4, strides=[stride, stride]))
    if not relu:
        return name
    nodes.append(helper.make_node("Relu", [name], [f"{name}.relu"]))
    return f"{name}.relu"


x = conv("input", 3, 64, 7, 2, "stem")
nodes.append(helper.make_node("MaxPool", [x], ["pool"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]))
x, c = "pool", 64
for stage, cout in enumerate([64, 128, 256, 512]):
    for block in range(2):
        stride = 2 if stage > 0 and block == 0 else 1
        name = f"s{stage}b{block}"
        y = conv(x, c, cout, 3, stride, f"{name}.conv1")
        y = conv(y, cout, cout, 3, 1, f"{name}.conv2", relu=False)
        shortcut = conv(x, c, cout, 1, stride, f"{name}.proj", relu=False) if (stride, c) != (1, cout) else x
        nodes.append(helper.make_node("Add", [y, shortcut], [f"{name}.add"]))
        nodes.append(helper.make_node("Relu", [f"{name}.add"], [f"{name}.out"]))
        x, c = f"{name}.out", cout
nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
nodes.append(helper.make_node("Flatten", ["gap"], ["flat"], axis=1))
fc_w = he((1000, 512), 512)
inits += [numpy_helper.from_array(fc_w, "fc.w"), numpy_helper.from_array(np.zeros(1000, np.float32), "fc.b")]
nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], transB=1))
graph = helper.make_graph(
    nodes, "resnet224", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
    [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1000])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
onnx.checker.check_model(model)
onnx.save(model, sys.argv[1] if len(sys.argv) > 1 else "resnet224.onnx")
