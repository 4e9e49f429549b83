"""``fcn-edge run`` (an exported model over a camera, video, images or stream) and
``fcn-edge bench`` (every backend and precision against the PyTorch reference)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ..errors import InputError
from ..io import check_writable
from .args import DATA_LAYOUTS, add_bounded, config_from_args
from .model_arg import ANY, ModelArgument, add_model_argument, resolve_model, zoo_name

# The configs whose ranges the flags read, imported only when a flag is given.
_RUN = "fcn_edge.runtime.run:RunConfig"
_BENCH = "fcn_edge.bench.runner:BenchConfig"


def cmd_run(args: argparse.Namespace) -> int:
    from ..runtime.modalities import extra_modalities
    from ..runtime.run import RunConfig, input_folders, run

    specs = args.source or []  # one SOURCE: ``source``; several: ``sources``, batched
    args.source = specs[0] if len(specs) == 1 else None
    _zoo_name_as_model(args)
    resolve_model(args)
    model = args.model or _latest_artifact(Path("runs"))
    flags = {m.name: getattr(args, f"input_{m.name}", None) for m in extra_modalities()}
    config = config_from_args(RunConfig, args, model=model,
                              sources=tuple(specs) if len(specs) > 1 else (),
                              inputs=input_folders(args.input, flags))
    # Ctrl-C or SIGTERM before the pipeline started (model load, first connection) reaches
    # main(), which reports it in one line; once started, the pipeline finishes the outputs.
    stats = run(config, log=print)
    return 130 if stats.interrupted else 0


def _zoo_name_as_model(args: argparse.Namespace) -> None:
    """``fcn-edge run torchvision/fcn_resnet50 --camera 0``: a zoo name where the source goes,
    with no --model, is the model (no source is spelled like one; a path that exists wins)."""
    if args.model is None and args.source is not None:
        args.model, args.source = args.source, None
        if zoo_name(args) is None:  # not a zoo name: the source it was
            args.model, args.source = None, args.model


def _latest_artifact(root: Path) -> str:
    """The newest exported model under ``root`` (engines first): `fcn-edge run --camera 0`
    works right after `fcn-edge demo` or `fcn-edge export`. Never a leftover of a write that
    did not finish: hidden files and folders (atomic writes' ``.NAME.XXXX.tmp``, a video's
    ``.NAME.partial``) and empty files are passed over."""
    def finished(path: Path) -> bool:
        try:
            hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
            return not hidden and path.is_file() and path.stat().st_size > 0
        except OSError:  # vanished or unreadable while we looked
            return False

    for pattern in ("*.engine", "*.onnx"):
        found = sorted(filter(finished, root.rglob(pattern)),
                       key=lambda p: p.stat().st_mtime) if root.is_dir() else []
        if found:
            print(f"model: {found[-1]} (the newest under {root}/; choose with --model)")
            return str(found[-1])
    raise InputError(f"no model given and none exported under {root}/: pass --model "
                     f"MODEL.onnx (make one with `fcn-edge export CHECKPOINT`)")


def cmd_bench(args: argparse.Namespace) -> int:
    from ..bench.plan import BENCH_BACKENDS, IO_KINDS, PRECISIONS, parse_choices
    from ..bench.report import format_table, profile_text, write_report
    from ..bench.runner import BenchConfig, bench

    lists = {dest: parse_choices(getattr(args, dest), choices, f"--{dest}")
             for dest, choices in (("backends", BENCH_BACKENDS), ("precisions", PRECISIONS),
                                   ("io", IO_KINDS)) if getattr(args, dest)}
    config = config_from_args(BenchConfig, args, **lists)
    check_writable(config.out_dir, "--out", folder=True)
    if resolve_model(args):  # a zoo name: its file, prepared once the flags are good
        config = replace(config, model=args.model)
    if args.baseline is not None:  # a file, or a zoo name as the model argument takes one
        baseline = argparse.Namespace(baseline=args.baseline, model_argument=ModelArgument(
            "baseline", "--baseline", ANY, "fcn-edge bench", weights_dest="baseline_weights"))
        resolve_model(baseline)
        config = replace(config, baseline=baseline.baseline)
    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    report = bench(config, log=log)
    print(format_table(report))
    if report.profiles:
        print("\n" + profile_text(report))
    written = write_report(report, config.out_dir)
    print(f"wrote {', '.join(str(p) for p in written.values())}")
    return 1 if any(r.check == "FAIL" for r in report.rows) else 0


def add_parsers(sub) -> None:
    _add_run_parser(sub)
    _add_bench_parser(sub)


def _add_run_parser(sub) -> None:
    from ..runtime.modalities import extra_modalities

    p = sub.add_parser("run", help="segment a camera, video, images or a stream",
                       description="Run an exported model over a source; overlays, masks and "
                                   "statistics out. Ctrl-C ends cleanly.")
    p.add_argument("source", nargs="*", metavar="SOURCE",
                   help="video file, image, folder, glob (quoted), rtsp:// or http(s):// URL, "
                        "a camera index, v4l2:///dev/videoN, csi://N or a GStreamer pipeline "
                        "(gst:… or text with !); several SOURCEs run through the model in shared "
                        "batches, each into its own outputs")
    add_bounded(p, "--camera", _RUN, help="camera index, instead of SOURCE")
    add_model_argument(p, "--model", needs=ANY,
                       help="an artifact of fcn-edge export (.onnx, .engine), a checkpoint, or "
                            "a zoo name (default: the newest export under runs/)")
    p.add_argument("--backend",
                   help="auto (the fastest available), onnxruntime, tensorrt, torch, or an "
                        "exact name such as onnxruntime:cpu or torch:cuda")
    p.add_argument("--output", help="video (.mp4, .avi), image, or folder of overlays")
    p.add_argument("--save-masks", help="folder for palette PNG label maps")
    p.add_argument("--show", action="store_true", help="show a window (when a display exists)")
    p.add_argument("--legend", action="store_true",
                   help="draw a class legend (colour and name) on the overlays; with more "
                        "than 12 classes, only the classes in each frame")
    p.add_argument("--serve", metavar="[HOST:]PORT",
                   help="serve a live view (overlay, legend, figures) to browsers at "
                        "http://HOST:PORT/ (HOST default 127.0.0.1; PORT 0: any free port)")
    add_bounded(p, "--alpha", _RUN, help="overlay opacity")
    add_bounded(p, "--max-frames", _RUN)
    p.add_argument("--stats", help="write the end statistics to this JSON file")
    p.add_argument("--live", action=argparse.BooleanOptionalAction,
                   help="latest-frame policy (default: on for cameras and URLs)")
    add_bounded(p, "--threads", _RUN, help="CPU inference threads")
    add_bounded(p, "--queue-size", _RUN)
    add_bounded(p, "--max-batch", _RUN,
                help="several SOURCEs: at most N frames per model call (default: one per source)")
    add_bounded(p, "--batch-timeout", _RUN, metavar="MS",
                help="several SOURCEs: milliseconds a batch waits for the sources that have no "
                     "frame ready (default 10)")
    add_bounded(p, "--reconnect-timeout", _RUN,
                help="seconds to keep reopening a dropped live source")
    add_bounded(p, "--progress-every", _RUN,
                help="seconds between progress lines (0: none)")
    add_bounded(p, "--input-width", _RUN, metavar="W",
                help="V4L2 and csi:// cameras: frame width asked for")
    add_bounded(p, "--input-height", _RUN, metavar="H",
                help="V4L2 and csi:// cameras: frame height asked for")
    add_bounded(p, "--input-fps", _RUN, metavar="FPS",
                help="V4L2 and csi:// cameras: frame rate asked for")
    p.add_argument("--input-codec", metavar="FOURCC",
                   help="V4L2 cameras: pixel format, MJPG, YUYV, UYVY, NV12, YU12, GREY, BGR3 "
                        "or RGB3")
    add_bounded(p, "--rtsp-latency", _RUN, metavar="MS",
                help="rtsp:// streams: ms FFmpeg waits to reorder packets (max_delay)")
    p.add_argument("--rtsp-transport", metavar="tcp|udp",
                   help="rtsp:// streams: tcp (default) or udp")
    p.add_argument("--head", metavar="TASK",
                   help="multi-head models: the task the overlays show (default: the first); "
                        "--save-masks writes every head's, a subfolder per task")
    p.add_argument("--input", action="append", default=[], metavar="NAME=DIR",
                   help="a folder of any registered modality's files named like the source's "
                        "images, e.g. depth=depth/ (repeatable)")
    for modality in extra_modalities():  # --depth DIR, --hha DIR, and any registered one
        try:
            p.add_argument(f"--{modality.name}", metavar="DIR", dest=f"input_{modality.name}",
                           help=f"models that take {modality.name}: a folder of "
                                f"{modality.files} named like the source's images")
        except argparse.ArgumentError:  # a name another flag has: --input NAME=DIR gives it
            continue
    p.set_defaults(func=cmd_run)


def _add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="latency, FPS and mIoU of every backend and precision "
                                     "against the PyTorch fp32 reference",
                       description="Benchmark a checkpoint (exported here to every artifact "
                                   "needed) or one exported artifact. Exit 1 when an artifact "
                                   "falls outside the regression bounds.")
    add_model_argument(p, "model", needs=ANY,
                       help="a checkpoint, an .onnx/.engine from fcn-edge export/build, or a "
                            "zoo name")
    p.add_argument("--data",
                   help="labelled data for mIoU: 'synthetic' (the checkpoint's procedural "
                        "scenes, rendered at each size), a data set folder, or 'none' "
                        "(unlabelled frames: timing and agreement only). Default: synthetic "
                        "for a model trained on it, else none")
    p.add_argument("--data-layout", choices=DATA_LAYOUTS, metavar="LAYOUT",
                   help="override the detected layout: %(choices)s")
    p.add_argument("--split")
    add_bounded(p, "--images", _BENCH, help="evaluation images per size")
    p.add_argument("--backends", help="comma-separated, or all: "
                   "tensorrt, onnxruntime:tensorrt, onnxruntime:cuda, onnxruntime:cpu, "
                   "torch:cuda+graphs, torch:cuda, torch:cpu")
    p.add_argument("--precisions", help="fp32,fp16,int8 or all")
    p.add_argument("--io", help="plain (float NCHW in, logits out), raw (--raw-io --argmax "
                                "artifacts) or all")
    add_bounded(p, "--sizes", _BENCH, help="HEIGHTxWIDTH,…")
    add_bounded(p, "--runs", _BENCH, help="timed calls per measurement")
    add_bounded(p, "--warmup", _BENCH)
    add_bounded(p, "--max-seconds", _BENCH,
                help="stop a measurement after this long (at least 5 calls)")
    add_bounded(p, "--threads", _BENCH,
                help="threads for every CPU backend (default: every core)")
    p.add_argument("--reference", help="the checkpoint an exported MODEL came from (ΔmIoU)")
    p.add_argument("--calib", help="int8 calibration data (default: the checkpoint's)")
    p.add_argument("--baseline", metavar="MODEL",
                   help="a second checkpoint, artifact or zoo name run through the same rows, "
                        "timed interleaved with the model's; the ×base column is its e2e median / "
                        "the row's (above 1: faster than the baseline)")
    add_bounded(p, "--profile", _BENCH, nargs="?", const=20, metavar="N",
                help="profile each ONNX Runtime CPU row with ONNX Runtime's profiler over N "
                     "calls (default 20): time and GFLOP/s per op type and the slowest "
                     "nodes, printed after the table (bench_profile.txt; traces in OUT/profile)")
    p.add_argument("--out", dest="out_dir", metavar="OUT",
                   help="folder for artifacts and bench.txt/.csv/.json")
    p.add_argument("--quiet", action="store_true", help="only the table")
    p.set_defaults(func=cmd_bench)
