"""Train FCN-32s, 16s and 8s on the procedural scenes with the same CPU budget; report each.

    python benchmarks/bench_train.py [--backbone resnet18 | --backbones resnet18,googlenet,…]
                                     [--variants fcn32s,fcn16s,fcn8s] [--epochs 6]
                                     [--num-images 600]
                                     [--image-size 128x128] [--optimizer sgd|adamw]
                                     [--difficulty standard|hard] [--out runs/bench_train]

Each variant of each backbone trains from scratch with the same data, epochs, seed and recipe,
on this machine's cores; the script prints validation mean IU (the paper's four metrics in the
logs), training throughput and wall time, whether the paper's ordering 32s < 16s < 8s holds,
and with several backbones a table of them side by side (the same training budget: images,
epochs, batch, optimizer and learning rate; only the trunk differs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from fcn_edge.config import ModelConfig, TrainConfig
from fcn_edge.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--backbones", help="several, comma-separated: one table of them")
    parser.add_argument("--variants", default="fcn32s,fcn16s,fcn8s")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--num-images", type=int, default=600)
    parser.add_argument("--val-images", type=int, default=100)
    parser.add_argument("--image-size", default="128x128")
    parser.add_argument("--lr", type=float, help="default 0.02 (sgd), 1e-3 (adamw)")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"))
    parser.add_argument("--difficulty", default="standard", choices=("standard", "hard"))
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--out", default="runs/bench_train")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.image_size.split("x"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}")
    table = []
    for backbone in (args.backbones or args.backbone).split(","):
        table += _train_variants(args, backbone, size)
    if len(table) > 1:
        print("\n| backbone | model | val mean IU | pixel acc | wall time | img/s |")
        print("| --- | --- | --- | --- | --- | --- |")
        for row in table:
            print("| {backbone} | {name} | {miou:.3f} | {acc:.3f} | {minutes:.1f} min | "
                  "{rate:.1f} |".format(**row))


def _train_variants(args, backbone: str, size) -> list[dict]:
    results, rows = {}, []
    for name in args.variants.split(","):
        config = TrainConfig(
            model=ModelConfig(name=name, backbone=backbone), num_images=args.num_images,
            val_images=args.val_images, image_size=size, epochs=args.epochs,
            lr=args.lr or (0.02 if args.optimizer == "sgd" else None),
            optimizer=args.optimizer, difficulty=args.difficulty,
            batch_size=args.batch_size, schedule="poly", out_dir=f"{args.out}/{backbone}/{name}")
        start = time.perf_counter()
        result = train(config, progress=False)
        minutes = (time.perf_counter() - start) / 60
        last = result.history[-1]
        rate = sum(r["images_per_s"] for r in result.history) / len(result.history)
        results[name] = last["mean_iou"]
        print(f"{name} {backbone}: mean IU {last['mean_iou']:.4f} (best {result.best_miou:.4f}),"
              f" pixel acc {last['pixel_accuracy']:.4f}, {rate:.1f} img/s (train+val), "
              f"{minutes:.1f} min for {args.epochs} epochs of {args.num_images} "
              f"{size[0]}×{size[1]} images")
        log = Path(config.out_dir) / "metrics.jsonl"
        per_class = json.loads(log.read_text().splitlines()[-1])["per_class_iou"]
        print("  per-class IoU: " + ", ".join(f"{k} {v:.2f}" for k, v in per_class.items()))
        rows.append({"backbone": backbone, "name": name, "miou": last["mean_iou"],
                     "acc": last["pixel_accuracy"], "minutes": minutes, "rate": rate})
    order = [results[n] for n in ("fcn32s", "fcn16s", "fcn8s") if n in results]
    if len(order) > 1:
        print(f"{backbone}: paper's ordering 32s < 16s < 8s:",
              "holds" if order == sorted(order) else "does not hold")
    return rows


if __name__ == "__main__":
    main()
