"""Latency of one two-headed FCN against two single-task FCNs (paper §5, SIFT Flow: "as fast as
one model"), eager PyTorch on the CPU, contenders interleaved in one run.

    python benchmarks/bench_multihead.py [--size 256x512] [--name fcn16s] [--runs 20]

Accuracy on the two-task procedural set comes with the multi-task training (issue 8, later).
"""
from __future__ import annotations

import argparse
import os
import platform
from datetime import date

import torch

from fcn_edge.bench.timing import interleaved
from fcn_edge.models import create_model

HEADS = {"semantic": 33, "geometric": 3}  # SIFT Flow's class counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256x512")
    parser.add_argument("--name", default="fcn16s")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    torch.set_num_threads(os.cpu_count() or 1)
    both = create_model(args.name, backbone=args.backbone, heads=HEADS).eval()
    singles = {task: create_model(args.name, num_classes=n, backbone=args.backbone).eval()
               for task, n in HEADS.items()}
    x = torch.rand(1, 3, h, w)
    with torch.inference_mode():
        timings = interleaved({
            "two-headed": lambda: both(x),
            "semantic only": lambda: singles["semantic"](x),
            "geometric only": lambda: singles["geometric"](x),
        }, runs=args.runs, warmup=2)
    two = timings["two-headed"].p50
    apart = timings["semantic only"].p50 + timings["geometric only"].p50
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{date.today()}: {args.name} {args.backbone} at {h}×{w}, {args.runs} rounds")
    for name, t in timings.items():
        print(f"  {name:<15} p50 {t.p50:7.1f} ms  p99 {t.p99:7.1f} ms")
    print(f"  two-headed / semantic only: {two / timings['semantic only'].p50:.2f}×;"
          f" two-headed / (both single models): {two / apart:.2f}×")


if __name__ == "__main__":
    main()
