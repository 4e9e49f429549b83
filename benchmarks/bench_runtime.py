"""The runtime's figures: `run` throughput against the model alone, host cost, memory.

    python benchmarks/bench_runtime.py CHECKPOINT [--size 256x512] [--frames 300]
                                       [--long-frames 10000] [--out runs/bench_runtime]

1. Exports the checkpoint twice: plain (float NCHW in, logits out) and ``--raw-io --argmax``.
2. Model-only throughput: the backend's ``infer`` on a prepared input, back to back.
3. End-to-end throughput: ``fcn-edge run`` (``fcn_edge.runtime.run``) over a rendered video of
   the same size, writing an overlay video — capture, pre, infer, post and write all included.
4. Host pre+post per frame (a Segmenter call minus the engine's time) as a share of inference,
   for both artifacts.
5. Memory over a long run (``--long-frames`` frames of a small video): RSS at start and end.
Same backend (ONNX Runtime CPU), same threads, same machine, one run.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from fcn_edge.data import render_scene
from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.backends import open_backend
from fcn_edge.runtime.processing import frames_to_input
from fcn_edge.runtime.run import RunConfig, run


def write_video(path: Path, frames: int, size: tuple[int, int], distinct: int = 30) -> Path:
    """A video of procedural scenes (``distinct`` of them, cycled), MJPG in .avi."""
    h, w = size
    rng = np.random.default_rng(0)
    scenes = [np.ascontiguousarray(render_scene(rng, h, w)[0][..., ::-1]) for _ in range(distinct)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for i in range(frames):
        writer.write(scenes[i % distinct])
    writer.release()
    return path


def model_only_fps(model: Path, frame: np.ndarray, seconds: float = 10.0) -> float:
    with open_backend(model, "onnxruntime:cpu") as backend:
        meta = backend.meta
        batch = frame[None] if meta.raw_io else frames_to_input(
            frame[None], meta.mean, meta.std, meta.color_order, "bgr")
        backend.infer(batch)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            backend.infer(batch)
            count += 1
        return count / (time.perf_counter() - start)


def host_share(model: Path, frame: np.ndarray, frames: int = 50) -> tuple[float, float]:
    """(host ms per frame, host / inference) of Segmenter calls on ``model``."""
    with Segmenter(model, backend="onnxruntime:cpu") as seg:
        seg(frame)
        seg.reset_stats()
        for _ in range(frames):
            seg(frame)
        s = seg.stats
    host = (s.total_seconds - s.infer_seconds) / s.frames
    return host * 1e3, host / (s.infer_seconds / s.frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--size", default="256x512")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--long-frames", type=int, default=10_000)
    parser.add_argument("--long-size", default="64x96")
    parser.add_argument("--out", default="runs/bench_runtime")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    h, w = (int(v) for v in args.size.split("x"))
    print(f"{date.today()}, {platform.machine()}, {os.cpu_count()} CPUs; ONNX Runtime CPU")
    artifacts = {}
    for name, raw in (("plain", False), ("rawio_argmax", True)):
        config = ExportConfig(args.checkpoint, out_dir=str(out / name), raw_io=raw, argmax=raw,
                              parity_sizes=((h, w),))
        artifacts[name] = export(config, log=lambda s: None).artifacts["fp32"]
    frame = np.ascontiguousarray(render_scene(np.random.default_rng(1), h, w)[0][..., ::-1])
    video = write_video(out / "video.avi", args.frames, (h, w))
    for name, model in artifacts.items():
        alone = model_only_fps(model, frame)
        stats = run(RunConfig(model=str(model), source=str(video), backend="onnxruntime:cpu",
                              output=str(out / f"{name}.mp4"), progress_every=0),
                    log=lambda s: None)
        host_ms, share = host_share(model, frame)
        print(f"{name}: model-only {alone:.1f} fps; run end-to-end {stats.fps:.1f} fps "
              f"({stats.fps / alone:.0%} of model-only, {stats.frames} frames {h}×{w}); "
              f"host pre+post {host_ms:.2f} ms/frame = {share:.1%} of inference")
    lh, lw = (int(v) for v in args.long_size.split("x"))
    long_video = write_video(out / "long.avi", args.long_frames, (lh, lw))
    stats = run(RunConfig(model=str(artifacts["rawio_argmax"]), source=str(long_video),
                          backend="onnxruntime:cpu", output=str(out / "long.mp4"),
                          save_masks=None, progress_every=0), log=lambda s: None)
    print(f"memory over {stats.frames} frames ({lh}×{lw}, overlay video written): RSS "
          f"{stats.rss_start_mb:.1f} → {stats.rss_end_mb:.1f} MiB (peak {stats.rss_peak_mb:.1f})")


if __name__ == "__main__":
    main()
