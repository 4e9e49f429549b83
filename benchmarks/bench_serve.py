"""Serving figures: Triton (the bundled tritonserver running fcn-edge's Python-backend model)
against an in-process Segmenter, on the same artifact and the same frames, in one run.

    python benchmarks/bench_serve.py [CHECKPOINT] [--backbone resnet18] [--size 256x512]
        [--clients 1,4,16] [--seconds 10] [--rounds 3] [--threads 2] [--instances 1]
        [--max-delay-us 1000] [--out runs/bench_serve]

1. The artifact: CHECKPOINT, or a freshly initialised FCN-8s on ``--backbone`` (21 classes; the
   weights do not change the work), exported ``--raw-io --argmax`` (uint8 BGR frames in, labels
   out: what a deployment exports).
2. In-process: N threads calling one ``Segmenter`` (``threads`` ONNX Runtime threads), for
   each N of ``--clients``: frames/s, and each call's latency (p50, p99). One thread is the
   single-thread figure.
3. Served: ``write_python_model`` twice, with dynamic batching (``max_batch_size`` 8,
   ``--max-delay-us``) and without (``max_batch_size`` 1); the tritonserver started on each
   (``--instances`` model instances, each with the same ``threads``); N client threads, each
   with its own ``tritonclient.http`` connection sending one frame per request (binary tensor
   data), back to back. Frames/s and latency as above; ``vs in-process`` divides by the
   in-process frames/s at the same N, ``vs in-process, 1 thread`` by the single-thread one.
4. Both servers run from the start; the rows are measured in rounds (in-process, batched,
   unbatched for each N, ``--rounds`` times): frames/s is the median over the rounds, so load
   from elsewhere that comes and goes moves a round's rows together rather than one side of a
   ratio.
Clients and server share the machine, as they do when a service runs beside its callers.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import tempfile
import threading
import time
from datetime import date
from pathlib import Path
from typing import Callable

import numpy as np

from fcn_edge.data import render_scene
from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.runtime import Segmenter
from fcn_edge.serve.repository import ServeModel, write_python_model
from fcn_edge.serve.server import ServerConfig, TritonServer

Call = Callable[[], object]


def fresh_checkpoint(path: Path, backbone: str) -> Path:
    """A freshly initialised FCN-8s with the metadata training writes (21 VOC-sized classes)."""
    import torch

    from fcn_edge.data import voc_palette
    from fcn_edge.models import create_model, save_checkpoint

    torch.manual_seed(0)
    model = create_model("fcn8s", num_classes=21, backbone=backbone).eval()
    meta = {"classes": [f"class{i}" for i in range(21)], "palette": voc_palette(21).tolist(),
            "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
            "color_order": "rgb", "ignore_index": 255}
    return save_checkpoint(model, path, meta)


def drive(make_call: Callable[[], Call], clients: int, seconds: float
          ) -> tuple[float, list[float]]:
    """``clients`` threads, each with its own ``make_call()``, calling back to back for
    ``seconds`` after one warm-up call each: (frames/s, every call's latency in s)."""
    calls = [make_call() for _ in range(clients)]
    start, latencies = threading.Barrier(clients + 1), [[] for _ in range(clients)]
    end = [float("inf")]  # until the main thread, past the barrier, sets it

    def client(call: Call, times: list[float]) -> None:
        call()
        start.wait()
        while (now := time.perf_counter()) < end[0]:
            call()
            times.append(time.perf_counter() - now)

    threads = [threading.Thread(target=client, args=(c, t)) for c, t in zip(calls, latencies)]
    for thread in threads:
        thread.start()
    start.wait()  # every client is warm
    begun = time.perf_counter()
    end[0] = begun + seconds
    for thread in threads:
        thread.join()
    every = [t for times in latencies for t in times]
    return len(every) / (time.perf_counter() - begun), every


def http_calls(server: TritonServer, frame: np.ndarray, opened: list) -> Callable[[], Call]:
    """A factory of callers, each with its own tritonclient HTTP connection (kept in
    ``opened``, to be closed), sending ``frame`` as one binary uint8 tensor per request."""
    import tritonclient.http as httpclient

    def make_call() -> Call:
        client = httpclient.InferenceServerClient(server.http_url.split("://")[1],
                                                  network_timeout=300)
        opened.append(client)
        sent = httpclient.InferInput("frame", [1, *frame.shape], "UINT8")
        sent.set_data_from_numpy(frame[None], binary_data=True)
        wanted = [httpclient.InferRequestedOutput("labels", binary_data=True)]
        return lambda: client.infer("fcn", [sent], outputs=wanted).as_numpy("labels")
    return make_call


def measure(artifact: Path, repos: dict[str, Path], frame: np.ndarray, args: argparse.Namespace
            ) -> dict[str, dict[int, list]]:
    """Every (where, clients) row, ``--rounds`` times, the rows of one round one after the
    other: a machine that drifts moves all rows of a round, not one side of a ratio."""
    config = ServerConfig(http_port=0, grpc_port=0, metrics_port=0, drain_timeout=5)
    clients = [int(v) for v in args.clients.split(",")]
    got: dict[str, dict[int, list]] = {}
    opened: list = []
    with contextlib.ExitStack() as stack:
        seg = stack.enter_context(Segmenter(artifact, "onnxruntime:cpu", threads=args.threads))
        makers = {"in-process": lambda: (lambda: seg(frame))}
        for name, repo in repos.items():
            server = stack.enter_context(TritonServer(repo, config))
            server.wait_ready()
            makers[name] = http_calls(server, frame, opened)
        for _ in range(args.rounds):
            for n in clients:
                for name, make_call in makers.items():
                    got.setdefault(name, {}).setdefault(n, []).append(
                        drive(make_call, n, args.seconds))
                    while opened:  # each row's connections closed before the next row
                        opened.pop().close()
    return got


def summary(runs: list[tuple[float, list[float]]]) -> dict[str, float]:
    """Median frames/s over the rounds; latency percentiles over every call of them."""
    every = sorted(t for _, times in runs for t in times)
    return {"fps": statistics.median(fps for fps, _ in runs),
            "p50": 1e3 * statistics.median(every),
            "p99": 1e3 * every[min(len(every) - 1, int(0.99 * len(every)))]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", default="256x512", help="HxW of the frames")
    parser.add_argument("--clients", default="1,4,16")
    parser.add_argument("--seconds", type=float, default=10.0, help="per row and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="ONNX Runtime threads, in-process and in the served model")
    parser.add_argument("--instances", type=int, default=1, help="served model instances")
    parser.add_argument("--max-delay-us", type=int, default=1000)
    parser.add_argument("--out", default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_serve-"))
    out.mkdir(parents=True, exist_ok=True)
    h, w = (int(v) for v in args.size.split("x"))
    checkpoint = Path(args.checkpoint or fresh_checkpoint(out / "best.pt", args.backbone))
    artifact = export(ExportConfig(str(checkpoint), out_dir=str(out), raw_io=True, argmax=True,
                                   parity_sizes=((h, w),)), log=lambda s: None).artifacts["fp32"]
    frame = np.ascontiguousarray(render_scene(np.random.default_rng(1), h, w)[0][..., ::-1])
    repos = {}
    for name, batch in (("batched", 8), ("unbatched", 1)):
        write_python_model(out / name, artifact, ServeModel(
            max_batch_size=batch, max_delay_us=args.max_delay_us, threads=args.threads,
            instances=args.instances))
        repos[name] = out / name
    source = "given" if args.checkpoint else f"fresh FCN-8s {args.backbone}"
    print(f"{date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}; {checkpoint.name} ({source}), raw-io argmax, {w}×{h} "
          f"frames; ONNX Runtime CPU, {args.threads} threads; served by {args.instances} "
          f"instance(s); {args.rounds} rounds of {args.seconds:g} s a row")
    report({name: {n: summary(runs) for n, runs in rows.items()}
            for name, rows in measure(artifact, repos, frame, args).items()}, args)


def report(rows: dict[str, dict[int, dict[str, float]]], args: argparse.Namespace) -> None:
    local = rows["in-process"]
    single = local[min(local)]["fps"]
    labels = {"in-process": "in-process Segmenter",
              "batched": f"Triton, dynamic batching (max 8, {args.max_delay_us} µs)",
              "unbatched": "Triton, no batching (max 1)"}
    print("| where | clients | frames/s | p50 ms | p99 ms | vs in-process | "
          f"vs in-process, {min(local)} thread |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, each in rows.items():
        for n, got in each.items():
            print(f"| {labels[name]} | {n} | {got['fps']:.1f} | {got['p50']:.1f} | "
                  f"{got['p99']:.1f} | {got['fps'] / local[n]['fps']:.0%} | "
                  f"{got['fps'] / single:.0%} |")
    goal = rows["batched"].get(4)
    if goal and 4 in local:
        ratio = goal["fps"] / local[4]["fps"]
        print(f"goal (dynamic batching, 4 clients >= 90 % of in-process at 4 threads): "
              f"{ratio:.0%} -> {'reached' if ratio >= 0.9 else 'not reached'}; "
              f"of in-process at {min(local)} thread: {goal['fps'] / single:.0%}")


if __name__ == "__main__":
    main()
