"""CPU forward latency of the FCN family, against each model's multiply-add count.

    python benchmarks/bench_models.py [--sizes 256x512,500x375] [--repeat 5] [--threads N]

Prints one row per model and size: GFLOPs (2 × multiply-adds, counted by PyTorch's
FlopCounterMode), median and best latency of ``repeat`` timed forwards after one warm-up,
achieved GFLOP/s, and the reference layout's cost relative to the edge layout's.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch

from fcn_edge.config import ModelConfig
from fcn_edge.models import build
from fcn_edge.models.summary import describe

MODELS = (("fcn8s", "resnet18", "edge"), ("fcn8s", "alexnet", "edge"),
          ("fcn8s", "vgg16", "edge"), ("fcn8s", "vgg16", "reference"))


def time_forward(model: torch.nn.Module, size: tuple[int, int], repeat: int) -> list[float]:
    x = torch.randn(1, 3, *size)
    with torch.inference_mode():
        model(x)  # warm-up: allocator, oneDNN kernels
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="256x512,500x375")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    for text in args.sizes.split(","):
        size = tuple(int(v) for v in text.split("x"))
        edge_ms = None
        for name, backbone, layout in MODELS:
            config = ModelConfig(name=name, backbone=backbone, layout=layout)
            gflops = describe(config, size)["gflops"]
            times = time_forward(build(config).eval(), size, args.repeat)
            median = statistics.median(times)
            note = ""
            if backbone == "vgg16" and layout == "edge":
                edge_ms = median
            elif layout == "reference" and edge_ms:
                note = f"  ({median / edge_ms:.2f}× the edge layout's time)"
            print(f"{text:>8} {name} {backbone:<8} {layout:<9} {gflops:7.1f} GFLOPs  "
                  f"median {median * 1e3:7.0f} ms  best {min(times) * 1e3:7.0f} ms  "
                  f"{gflops / median:6.1f} GFLOP/s{note}")


if __name__ == "__main__":
    main()
