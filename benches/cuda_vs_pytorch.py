#!/usr/bin/env python3
"""The cuda backend beside PyTorch on the same torchvision models, weights and GPU, in one call.

    python3 benches/cuda_vs_pytorch.py [--models resnet18,resnet50,mobilenet_v2] [--batches 1,256]
                                       [--calibench target/release/calibench] [--out benches/out/vs-torch]

Needs a GPU, torch and torchvision (the device machine has them). For each model it:
1. builds it with random weights (seed 0) and lets BatchNorm settle on noise (as
   fixtures/real_models.py does), exports it with torch.onnx.export (opset 17, dynamic batch);
2. times PyTorch at fp32 and fp16 for each batch: cuDNN, channels_last, CUDA graph replays,
   TF32 off, cudnn.benchmark on; median of 30 replays, CUDA events;
3. calibrates a minmax cache on the GPU (`calibench calibrate --backend cuda`, 8 samples), runs
   `calibench run` over fp32/fp16/int8/best × the batches on the cuda backend, and int8 on the
   reference backend at batch 1 (the same cache, for the int8 agreement);
4. prints one line per cell: calibench's median GPU time (CUDA graph launches, as PyTorch's are:
   `[latency] cuda_graph = true`), PyTorch's, the ratio, and accuracy
   (cosine to the fp32 reference; int8 beside the reference backend's int8).
PyTorch has no int8 path with the cache's per-tensor scales: int8/best are set against its fp16.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np


def build(name):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None)
    model.train()
    with torch.no_grad():
        for _ in range(8):
            model(torch.randn(16, 3, 224, 224))
    return model.eval()


def torch_ms(model, batch, half):
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    dtype = torch.float16 if half else torch.float32
    m = model.to("cuda", dtype=dtype, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 224, 224, device="cuda", dtype=dtype).to(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(5):
            m(x)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                m(x)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            m(x)
        times = []
        for _ in range(30):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            graph.replay()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
    model.to("cpu", dtype=torch.float32, memory_format=torch.contiguous_format)
    return float(np.median(times))


SPEC = """version = 1
name = "vs-torch-{name}"
[axes]
precisions = ["fp32", "fp16", "int8", "best"]
backends = ["cuda", "reference"]
devices = ["0", "cpu"]
batch_sizes = [{batches}]
[[models]]
id = "{name}"
path = "{model}"
eval_inputs = "{eval}"
[models.tolerance]
atol = 1e-3
rtol = 1e-3
check = "quantile=0.99"
[models.tolerance.precision.fp16]
atol = 0.05
rtol = 0.05
min_cosine = 0.999
[models.tolerance.precision.int8]
atol = 1000.0
min_cosine = 0.99
[models.tolerance.precision.best]
atol = 1000.0
min_cosine = 0.99
[[caches]]
id = "minmax"
model = "{name}"
path = "{cache}"
[latency]
cuda_graph = true
warmup_ms = 200
measurement_ms = 1000
samples = 10
"""


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet18,resnet50,mobilenet_v2")
    p.add_argument("--batches", default="1,256")
    p.add_argument("--calibench", default="target/release/calibench")
    p.add_argument("--out", default="benches/out/vs-torch")
    a = p.parse_args()
    import torch

    os.makedirs(a.out, exist_ok=True)
    batches = [int(b) for b in a.batches.split(",")]
    rows = []
    for name in a.models.split(","):
        d = os.path.abspath(os.path.join(a.out, name))
        os.makedirs(d, exist_ok=True)
        model = build(name)
        onnx_path = os.path.join(d, "model.onnx")
        torch.onnx.export(model, torch.randn(1, 3, 224, 224), onnx_path, dynamo=False, opset_version=17,
                          input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})
        rng = np.random.default_rng(1)
        np.save(os.path.join(d, "calib.npy"), rng.standard_normal((8, 3, 224, 224)).astype(np.float32))
        np.save(os.path.join(d, "eval.npy"), rng.standard_normal((8, 3, 224, 224)).astype(np.float32))
        theirs = {(prec, b): torch_ms(model, b, prec == "fp16") for prec in ("fp32", "fp16") for b in batches}
        cache = os.path.join(d, "minmax.cache")
        subprocess.run([a.calibench, "calibrate", "--backend", "cuda", "--method", "minmax", "-m", onnx_path,
                        "-d", os.path.join(d, "calib.npy"), "-o", cache], check=True)
        spec = os.path.join(d, "spec.toml")
        with open(spec, "w") as f:
            f.write(SPEC.format(name=name, model=onnx_path, eval=os.path.join(d, "eval.npy"), cache=cache,
                                batches=", ".join(map(str, batches))))
        runs = os.path.join(d, "runs")
        for only, rid in (("backend=cuda,device=0", "cuda"), ("backend=reference,device=cpu,precision=int8,batch=1", "ref")):
            subprocess.run([a.calibench, "run", "-q", "--no-criterion", "--allow-skipped", "--run-id", rid, "-o", runs,
                            "--only", only, spec], stdout=subprocess.DEVNULL)
        recs = []
        for rid in ("cuda", "ref"):
            path = os.path.join(runs, rid, "results.jsonl")
            if os.path.exists(path):
                recs += [json.loads(line) for line in open(path)]
        ref_int8 = next((r for r in recs if r["cell"]["backend"] == "reference"), None)
        ref_cos = ((ref_int8 or {}).get("accuracy") or {}).get("outputs", [{}])[0].get("cosine")
        for r in recs:
            c = r["cell"]
            if c["backend"] != "cuda":
                continue
            lat = (r.get("latency") or {}).get("median_ms")
            acc = ((r.get("accuracy") or {}).get("outputs") or [{}])[0]
            base = theirs.get(("fp32" if c["precision"] == "fp32" else "fp16", c["batch"]))
            ratio = lat / base if lat and base else float("nan")
            err = (r.get("error") or {}).get("message", "").split("\n")[0][:150]
            row = (f"{name:18} {c['precision']:5} b{c['batch']:<4} {r['status']:7} calibench {lat if lat is None else round(lat, 3)} ms"
                   f"  pytorch {'fp32' if c['precision'] == 'fp32' else 'fp16'} {round(base, 3) if base else None} ms"
                   f"  ratio {ratio:.2f}  cos {acc.get('cosine')}  max|d| {acc.get('max_abs')}")
            if c["precision"] == "int8":
                row += f"  (reference int8 b1 cos {ref_cos})"
            rows.append(row + (f"  {err}" if err else ""))
            print(rows[-1], flush=True)
    with open(os.path.join(a.out, "summary.txt"), "w") as f:
        f.write("\n".join(rows) + "\n")


if __name__ == "__main__":
    sys.exit(main())
