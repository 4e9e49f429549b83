"""What the accuracy gate of ``fcn-edge build`` costs on the build machine, in one run.

    python benchmarks/bench_gate.py [--backbone resnet18] [--shapes 1x256x256:1x512x512:4x1024x1024]
        [--threads 0] [--out runs/bench_gate]

The gate (fcn_edge/export/trt_gate.py) runs the new engine and ONNX Runtime (CPU) on the same
frames at the profile's min, opt and max shapes. Its cost beyond the engine's own runs is the
reference (ONNX Runtime on the CPU), making the frames, and comparing the outputs. TensorRT is
not here, so a second ONNX Runtime session stands in for the engine; its calls are timed apart
and left out of the gate's own share, which is what a GPU box pays on its CPU.

Printed, for a freshly initialised FCN-8s on ``--backbone`` (21 classes; the weights do not
change the work) exported to an fp32 ONNX with the profile ``--shapes``:

* the gate's wall time, split into the engine stand-in's calls, the reference's calls and the
  rest (frames and comparison);
* one reference inference of a single max-shape frame, and the gate's own share in units of it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--shapes", default="1x256x256:1x512x512:4x1024x1024")
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        onnx_path = _export(Path(folder), args.backbone, args.shapes)
        figures = measure(onnx_path, args.threads)
    for key, value in figures.items():
        print(f"{key:<34} {value}")
    return 0


def _export(folder: Path, backbone: str, shapes: str) -> Path:
    import torch

    from fcn_edge.data import VOC_CLASSES, voc_palette
    from fcn_edge.export.exporter import ExportConfig, export
    from fcn_edge.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("fcn8s", num_classes=21, backbone=backbone).eval()
    meta = {"classes": list(VOC_CLASSES), "palette": voc_palette(21).tolist(),
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color_order": "rgb",
            "dataset": {"spec": "synthetic", "image_size": [64, 64]}}
    checkpoint = save_checkpoint(model, folder / "fcn8s.pt", meta)
    config = ExportConfig(str(checkpoint), out_dir=str(folder), shapes=shapes,
                          parity_sizes=((64, 64),), build_engine=False)
    return export(config, log=lambda line: None).artifacts["fp32"]


def measure(onnx_path: Path, threads: int) -> dict[str, str]:
    from fcn_edge.export.frames import artifact_feed, scene_arrays
    from fcn_edge.export.trt_gate import reference_backend, run_gate
    from fcn_edge.runtime.backends.onnxruntime import OnnxRuntimeBackend

    reference = reference_backend(onnx_path)
    engine = OnnxRuntimeBackend(onnx_path, provider="cpu", threads=threads)
    spent = {"engine": 0.0, "reference": 0.0}

    def timed(name, run):
        def call(feed):
            start = time.perf_counter()
            try:
                return run(feed)
            finally:
                spent[name] += time.perf_counter() - start
        return call

    meta = reference.meta
    _, h, w = meta.shapes.max
    one = artifact_feed(meta, scene_arrays(meta, [(h, w)])[0])
    reference.run(one)  # warm both sessions up
    engine.run(one)
    start = time.perf_counter()
    reference.run(one)
    single = time.perf_counter() - start
    start = time.perf_counter()
    report = run_gate(meta, timed("engine", engine.run), timed("reference", reference.run),
                      meta.shapes)
    wall = time.perf_counter() - start
    own = wall - spent["engine"]
    return {"profile (N×H×W)": str(meta.shapes), "gate passed": str(report.passed),
            "gate wall s": f"{wall:.2f}", "engine stand-in calls s": f"{spent['engine']:.2f}",
            "reference calls s": f"{spent['reference']:.2f}",
            "frames and comparison s": f"{own - spent['reference']:.2f}",
            "gate's own share s": f"{own:.2f}",
            "one reference frame at max s": f"{single:.3f}",
            "own share / one max frame": f"{own / single:.1f}",
            "frames at min, opt, max": ", ".join(str(n) for n, _, _ in
                                                 dict.fromkeys((meta.shapes.min, meta.shapes.opt,
                                                                meta.shapes.max))),
            "numpy": np.__version__, "python": sys.version.split()[0]}


if __name__ == "__main__":
    raise SystemExit(main())
