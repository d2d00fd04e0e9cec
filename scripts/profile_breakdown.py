#!/usr/bin/env python3
"""Where the time goes: reads `perf script` output (call stacks recorded with frame pointers) and
prints, per thread role, the share of samples by operation — the innermost frame that names one of
this project's functions or a candle tensor operation — with the two leaf functions that dominate
each. Thread roles: `main` (the calling thread: set-up; passes run on the pool since
`tresnet::on_cpu_workers`), `pool` (the rayon workers: the passes, their serial parts included)
and `candle` (candle's own element-wise thread). A benchmark helper, not part of the
project's runtime.

Usage: perf script -i perf.data | scripts/profile_breakdown.py [--only FRAME] [--top N]
"""

import argparse
import collections
import re
import sys

OP_PATTERNS = [
    (re.compile(r"^<?(tresnet[a-z_]*::[^<]*?)(?: as |$)"), None),
    (re.compile(r"^candle_core::tensor::Tensor::(\w+)"), "candle Tensor::{}"),
    (re.compile(r"^candle_core::tensor_cat::<impl candle_core::tensor::Tensor>::(\w+)"), "candle Tensor::{}"),
    (re.compile(r"^candle_core::backprop::<impl candle_core::tensor::Tensor>::backward"), "candle backward (graph walk)"),
]
ADDRESS = re.compile(r"\+0x[0-9a-f]+ \(.*\)$")


def read_samples(stream):
    """Yields (thread name, [frames innermost first])."""
    thread, frames = None, None
    for line in stream:
        if not line.strip():
            if frames is not None:
                yield thread, frames
            frames = None
            continue
        if not line.startswith((" ", "\t")):
            # "comm tid [cpu] time: …": threads share the comm (rayon workers inherit it), so
            # the thread is the comm with its tid.
            thread, frames = " ".join(line.split()[:2]), []
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) == 2 and frames is not None:
            frames.append(ADDRESS.sub("", parts[1]).strip())
    if frames:
        yield thread, frames


def operation(frames):
    for frame in frames:
        if "{{closure}}" in frame and frame.startswith("core::ops"):
            continue
        for pattern, template in OP_PATTERNS:
            m = pattern.match(frame)
            if m:
                name = m.group(1) if m.groups() else ""
                return template.format(name) if template else name
    return "(unattributed: pool scheduling, kernel, allocator)"


def role(thread, frames, main_thread):
    if thread.startswith("candle-bp"):
        return "candle"
    return "main" if thread == main_thread else "pool"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="keep only samples with this frame (e.g. bench::train_step)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    samples = list(read_samples(sys.stdin))
    if not samples:
        sys.exit("no samples on stdin (pipe `perf script` output in)")
    # The main thread is the one whose stacks reach `main`.
    main_thread = collections.Counter(t for t, f in samples if any(x == "main" for x in f)).most_common(1)
    main_thread = main_thread[0][0] if main_thread else None
    by_role = collections.defaultdict(collections.Counter)
    leaves = collections.defaultdict(collections.Counter)
    for thread, frames in samples:
        if args.only and not any(args.only in f for f in frames):
            continue
        r = role(thread, frames, main_thread)
        op = operation(frames)
        by_role[r][op] += 1
        leaves[(r, op)][frames[0][:70] if frames else "?"] += 1
    total = sum(sum(c.values()) for c in by_role.values())
    for r in ("main", "pool", "candle"):
        counts = by_role.get(r)
        if not counts:
            continue
        n = sum(counts.values())
        print(f"\n## {r} thread(s): {n} samples, {100 * n / total:.1f}% of all")
        print("| share of thread | operation | dominant leaf functions |")
        print("|---:|---|---|")
        for op, v in counts.most_common(args.top):
            top = ", ".join(f"{leaf} {100 * c / v:.0f}%" for leaf, c in leaves[(r, op)].most_common(2))
            print(f"| {100 * v / n:.1f}% | {op} | {top} |")


if __name__ == "__main__":
    main()
