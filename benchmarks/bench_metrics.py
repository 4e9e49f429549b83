"""Time ConfusionMatrix.update on random label maps, against one unchunked np.bincount.

Usage: python benchmarks/bench_metrics.py [--pixels 1e8] [--classes 21 [150 ...]] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a plain checkout
from fcn_edge.metrics import ConfusionMatrix  # noqa: E402

IGNORE = 255


def random_maps(pixels: int, classes: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 (pred, target) with about 5 % of target pixels set to the ignore label."""
    rng = np.random.default_rng(seed)
    pred = rng.integers(0, classes, pixels, dtype=np.uint8)
    target = rng.integers(0, classes, pixels, dtype=np.uint8)
    target[rng.random(pixels, dtype=np.float32) < 0.05] = IGNORE
    return pred, target


def naive_update(pred: np.ndarray, target: np.ndarray, classes: int) -> np.ndarray:
    """The textbook one-liner over everything at once; ignored rows are sliced off after."""
    index = classes * target.astype(np.int64) + pred
    counts = np.bincount(index, minlength=(IGNORE + 1) * classes)
    return counts.reshape(-1, classes)[:classes]


def timings(fn: Callable[[], object], repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def seconds_text(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 0.1 else f"{seconds * 1e3:.1f} ms"


def report(name: str, pixels: int, classes: int, seconds: list[float]) -> float:
    best, median = min(seconds), statistics.median(seconds)
    print(f"{name}: {pixels:,} px, {classes} classes: best {seconds_text(best)}, "
          f"median {seconds_text(median)} ({pixels / best / 1e6:.0f} Mpx/s)")
    return best


def bench(pixels: int, classes: int, repeat: int) -> None:
    """Print our and the naive timings for one setting, and check both agree."""
    pred, target = random_maps(pixels, classes)
    cm = ConfusionMatrix(classes, ignore_index=IGNORE)
    cm.update(pred[:4096], target[:4096])  # warm-up: imports, allocator, code paths
    ours = report("metrics", pixels, classes, timings(lambda: cm.update(pred, target), repeat))
    naive = report("naive bincount", pixels, classes,
                   timings(lambda: naive_update(pred, target, classes), repeat))
    print(f"speed-up over naive bincount: {naive / ours:.2f}x")
    cm.reset()
    cm.update(pred, target)
    assert np.array_equal(cm.matrix, naive_update(pred, target, classes)), "results differ"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pixels", type=float, default=1e8, help="pixels per update")
    parser.add_argument("--classes", type=int, nargs="+", default=[21],
                        help="numbers of classes to try, each in [1, 255) (uint8 maps)")
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats")
    args = parser.parse_args()
    if not all(1 <= c < IGNORE for c in args.classes) or args.repeat < 1 or args.pixels < 1:
        parser.error("need --pixels ≥ 1, --repeat ≥ 1 and every --classes in [1, 255)")
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"numpy {np.__version__}, Python {platform.python_version()}")
    for classes in args.classes:
        bench(int(args.pixels), classes, args.repeat)


if __name__ == "__main__":
    main()
