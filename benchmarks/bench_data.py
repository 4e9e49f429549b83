"""Time the data pipeline: procedural scene generation, palette-PNG decoding, augmentation.

Target (issue "Training"): 1,000 procedural 256×256 scenes in < 30 s on the 2-core CPU machine.

Usage: python benchmarks/bench_data.py [--images 1000] [--size 256 256] [--repeat 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
from fcn_edge.data import (ProceduralScenes, TrainAugment, normalize, read_mask,  # noqa: E402
                           voc_palette, write_palette_png)


def bench_scenes(images: int, size: tuple[int, int], repeat: int) -> None:
    scenes = ProceduralScenes(num_images=images, size=size, seed=0)
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for i in range(images):
            scenes[i]
        best = min(best, time.perf_counter() - start)
    print(f"procedural scenes: {images:,} images of {size[0]}×{size[1]} in {best:.2f} s "
          f"({best / images * 1e3:.1f} ms/image, {images / best:.0f} images/s)")


def bench_masks(n: int = 200) -> None:
    """A VOC-sized (500×375) palette mask: our index decoder against OpenCV's colour decode."""
    mask = ProceduralScenes(1, (375, 500), seed=1)[0].mask
    with tempfile.TemporaryDirectory() as tmp:
        path = write_palette_png(Path(tmp) / "m.png", mask, voc_palette(256))
        for name, read in (("read_mask (indices)", lambda: read_mask(path)),
                           ("cv2.imread (colours)", lambda: cv2.imread(str(path)))):
            start = time.perf_counter()
            for _ in range(n):
                read()
            print(f"{name}: {(time.perf_counter() - start) / n * 1e3:.2f} ms per 500×375 mask")


def bench_augment(n: int = 200) -> None:
    sample = ProceduralScenes(1, (375, 500), seed=2)[0]
    augment = TrainAugment(mirror=True, translate=32)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(n):
        image, _ = augment(sample.image, sample.mask, rng)
        normalize(image)
    print(f"TrainAugment + normalize: {(time.perf_counter() - start) / n * 1e3:.2f} ms per "
          "500×375 sample")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"{platform.python_version()} numpy {np.__version__} OpenCV {cv2.__version__}, "
          f"{os.cpu_count()} CPUs, OpenCV threads {cv2.getNumThreads()}")
    bench_scenes(args.images, tuple(args.size), args.repeat)
    bench_masks()
    bench_augment()


if __name__ == "__main__":
    main()
