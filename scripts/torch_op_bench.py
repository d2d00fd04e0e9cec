#!/usr/bin/env python3
"""PyTorch timings for the cases of `op-bench --list` (JSON lines on stdin), same protocol:
fixed random inputs, warm-up, median of timed runs, in milliseconds. Prints the case lines back
with "torch_ms" added. A benchmark helper only; PyTorch is not a dependency of the project."""

import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F


def blur_filter(channels):
    f = torch.tensor([1.0, 2.0, 1.0])
    f = (f[:, None] * f[None, :]) / 16.0
    return f[None, None].repeat(channels, 1, 1, 1)


def make_case(case):
    """Returns a zero-argument callable that runs the case once."""
    n, c, h, w = case["n"], case["c"], case["h"], case["w"]
    k, o = case["kernel"], case["out_channels"]
    x = torch.randn(n, c, h, w)
    op = case["op"]
    if op == "conv_bias_leaky":
        weight = torch.randn(o, c, k, k) / (c * k * k) ** 0.5
        bias = torch.randn(o) * 0.1

        def run():
            with torch.inference_mode():
                F.leaky_relu(F.conv2d(x, weight, bias, padding=k // 2), 0.01)

        return run
    if op == "conv_train":
        weight = torch.randn(o, c, k, k) / (c * k * k) ** 0.5

        def run():
            xv = x.clone().requires_grad_(True)
            wv = weight.clone().requires_grad_(True)
            F.conv2d(xv, wv, None, padding=k // 2).sum().backward()

        return run
    if op == "bn_leaky_train":
        bn = torch.nn.BatchNorm2d(c)
        bn.train()

        def run():
            xv = x.clone().requires_grad_(True)
            F.leaky_relu(bn(xv), 0.01).sum().backward()

        return run
    if op == "blur":
        filt = blur_filter(c)

        def run():
            # timm's BlurPool2d: reflect padding, then a depthwise stride-2 convolution.
            with torch.inference_mode():
                F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), filt, stride=2, groups=c)

        return run
    if op == "space_to_depth":

        def run():
            with torch.inference_mode():
                y = x.view(n, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4)
                y.reshape(n, 16 * c, h // 4, w // 4).contiguous()

        return run
    if op == "channel_scale":
        gate = torch.rand(n, c)

        def run():
            with torch.inference_mode():
                x * gate[:, :, None, None]

        return run
    if op == "add_relu":
        other = torch.randn(n, c, h, w)

        def run():
            with torch.inference_mode():
                torch.relu(x + other)

        return run
    if op == "avg_pool_ceil":

        def run():
            with torch.inference_mode():
                F.avg_pool2d(x, 2, 2, ceil_mode=True, count_include_pad=False)

        return run
    raise SystemExit(f"unknown op {op!r} in case {case['name']!r}")


def median_ms(run, warmup, iters):
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        run()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=7)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for line in sys.stdin:
        if not line.strip():
            continue
        case = json.loads(line)
        case["torch_ms"] = median_ms(make_case(case), args.warmup, args.iters)
        print(json.dumps(case), flush=True)


if __name__ == "__main__":
    main()
