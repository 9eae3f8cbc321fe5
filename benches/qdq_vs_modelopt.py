#!/usr/bin/env python3
"""calibench's `cache to-qdq` next to NVIDIA ModelOpt's ONNX quantizer importing the same cache.

    python3 benches/qdq_vs_modelopt.py [--modelopt-python PY] [--calibench BIN] [--out DIR]

Both turn one TensorRT calibration cache into a Q/DQ model (what TensorRT 11 builds int8 from):
calibench with `calibench cache to-qdq`, ModelOpt with `python -m modelopt.onnx.quantization
--quantize_mode int8 --calibration_cache_path CACHE --high_precision_dtype fp32`. For each model it
prints which tensors get a QuantizeLinear in each, their scales, zero points and axes, and the
outputs of the fp32 model and both Q/DQ models in onnxruntime on the same evaluation inputs.

Models: the digits CNN with its committed entropy cache, and the committed PP-OCR orientation
classifier (fixtures/ppocr-cls) with a cache calibench calibrates on the Pillow text lines of
`fixtures/real_models.py --text` (run that first; skipped without them).

Needs: onnx, onnxruntime and numpy in this Python; ModelOpt in PY (default: this Python), e.g.
`pip install nvidia-modelopt onnx-graphsurgeon onnxslim polygraphy ml_dtypes onnxconverter-common
lief onnxscript torch` (ModelOpt's ONNX path imports torch).
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def constants(model):
    vals = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    vals[n.output[0]] = numpy_helper.to_array(a.t)
    return vals


def quantized(path, original):
    """{original tensor: (scale(s), zero point dtype, axis)} for every QuantizeLinear."""
    m = onnx.load(path)
    vals = constants(m)
    out = {}
    for n in m.graph.node:
        if n.op_type != "QuantizeLinear":
            continue
        name = n.input[0]
        # calibench renames the producer's output to NAME__calibench_raw.
        for suffix in ("__calibench_raw",):
            if name.endswith(suffix):
                name = name[: -len(suffix)]
        if name not in original:
            continue
        scale = vals.get(n.input[1])
        zp = vals.get(n.input[2]) if len(n.input) > 2 else None
        axis = next((a.i for a in n.attribute if a.name == "axis"), None)
        out[name] = (scale, None if zp is None else zp.dtype.name, axis if scale is not None and scale.size > 1 else None,
                     None if zp is None else int(np.abs(zp).max()))
    return out, [(o.domain or "ai.onnx", o.version) for o in m.opset_import]


def run(path, feeds):
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = []
    for i in range(len(next(iter(feeds.values())))):
        outs.append(s.run(None, {k: v[i : i + 1] for k, v in feeds.items()})[0])
    return np.concatenate(outs)


def compare(name, model, cache, eval_x, labels, calibench, modelopt_python, work, shapes=None):
    shown = lambda p: os.path.relpath(p, ROOT) if p.startswith(ROOT) else os.path.basename(p)
    print(f"\n## {name}\n\nmodel {shown(model)}, cache {shown(cache)}")
    tag = name.replace(" ", "_").replace("(", "").replace(")", "")
    ours = os.path.join(work, f"{tag}.calibench.onnx")
    theirs = os.path.join(work, f"{tag}.modelopt.onnx")
    subprocess.run([calibench, "cache", "to-qdq", "--model", model, "--cache", cache, "-o", ours], check=True,
                   stderr=subprocess.DEVNULL)
    cmd = [modelopt_python, "-m", "modelopt.onnx.quantization", "--onnx_path", model, "--quantize_mode", "int8",
           "--calibration_cache_path", cache, "--high_precision_dtype", "fp32", "--output_path", theirs,
           "--log_level", "DEBUG"]
    if shapes:
        cmd += ["--calibration_shapes", shapes]
    log = subprocess.run(cmd, capture_output=True, text=True)
    if log.returncode != 0:
        print(log.stdout[-3000:], log.stderr[-3000:])
        raise SystemExit(f"ModelOpt failed on {name}")
    for line in (log.stdout + log.stderr).splitlines():
        msg = line.split(" - ")[-1]
        if ("GEMV" in line or "Final number of nodes to quantize" in line) and len(msg) < 200:
            print("ModelOpt:", msg)
    original = {t for n in onnx.load(model).graph.node for t in list(n.input) + list(n.output)}
    original |= {i.name for i in onnx.load(model).graph.input}
    q_ours, opset_ours = quantized(ours, original)
    q_theirs, opset_theirs = quantized(theirs, original)
    print(f"opsets: calibench {opset_ours}, ModelOpt {opset_theirs}")
    both = sorted(set(q_ours) & set(q_theirs))
    only_ours = sorted(set(q_ours) - set(q_theirs))
    only_theirs = sorted(set(q_theirs) - set(q_ours))
    max_rel = 0.0
    mismatched = []
    for t in both:
        a, b = q_ours[t][0].astype(np.float64), q_theirs[t][0].astype(np.float64)
        if a.shape != b.shape:
            mismatched.append(f"{t}: shapes {a.shape} vs {b.shape}")
            continue
        rel = float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))
        max_rel = max(max_rel, rel)
        if q_ours[t][1:] != q_theirs[t][1:]:
            mismatched.append(f"{t}: zero point/axis {q_ours[t][1:]} vs {q_theirs[t][1:]}")
    per_channel = [t for t in both if q_ours[t][2] is not None]
    print(f"QuantizeLinear on: {len(both)} tensors in both ({len(per_channel)} per-channel weights), "
          f"{len(only_ours)} only in calibench's, {len(only_theirs)} only in ModelOpt's")
    print(f"scales of the common tensors: max relative difference {max_rel:.2e}; "
          f"zero points int8 0 and axes equal: {'yes' if not mismatched else 'no: ' + '; '.join(mismatched[:5])}")
    if only_ours:
        print("only calibench:", ", ".join(only_ours[:12]) + (" …" if len(only_ours) > 12 else ""))
    if only_theirs:
        print("only ModelOpt:", ", ".join(only_theirs[:12]) + (" …" if len(only_theirs) > 12 else ""))
    in_name = onnx.load(model).graph.input[0].name
    feeds = {in_name: eval_x}
    ref = run(model, feeds)
    rows = []
    outs = {"calibench": run(ours, feeds), "ModelOpt": run(theirs, feeds)}
    for who, y in outs.items():
        d = np.abs(y - ref)
        cos = float(np.sum(y * ref) / (np.linalg.norm(y) * np.linalg.norm(ref)))
        agree = float(np.mean(np.argmax(y, -1) == np.argmax(ref, -1)))
        acc = float(np.mean(np.argmax(y, -1) == labels)) if labels is not None else float("nan")
        rows.append((who, d.max(), cos, agree, acc))
    print(f"\nonnxruntime {ort.__version__}, {len(eval_x)} evaluation inputs (fp32 top-1 accuracy "
          f"{np.mean(np.argmax(ref, -1) == labels) if labels is not None else float('nan'):.3f}):")
    print("| Q/DQ model | max abs Δ vs fp32 | cosine | top-1 agreement | top-1 accuracy |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for who, mx, cos, agree, acc in rows:
        print(f"| {who} | {mx:.4g} | {cos:.6f} | {agree:.3f} | {acc:.3f} |")
    between = np.abs(outs["calibench"] - outs["ModelOpt"]).max()
    print(f"calibench vs ModelOpt: max abs Δ {between:.4g}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modelopt-python", default=sys.executable)
    ap.add_argument("--calibench", default=os.path.join(ROOT, "target/release/calibench"))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    work = args.out or tempfile.mkdtemp(prefix="qdq-vs-modelopt-")
    os.makedirs(work, exist_ok=True)
    version = subprocess.run([args.modelopt_python, "-c", "import modelopt; print(modelopt.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    print(f"# calibench cache to-qdq vs NVIDIA ModelOpt {version or '?'}")
    d = os.path.join(ROOT, "fixtures/digits")
    compare("digits_cnn", os.path.join(d, "digits_cnn.onnx"), os.path.join(d, "digits_cnn.entropy.cache"),
            np.load(os.path.join(d, "eval_inputs.npy")), np.load(os.path.join(d, "eval_labels.npy")),
            args.calibench, args.modelopt_python, work)
    real = os.path.join(ROOT, "fixtures/real")
    calib = os.path.join(real, "ppocr-cls.text.calib.npy")
    if not os.path.exists(calib):
        print("\n## ppocr-cls: skipped (run `python3 fixtures/real_models.py --text` first)")
        return
    model = os.path.join(ROOT, "fixtures/ppocr-cls/ch_ppocr_mobile_v2.0_cls_infer.onnx")
    # The same model for both tools, in the form ModelOpt takes: static input shape (its Q/DQ
    # placement needs shapes) and the weights as initializers (Paddle2ONNX wrote them as Constant
    # nodes; ModelOpt 0.47 stops with "Weight tensor 'conv12_expand_weights' not found in graph
    # initializers"). Neither change alters what the model computes.
    fixed = os.path.join(work, "ppocr-cls.static.onnx")
    m = onnx.load(model)
    for dim, v in zip(m.graph.input[0].type.tensor_type.shape.dim, (1, 3, 48, 192)):
        dim.Clear()
        dim.dim_value = v
    keep = []
    for n in m.graph.node:
        value = next((a.t for a in n.attribute if a.name == "value"), None) if n.op_type == "Constant" else None
        if value is not None:
            t = numpy_helper.from_array(numpy_helper.to_array(value), n.output[0])
            m.graph.initializer.append(t)
        else:
            keep.append(n)
    # Fold nodes over weights only (Paddle2ONNX reshapes Conv biases at run time: ModelOpt then
    # stops at "Weight tensor 'Reshape@2' not found in graph initializers").
    from onnx.reference import ReferenceEvaluator
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    folded = []
    for n in keep:
        if n.input and all(i in inits for i in n.input if i):
            g = onnx.helper.make_graph([n], "fold", [], [onnx.helper.make_tensor_value_info(o, 0, None) for o in n.output],
                                       initializer=[numpy_helper.from_array(inits[i], i) for i in n.input if i])
            fm = onnx.helper.make_model(g, opset_imports=m.opset_import)
            for o, v in zip(n.output, ReferenceEvaluator(fm).run(None, {})):
                inits[o] = v
                m.graph.initializer.append(numpy_helper.from_array(np.asarray(v), o))
        else:
            folded.append(n)
    del m.graph.node[:]
    m.graph.node.extend(folded)
    onnx.save(m, fixed)
    for method in ("entropy", "minmax"):
        cache = os.path.join(work, f"ppocr-cls.{method}.cache")
        subprocess.run([args.calibench, "calibrate", "--model", model, "--shapes", "x:1x3x48x192", "--data", calib,
                        "--method", method, "-o", cache], check=True, stderr=subprocess.DEVNULL)
        compare(f"ppocr-cls ({method} cache)", fixed, cache, np.load(os.path.join(real, "ppocr-cls.text.eval.npy")),
                np.load(os.path.join(real, "ppocr-cls.text.labels.npy")), args.calibench, args.modelopt_python, work)


if __name__ == "__main__":
    main()
