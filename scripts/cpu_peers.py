"""The CPU engines a user could run TResNet with, timed in one process on the same threads:
timm eager (NCHW and channels_last), timm under bf16 autocast, and timm's model exported to ONNX
and run by ONNX Runtime and by OpenVINO (f32, and OpenVINO's default precision, which is bf16 on
CPUs that have it). Random weights; images per second, the median of the timed calls of each
round, the best round.

Prints one JSON object per (engine, batch) line; scripts/bench_cpu_peers.sh turns them and this
project's own `bench` figures into a table. Used for benchmarks only: never a project dependency.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch
import timm


def per_second(call, batch, warmup, iters):
    for _ in range(warmup):
        call()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


def engines(model, onnx_path, threads):
    """(name, make_call) pairs; make_call(x) returns a zero-argument function running one batch."""
    def eager(x):
        return lambda: model(x)

    channels_last = timm.create_model(args.model).eval().to(memory_format=torch.channels_last)
    channels_last.load_state_dict(model.state_dict())

    def eager_cl(x):
        xc = x.contiguous(memory_format=torch.channels_last)
        return lambda: channels_last(xc)

    def autocast_bf16(x):
        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return model(x)
        return run

    found = [("timm eager", eager), ("timm channels_last", eager_cl),
             ("timm bf16 autocast", autocast_bf16)]
    try:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])
        found.append(("ONNX Runtime f32",
                      lambda x: (lambda xn=x.numpy(): session.run(None, {"input": xn}))))
    except ImportError:
        print("onnxruntime is not installed: skipped", file=sys.stderr)
    try:
        import openvino as ov
        core = ov.Core()
        for name, precision in [("OpenVINO f32", "f32"), ("OpenVINO default", None)]:
            config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
            if precision:
                config["INFERENCE_PRECISION_HINT"] = precision
            compiled = core.compile_model(onnx_path, "CPU", config)
            request = compiled.create_infer_request()
            found.append((name, lambda x, r=request: (lambda xn=x.numpy(): r.infer({0: xn}))))
    except ImportError:
        print("openvino is not installed: skipped", file=sys.stderr)
    return found


parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", default="tresnet_m")
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--batches", default="1,8")
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--warmup", type=int, default=2)
parser.add_argument("--iters", type=int, default=7)
parser.add_argument("--rounds", type=int, default=2)
args = parser.parse_args()

torch.manual_seed(0)
torch.set_num_threads(args.threads)
model = timm.create_model(args.model).eval()
workdir = tempfile.mkdtemp()
onnx_path = os.path.join(workdir, f"{args.model}.onnx")
with torch.inference_mode():
    torch.onnx.export(model, (torch.rand(1, 3, args.size, args.size),), onnx_path,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
for batch in [int(b) for b in args.batches.split(",")]:
    x = torch.rand(batch, 3, args.size, args.size)
    for name, make in engines(model, onnx_path, args.threads):
        call = make(x)
        with torch.inference_mode():
            best = max(per_second(call, batch, args.warmup, args.iters) for _ in range(args.rounds))
        print(json.dumps({"engine": name, "model": args.model, "size": args.size, "batch": batch,
                          "img_per_sec": round(best, 3)}), flush=True)
