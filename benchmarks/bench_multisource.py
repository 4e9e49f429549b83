"""Several sources, one model: aggregate and per-source FPS and latency against one source alone.

    python benchmarks/bench_multisource.py MODEL [--counts 1,2,4] [--mode files|live]
                                           [--size 256x512] [--seconds 20] [--fps 30]
                                           [--out runs/bench_multisource]

MODEL is an exported artifact (.onnx) or a checkpoint (exported here, ``--raw-io --argmax``);
``--untrained BACKBONE`` builds an untrained FCN-8s instead (speed does not depend on weights).

For each count N of sources, in one process on one machine: one source alone through the
single-source pipeline (``run_pipeline``) and N sources through the batched pipeline
(``run_sources``), back to back, ``--rounds`` times in alternating order; each figure is the
median over the rounds and each ratio the median of the rounds' ratios, so that a machine
whose load changes (the 2-core box is shared) moves both sides of a ratio alike. Each source
writes an overlay video, as ``fcn-edge run --output`` does.

* ``--mode files``: each source a video read as fast as it can be (every frame segmented): the
  throughput case. Aggregate FPS = all frames / wall time; a source's FPS = its frames / the time
  until its last frame was written. N sources share the frames of one run (each has 1/N of
  them), so every run takes about as long.
* ``--mode live``: each source a video paced at ``--fps`` as a camera sends it (the
  latest-frame policy drops what the model has no time for): the deployment case, where
  end-to-end latency (capture to written) means something; file queues only add queueing to it.

The goals (issue 19): fairness — no source below 1/N of the single-source rate by more than
10 % (``min/fair`` ≥ 0.90); throughput — aggregate ≥ 95 % of single-source (``agg/single``).
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from fcn_edge.data import render_scene
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.multi import run_sources
from fcn_edge.runtime.pipeline import run_pipeline
from fcn_edge.runtime.sinks import VideoSink
from fcn_edge.runtime.sources import open_source


def write_video(path: Path, frames: int, size: tuple[int, int], fps: float, seed: int) -> Path:
    """Procedural scenes (30 distinct ones, cycled) as an MJPG video at ``fps``."""
    h, w = size
    rng = np.random.default_rng(seed)
    scenes = [np.ascontiguousarray(render_scene(rng, h, w)[0][..., ::-1]) for _ in range(30)]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for i in range(frames):
        writer.write(scenes[i % len(scenes)])
    writer.release()
    return path


def prepare_model(args: argparse.Namespace, out: Path, size: tuple[int, int]) -> Path:
    """The artifact to time: given, exported from a checkpoint, or an untrained FCN-8s."""
    if args.model and args.model.endswith(".onnx"):
        return Path(args.model)
    from fcn_edge.export.exporter import ExportConfig, export

    checkpoint = args.model or str(untrained_checkpoint(args.untrained, out / "untrained.pt"))
    config = ExportConfig(checkpoint, out_dir=str(out / "artifact"), raw_io=True, argmax=True,
                          parity_sizes=(size,))
    return export(config, log=lambda s: None).artifacts["fp32"]


def untrained_checkpoint(backbone: str, path: Path) -> Path:
    import torch

    from fcn_edge.data import PROCEDURAL_CLASSES, voc_palette
    from fcn_edge.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("fcn8s", num_classes=len(PROCEDURAL_CLASSES), backbone=backbone)
    meta = {"classes": list(PROCEDURAL_CLASSES),
            "palette": voc_palette(len(PROCEDURAL_CLASSES)).tolist(),
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "color_order": "rgb"}
    return save_checkpoint(model.eval(), path, meta)


def measure(seg: Segmenter, videos: list[Path], live: bool, out: Path, single: bool) -> dict:
    """One run over ``videos`` (one alone through ``run_pipeline`` when ``single``)."""
    sources = [open_source(v, live=live) for v in videos]
    seg.reset_stats()
    sinks = [[VideoSink(out / f"{'single' if single else len(videos)}-{i}.mp4", fps=s.fps)]
             for i, s in enumerate(sources)]
    started = time.perf_counter()
    if single:
        lanes = [run_pipeline(sources[0], seg, sinks[0])]
        batch = 1.0
    else:
        stats = run_sources(sources, seg, sinks)
        lanes, batch = stats.sources, stats.mean_batch
    wall = time.perf_counter() - started
    e2e = [lane.latency_ms["end_to_end"] for lane in lanes]
    return {"aggregate": sum(lane.frames for lane in lanes) / wall,
            "per_source": [lane.fps for lane in lanes],
            "dropped": sum(lane.dropped for lane in lanes),
            "p50": max(t["p50"] for t in e2e), "p99": max(t["p99"] for t in e2e),
            "batch": batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?")
    parser.add_argument("--untrained", default="resnet18", help="backbone, without MODEL")
    parser.add_argument("--counts", default="1,2,4")
    parser.add_argument("--mode", choices=("files", "live"), default="files")
    parser.add_argument("--size", default="256x512")
    parser.add_argument("--seconds", type=float, default=20.0,
                        help="files: frames for about this long alone; live: video length")
    parser.add_argument("--fps", type=float, default=30.0, help="live: each camera's rate")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime threads (0: all)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per count")
    parser.add_argument("--out", default="runs/bench_multisource")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = tuple(int(v) for v in args.size.split("x"))
    counts = [int(n) for n in args.counts.split(",")]
    model = prepare_model(args, out, size)
    seg = Segmenter(str(model), "onnxruntime:cpu", threads=args.threads)
    frame = np.ascontiguousarray(render_scene(np.random.default_rng(9), *size)[0][..., ::-1])
    for _ in range(5):
        seg(frame)
    start = time.perf_counter()
    for _ in range(10):
        seg(frame)
    model_fps = 10 / (time.perf_counter() - start)
    live = args.mode == "live"
    frames = int(args.seconds * (args.fps if live else model_fps))
    if live:  # cameras: the first N of one set, each as long
        cameras = [write_video(out / f"live{i}.avi", frames, size, args.fps, i)
                   for i in range(max(counts))]
        sets = {n: cameras[:n] for n in set(counts) | {1}}
    else:  # N videos of frames/N each: every run about as long
        sets = {n: [write_video(out / f"in{n}-{i}.avi", frames // n, size, args.fps, i)
                    for i in range(n)] for n in set(counts) | {1}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"{date.today()}, commit {commit}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; {Path(model).name} ({seg.meta.backbone}) on onnxruntime:cpu, "
          f"{size[0]}x{size[1]}, Segmenter alone {model_fps:.1f} fps; mode {args.mode}: "
          + (f"{frames} frames per camera at {args.fps:g} fps" if live else
             f"{frames} frames per run (1/N per source)") + f", median of {args.rounds} rounds"
          + f"; load average {os.getloadavg()[0]:.1f}")
    print("| sources | single fps | aggregate fps | agg/single | per-source fps | min/fair "
          "| e2e p50 / p99 ms (worst source) | frames per call | dropped |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for n in counts:
        rounds = []
        for r in range(args.rounds):  # alternating order: neither side always runs first
            pair = [("alone", sets[1], True), ("many", sets[n], False)][::1 - 2 * (r % 2)]
            rounds.append({name: measure(seg, vids, live, out, single)
                           for name, vids, single in pair})
        print(_row(n, rounds), flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (other work on the machine moves "
          f"single runs: compare the ratios, each measured back to back)")
    seg.close()


def _row(n: int, rounds: list[dict]) -> str:
    """A table row: medians over the rounds, ratios per round then their median."""
    def med(values) -> float:
        return float(np.median(list(values)))

    alone, many = (med(r[k]["aggregate"] for r in rounds) for k in ("alone", "many"))
    per_source = [med(r["many"]["per_source"][i] for r in rounds) for i in range(n)]
    ratio = med(r["many"]["aggregate"] / r["alone"]["aggregate"] for r in rounds)
    fair = med(min(r["many"]["per_source"]) * n / r["alone"]["aggregate"] for r in rounds)
    p50, p99, a50, a99 = (med(r[k][q] for r in rounds) for k, q in
                          (("many", "p50"), ("many", "p99"), ("alone", "p50"), ("alone", "p99")))
    return (f"| {n} | {alone:.2f} | {many:.2f} | {ratio:.0%} | "
            f"{', '.join(f'{v:.2f}' for v in per_source)} | {fair:.2f} | {p50:.0f} / {p99:.0f} "
            f"(alone {a50:.0f} / {a99:.0f}) | {med(r['many']['batch'] for r in rounds):.2f} | "
            f"{med(r['many']['dropped'] for r in rounds):.0f} |")


if __name__ == "__main__":
    main()
