"""Where OpenVINO's time goes on a TResNet, layer kind by layer kind: timm's model (random
weights) exported to ONNX, compiled by OpenVINO with its per-node counters on, and each node's
time summed over the timed calls. Convolutions are grouped by kernel, input and output shape;
their GMAC/s and the share of one core's peak (`--peak-gmacs`, e.g. from `op-bench --peak`)
tell how close OpenVINO runs to the hardware, to set beside `op-bench`'s figures for ours.

Usage: .bench-venv/bin/python scripts/ov_layer_profile.py [--model tresnet_m] [--size 224]
       [--batch 1] [--threads 1] [--precision bf16|f32] [--iters 20] [--peak-gmacs G]
Used for benchmarks only: never a project dependency.
"""
import argparse
import collections
import os
import sys
import tempfile

import numpy as np
import torch
import timm

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--model", default="tresnet_m")
parser.add_argument("--size", type=int, default=224)
parser.add_argument("--batch", type=int, default=1)
parser.add_argument("--threads", type=int, default=1)
parser.add_argument("--precision", default=None, help="INFERENCE_PRECISION_HINT (default: OpenVINO's)")
parser.add_argument("--warmup", type=int, default=5)
parser.add_argument("--iters", type=int, default=20)
parser.add_argument("--peak-gmacs", type=float, default=None,
                    help="one core's peak multiply-adds per second (1e9) in the precision used")
args = parser.parse_args()

import openvino as ov  # noqa: E402  (after argparse so that --help works without it)

model = timm.create_model(args.model).eval()
x = torch.randn(args.batch, 3, args.size, args.size)
onnx_path = os.path.join(tempfile.mkdtemp(), f"{args.model}.onnx")
with torch.no_grad():
    torch.onnx.export(model, x, onnx_path, input_names=["input"], opset_version=17, dynamo=False)

config = {"INFERENCE_NUM_THREADS": args.threads, "PERFORMANCE_HINT": "LATENCY", "PERF_COUNT": True}
if args.precision:
    config["INFERENCE_PRECISION_HINT"] = args.precision
compiled = ov.Core().compile_model(onnx_path, "CPU", config)
precision = compiled.get_property("INFERENCE_PRECISION_HINT")

# Output shape and input shapes of every node of the compiled graph, by name.
shapes = {}
for op in compiled.get_runtime_model().get_ops():
    out = op.get_output_partial_shape(0).to_shape() if op.get_output_size() else None
    ins = [op.input(i).get_partial_shape() for i in range(op.get_input_size())]
    shapes[op.get_friendly_name()] = (out, [s.to_shape() if s.is_static else None for s in ins])

request = compiled.create_infer_request()
xn = x.numpy()
for _ in range(args.warmup):
    request.infer({0: xn})
totals = collections.defaultdict(float)
calls = collections.Counter()
macs = {}
whole = 0.0
for it in range(args.iters):
    request.infer({0: xn})
    for node in request.get_profiling_info():
        ms = node.real_time.total_seconds() * 1e3
        whole += ms
        out, ins = shapes.get(node.node_name, (None, []))
        key = (node.node_type, node.exec_type, "×".join(map(str, out)) if out else "?")
        if node.node_type == "Convolution" and out is not None and len(ins) > 1 and ins[1]:
            w = ins[1]  # (O, I, kh, kw)
            key = key + (f"{w[2]}x{w[3]} {w[1]}->{w[0]}",)
            macs[key] = int(np.prod(out)) * w[1] * w[2] * w[3]
        totals[key] += ms
        if it == 0:
            calls[key] += 1

per_call = whole / args.iters
print(f"# OpenVINO {ov.get_version()} on {args.model} @{args.size}, batch {args.batch}, "
      f"{args.threads} thread(s), precision {precision}: {per_call:.2f} ms per call")
print()
print("| node | kernel | output | layers | ms per call | share | GMAC/s | of peak |")
print("|---|---|---|---:|---:|---:|---:|---:|")
for key, total in sorted(totals.items(), key=lambda kv: -kv[1]):
    ms = total / args.iters
    if ms < 0.01 * per_call and key not in macs:
        continue
    rate = peak = ""
    if key in macs:
        gmacs = macs[key] * calls[key] / (ms * 1e6)
        rate = f"{gmacs:.1f}"
        if args.peak_gmacs:
            peak = f"{gmacs / (args.peak_gmacs * args.threads):.0%}"
    label = key[0] + (f" {key[3]}" if len(key) > 3 else "")
    print(f"| {label} | {key[1]} | {key[2]} | {calls[key]} | {ms:.3f} | {ms / per_call:.1%} "
          f"| {rate} | {peak} |")
sys.stdout.flush()
