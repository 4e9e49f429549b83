"""Export a checkpoint (fp32, fp16, int8) and report what BENCHMARKS.md lists for it.

    python benchmarks/bench_export.py CHECKPOINT [--out runs/bench_export]
                                      [--sizes 256x512,512x1024] [--threads 2] [--repeat 10]

Prints: export time; file sizes; fp32 parity per size; fp16 and int8 ΔmIoU and label agreement
against PyTorch fp32 on the procedural validation set; and ONNX Runtime CPU latency of the fp32
and int8 artifacts at each size, with PyTorch eager in the same run and thread setting (ratios).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from datetime import date

import numpy as np
import torch

from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.export.runners import ort_session
from fcn_edge.models import load_model


def median_ms(fn, repeat: int) -> float:
    fn()  # warm-up: first-run allocations and kernel selection
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--out", default="runs/bench_export")
    parser.add_argument("--sizes", default="256x512,512x1024")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--eval-images", type=int, default=16)
    args = parser.parse_args()
    print(f"{date.today()}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {args.threads} threads")
    start = time.perf_counter()
    result = export(ExportConfig(args.checkpoint, out_dir=args.out, fp16=True, int8=True,
                                 eval_images=args.eval_images, calib_images=32))
    print(f"export (fp32 + fp16 + int8, with every check): {time.perf_counter() - start:.1f} s")
    for kind in ("fp32", "fp16", "int8"):
        print(f"{kind}: {result.artifacts[kind].stat().st_size / 1e6:.1f} MB")
    for name in ("fp16", "int8"):
        d = result.report[name].get("dataset", {})
        if d:
            print(f"{name}: mean IU {d['mean_iou']:.4f} vs fp32 {d['reference_mean_iou']:.4f} "
                  f"(Δ {d['delta_miou_points']:+.2f} points), agreement {d['agreement']:.4%} "
                  f"on {d['images']} images")
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint).eval()
    sessions = {k: ort_session(result.artifacts[k], threads=args.threads)
                for k in ("fp32", "int8")}
    print("| size | PyTorch eager | ORT fp32 | ORT int8 | fp32 / eager | int8 / fp32 |")
    print("| --- | --- | --- | --- | --- | --- |")
    for text in args.sizes.split(","):
        h, w = (int(v) for v in text.split("x"))
        x = np.random.default_rng(0).standard_normal((1, 3, h, w)).astype(np.float32)
        with torch.no_grad():
            eager = median_ms(lambda: model(torch.from_numpy(x)), args.repeat)
        ms = {k: median_ms(lambda s=s: s.run(None, {"images": x}), args.repeat)
              for k, s in sessions.items()}
        print(f"| {h}×{w} | {eager:.0f} ms | {ms['fp32']:.0f} ms | {ms['int8']:.0f} ms | "
              f"{ms['fp32'] / eager:.2f} | {ms['int8'] / ms['fp32']:.2f} |")


if __name__ == "__main__":
    main()
