"""RGB only against RGB-D early fusion and RGB + depth late fusion on the procedural RGB-D
scenes (paper §5, NYUDv2, Table 4), with the same budget.

    python benchmarks/bench_fusion.py [--name fcn32s] [--epochs 2] [--num-images 64]
        [--image-size 64x64] [--batch-size 4] [--optimizer adamw|sgd] [--threads N]
        [--difficulty standard|hard] [--latency-size 256x256]

Three ResNet18 FCNs trained with the same data, epochs, seed and recipe: RGB only (the depth
in the data unused), early fusion (depth as a 4th input channel) and late fusion (an RGB and a
depth stream, scores summed; the paper's late fusion pairs RGB with HHA, which the procedural
scenes do not provide). Each one's four metrics (paper §5) come from the last epoch's
validation; latency is the model alone (eager PyTorch on the CPU, batch 1), interleaved.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date

import torch

from fcn_edge.bench.timing import interleaved
from fcn_edge.config import ModelConfig, TrainConfig
from fcn_edge.models import load_model
from fcn_edge.train import train

from bench_multitask import size_arg, training_parser  # the same options and size parsing

FOUR = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")
RGB, RGBD = (("rgb", 3),), (("rgb", 3), ("depth", 1))
#: label → (inputs, fusion)
CONTENDERS = {"RGB": (RGB, "early"), "RGB-D early fusion": (RGBD, "early"),
              "RGB + depth late fusion": (RGBD, "late")}


def parse_args() -> argparse.Namespace:
    parser = training_parser(__doc__.splitlines()[0], "fcn32s",
                             "Table 4's fusion rows are FCN-32s", "runs/bench_fusion")
    parser.add_argument("--difficulty", default="standard", choices=("standard", "hard"))
    return parser.parse_args()


def train_one(args, label: str, inputs, fusion: str) -> tuple[dict, str, float]:
    """Train one contender; (last validation row, last.pt, minutes)."""
    config = TrainConfig(
        model=ModelConfig(name=args.name, backbone=args.backbone, inputs=inputs, fusion=fusion),
        data="synthetic-rgbd", num_images=args.num_images, val_images=args.val_images,
        image_size=size_arg(args.image_size), difficulty=args.difficulty, epochs=args.epochs,
        batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, schedule="poly",
        threads=args.threads, seed=args.seed, device="cpu",
        out_dir=f"{args.out}/{label.split()[0].lower()}_{fusion}")
    start = time.perf_counter()
    result = train(config, progress=False)
    return result.history[-1], str(result.last_path), (time.perf_counter() - start) / 60


def main() -> None:
    args = parse_args()
    rows, paths, minutes = {}, {}, {}
    for label, (inputs, fusion) in CONTENDERS.items():
        rows[label], paths[label], minutes[label] = train_one(args, label, inputs, fusion)
        print(f"trained {label}: {minutes[label]:.1f} min", flush=True)
    torch.set_num_threads(args.threads)
    h, w = size_arg(args.latency_size)
    models = {label: load_model(path).eval() for label, path in paths.items()}
    x = {label: torch.rand(1, m.config.in_channels, h, w) for label, m in models.items()}
    with torch.inference_mode():
        timings = interleaved({label: (lambda m=m, t=x[label]: m(t))
                               for label, m in models.items()}, runs=args.runs, warmup=2)
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs ({args.threads} threads), torch "
          f"{torch.__version__}, {date.today()}: {args.name} {args.backbone}, synthetic-rgbd "
          f"({args.difficulty}), {args.epochs} epochs of {args.num_images} {args.image_size} "
          f"images, batch {args.batch_size}, {args.optimizer}, seed {args.seed}; validation on "
          f"{args.val_images} images; latency at {h}×{w}, batch 1, eager, {args.runs} "
          f"interleaved rounds\n")
    print("| model | pixel acc | mean acc | mean IU | f.w. IU | train min | p50 ms |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, row in rows.items():
        print(f"| {label} | " + " | ".join(f"{100 * row[k]:.1f}" for k in FOUR)
              + f" | {minutes[label]:.1f} | {timings[label].p50:.1f} |")
    base = rows["RGB"]["mean_iou"]
    print("\nmean IU against RGB only: " + ", ".join(
        f"{label} {100 * (row['mean_iou'] - base):+.1f} points"
        for label, row in rows.items() if label != "RGB"))


if __name__ == "__main__":
    main()
