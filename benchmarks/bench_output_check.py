"""What the per-call class check costs: every result a backend returns is held to its
metadata (labels below the class count, logits with one channel per class), so that lying
metadata cannot hand out labels without a name. This times that check against the backend's own
inference on the same batch, in one run, interleaved, and prints the ratio.

    python benchmarks/bench_output_check.py runs/demo/artifacts/*/*.onnx --size 512x1024

Each artifact runs on ONNX Runtime (CPU) with one random batch of ``--size``: fp32 input for
normalised (NCHW) models, uint8 BGR frames for raw-IO ones.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from fcn_edge.runtime.backends import open_backend
from fcn_edge.runtime.backends.base import check_outputs


def _batch(spec, height: int, width: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    if spec.layout == "NCHW":
        return rng.random((1, spec.channels, height, width), dtype=np.float32)
    return rng.integers(0, 256, (1, height, width, spec.channels), dtype=np.uint8)


def measure(path: Path, height: int, width: int, repeat: int) -> dict:
    backend = open_backend(path, backend="onnxruntime")
    feed = {name: _batch(spec, height, width) for name, spec in backend.input_specs.items()}
    backend.run(feed)  # warm-up
    runs, checks = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        outputs = backend._run(feed)  # the inference alone, without the check
        runs.append(time.perf_counter() - started)
        started = time.perf_counter()
        check_outputs(backend.meta, outputs, backend.path)
        checks.append(time.perf_counter() - started)
    backend.close()
    run, check = statistics.median(runs), statistics.median(checks)
    return {"artifact": path.name, "output": "labels" if backend.meta.argmax else "logits",
            "run_ms": run * 1e3, "check_ms": check * 1e3, "ratio": check / run}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", type=Path)
    parser.add_argument("--size", default="512x1024", help="HxW of the batch")
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    height, width = (int(side) for side in args.size.lower().split("x"))
    print("| artifact | output | inference ms (median) | check ms (median) | check / inference |")
    print("| --- | --- | ---: | ---: | ---: |")
    for path in args.artifacts:
        row = measure(path, height, width, args.repeat)
        print(f"| {row['artifact']} | {row['output']} | {row['run_ms']:.1f} | "
              f"{row['check_ms']:.3f} | {row['ratio']:.4f} |")


if __name__ == "__main__":
    main()
