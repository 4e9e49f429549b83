"""One two-headed FCN-16s against two single-task FCN-16s on the procedural two-task scenes
(paper §5, SIFT Flow, Table 5: "as accurate as two separate models and as fast as one").

    python benchmarks/bench_multitask.py [--epochs 2] [--num-images 64] [--image-size 64x64]
        [--batch-size 4] [--optimizer adamw|sgd] [--threads N] [--latency-size 256x256]

Three runs with the same data, epochs, seed and recipe: (a) one ResNet18 FCN-16s with a
semantic and a geometric head, trained on the sum of the two losses; (b) a semantic-only and
(c) a geometric-only FCN-16s. Each task's four metrics (paper §5) come from the last epoch's
validation. Latency is the model alone (eager PyTorch on the CPU, batch 1), the contenders
interleaved round by round, medians: the two-headed net against the sum of the single ones.
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

TASKS = ("semantic", "geometric")
FOUR = ("pixel_accuracy", "mean_accuracy", "mean_iou", "fw_iou")


def training_parser(description: str, name: str, name_help: str,
                    out: str) -> argparse.ArgumentParser:
    """The options every §5 comparison shares (also used by bench_fusion.py): the variant, the
    training budget, the latency measurement and where runs go."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--name", default=name, help=name_help)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--num-images", type=int, default=64)
    parser.add_argument("--val-images", type=int, default=32)
    parser.add_argument("--image-size", default="64x64")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--optimizer", default="adamw", choices=("sgd", "adamw"))
    parser.add_argument("--lr", type=float, help="default: the optimizer's (adamw 1e-3)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--latency-size", default="256x256")
    parser.add_argument("--runs", type=int, default=10, help="interleaved latency rounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=out)
    return parser


def parse_args() -> argparse.Namespace:
    return training_parser(__doc__.splitlines()[0], "fcn16s", "the paper's SIFT Flow net: fcn16s",
                           "runs/bench_multitask").parse_args()


def train_one(args, label: str, tasks: tuple[str, ...]) -> tuple[dict, str, float]:
    """Train one contender; (last validation row, last.pt, minutes)."""
    config = TrainConfig(
        model=ModelConfig(name=args.name, backbone=args.backbone), data="synthetic-twotask",
        tasks=tasks, num_images=args.num_images, val_images=args.val_images,
        image_size=size_arg(args.image_size), epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, schedule="poly", threads=args.threads,
        seed=args.seed, device="cpu", out_dir=f"{args.out}/{label}")
    start = time.perf_counter()
    result = train(config, progress=False)
    return result.history[-1], str(result.last_path), (time.perf_counter() - start) / 60


def accuracy_table(rows: dict[str, dict]) -> list[str]:
    lines = ["| task | model | pixel acc | mean acc | mean IU | f.w. IU |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for task in TASKS:
        both = rows["two-headed"]
        single = rows[f"{task} only"]
        for model, values in (("two-headed", [both[f"{task}/{k}"] for k in FOUR]),
                              (f"{task} only", [single[k] for k in FOUR])):
            lines.append(f"| {task} | {model} | " + " | ".join(f"{100 * v:.1f}" for v in values)
                         + " |")
    return lines


def latency_table(paths: dict[str, str], size: tuple[int, int], runs: int) -> list[str]:
    models = {label: load_model(path).eval() for label, path in paths.items()}
    x = torch.rand(1, 3, *size)
    with torch.inference_mode():
        timings = interleaved({label: (lambda m=m: m(x)) for label, m in models.items()},
                              runs=runs, warmup=2)
    both = timings["two-headed"].p50
    pair = timings["semantic only"].p50 + timings["geometric only"].p50
    lines = ["| model | p50 ms | p99 ms |", "| --- | ---: | ---: |"]
    lines += [f"| {label} | {t.p50:.1f} | {t.p99:.1f} |" for label, t in timings.items()]
    lines.append(f"| both single models | {pair:.1f} | |")
    lines.append("")
    lines.append(f"two-headed / (semantic only + geometric only): {both / pair:.2f}×; "
                 f"two-headed / semantic only: {both / timings['semantic only'].p50:.2f}×")
    return lines


def main() -> None:
    args = parse_args()
    runs = {"two-headed": TASKS, "semantic only": ("semantic",),
            "geometric only": ("geometric",)}
    rows, paths = {}, {}
    for label, tasks in runs.items():
        rows[label], paths[label], minutes = train_one(args, label.replace(" ", "_"), tasks)
        print(f"trained {label}: {minutes:.1f} min", flush=True)
    torch.set_num_threads(args.threads)
    size = size_arg(args.latency_size)
    print(f"\n{platform.machine()}, {os.cpu_count()} CPUs ({args.threads} threads), torch "
          f"{torch.__version__}, {date.today()}: {args.name} {args.backbone}, synthetic-twotask, "
          f"{args.epochs} epochs of {args.num_images} {args.image_size} images, batch "
          f"{args.batch_size}, {args.optimizer}, seed {args.seed}; validation on "
          f"{args.val_images} images\n")
    print("\n".join(accuracy_table(rows)))
    print(f"\nforward latency at {size[0]}×{size[1]}, batch 1, eager, {args.runs} interleaved "
          f"rounds\n")
    print("\n".join(latency_table(paths, size, args.runs)))


def size_arg(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


if __name__ == "__main__":
    main()
