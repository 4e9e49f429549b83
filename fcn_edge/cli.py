"""The ``fcn-edge`` command line: parses arguments, calls library functions, nothing else.

Every command is one function ``cmd_<name>(args) -> int``. An :class:`FcnEdgeError` becomes
one line on stderr and exit code 1 (2 when an optional engine is missing), never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Sequence

from . import __version__
from .errors import BackendUnavailable, FcnEdgeError, InputError


def cmd_checks(args: argparse.Namespace) -> int:
    from .checks import run_checks

    return 0 if run_checks(with_smoke=not args.no_smoke) else 1


def cmd_models(args: argparse.Namespace) -> int:
    height, width = _parse_size(args.size)
    try:
        from .models.summary import describe_all
    except ImportError as exc:
        raise BackendUnavailable(f"listing models needs torch ({exc.name} is missing): "
                                 f"pip install 'fcn-edge[train]'") from None
    rows = describe_all(num_classes=args.num_classes, size=(height, width))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<8} {'backbone':<9} {'layout':<10} {'stride':>6} {'params':>9} "
          f"{'GFLOPs':>8}   (at {height}×{width}, {args.num_classes} classes)")
    for r in rows:
        print(f"{r['name']:<8} {r['backbone']:<9} {r['layout']:<10} {r['output_stride']:>6} "
              f"{r['params'] / 1e6:>8.1f}M {r['gflops']:>8.1f}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import ModelConfig, TrainConfig
    from .train import train

    model = ModelConfig(name=args.model, backbone=args.backbone, layout=args.layout,
                        learnable_upsampling=args.learnable_upsampling,
                        inputs=_parse_inputs(args.inputs), fusion=args.fusion)
    # Resuming continues the saved run: its epochs unless --epochs extends them, its folder.
    epochs = args.epochs if args.epochs is not None else (1 if args.resume else 10)
    out = args.out or (str(Path(args.resume).parent) if args.resume else "runs/train")
    config = TrainConfig(
        model=model, data=args.data, data_layout=args.data_layout,
        train_split=args.train_split, val_split=args.val_split, num_images=args.num_images,
        val_images=args.val_images, image_size=_parse_size(args.image_size or "256x256"),
        difficulty=args.difficulty or "standard", optimizer=args.optimizer,
        epochs=epochs, batch_size=args.batch_size, recipe=args.recipe, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, schedule=args.schedule,
        class_weights=_parse_floats(args.class_weights, "--class-weights"),
        tasks=tuple(args.tasks.split(",")) if args.tasks else None,
        task_weights=_parse_floats(args.task_weights, "--task-weights"),
        loss_sample_p=args.loss_sample_p, mirror=not args.no_mirror, translate=args.translate,
        scale=_parse_floats(args.scale, "--scale", count=2),
        crop=_parse_size(args.crop) if args.crop else None, weights=args.weights,
        init_from=args.init_from, resume=args.resume, out_dir=out, device=args.device,
        amp=args.amp, threads=args.threads, workers=args.workers, seed=args.seed,
        max_steps=args.max_steps)
    result = train(config, progress=not args.quiet)
    if result.best_path is not None:
        print(f"best mean IU {result.best_miou:.4f}: {result.best_path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .io import atomic_path
    from .train.evaluation import evaluate_checkpoint_tasks

    results = evaluate_checkpoint_tasks(
        args.checkpoint, args.data, args.data_layout, args.split, args.device,
        args.save_predictions, args.num_images,
        _parse_size(args.image_size) if args.image_size else None, args.seed,
        args.difficulty)
    (metrics, classes), *others = results.values()
    for i, (task, (m, names)) in enumerate(results.items()):  # a table per task (Table 5)
        if others:
            print(("\n" if i else "") + f"task {task}:")
        print(m.format_table(names))
    if args.json:  # the first head's metrics at the top, every head's under "tasks"
        report = metrics.to_dict(classes)
        if others:
            report["tasks"] = {t: m.to_dict(n) for t, (m, n) in results.items()}
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
    return 0


def _parse_inputs(text: str | None) -> tuple[tuple[str, int], ...]:
    """``rgb,depth`` → ModelConfig.inputs pairs (modality, channels); None → () (RGB)."""
    from .config import MODALITY_CHANNELS

    if not text:
        return ()
    names = [n.strip() for n in text.split(",")]
    unknown = [n for n in names if n not in MODALITY_CHANNELS]
    if unknown:
        raise InputError(f"--inputs takes modalities from {', '.join(MODALITY_CHANNELS)} "
                         f"(e.g. rgb,depth), got {text!r}")
    return tuple((n, MODALITY_CHANNELS[n]) for n in names)


def _parse_floats(text: str | None, flag: str, count: int | None = None):
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{flag} takes comma-separated numbers, got {text!r}") from None
    if count is not None and len(values) != count:
        raise InputError(f"{flag} takes {count} comma-separated numbers, got {text!r}")
    return values


def cmd_export(args: argparse.Namespace) -> int:
    from .export.exporter import ExportConfig, export

    sizes = tuple(_parse_size(t) for t in args.parity_sizes.split(",")) \
        if args.parity_sizes else None
    config = ExportConfig(
        checkpoint=args.checkpoint, out_dir=args.output, fp16=args.fp16, int8=args.int8,
        calib=args.calib, calib_images=args.calib_images, int8_target=args.int8_target,
        eval_data=args.eval_data,
        eval_images=args.eval_images, opset=args.opset, shapes=args.shapes, argmax=args.argmax,
        labels_dtype=args.labels_dtype, raw_io=args.raw_io, simplify=not args.no_simplify,
        parity_sizes=sizes, triton_repo=args.triton_repo, build_engine=not args.no_engine,
        workspace_gb=args.workspace, target=args.target,
        **({"trt_versions": tuple(args.trt_version.split(","))} if args.trt_version else {}))
    result = export(config, log=print)
    print(f"export done in {result.report['seconds']:.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in result.artifacts.items()))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    if args.check_only:
        return _check_only(args)
    if args.trt_version:
        raise InputError("--trt-version goes with --check-only: a build is checked against the "
                         "TensorRT it runs with")
    from .export.tensorrt import BuildOptions, build_engine
    from .runtime.metadata import parse_shapes

    options = BuildOptions(
        precision="fp16" if args.fp16 else "fp32",
        shapes=parse_shapes(args.shapes) if args.shapes else None,
        workspace_gb=args.workspace, output=Path(args.output) if args.output else None,
        force=args.force, check=not args.no_check,
        **({"cache_dir": Path(args.cache_dir)} if args.cache_dir else {}))
    print(f"wrote {build_engine(Path(args.model), options)}")
    return 0


def _check_only(args: argparse.Namespace) -> int:
    """``fcn-edge build MODEL.onnx --check-only``: will it build? Exit 0 when every release
    asked passes every rule, 1 when one fails; no TensorRT or GPU needed."""
    try:
        from .export.trt_compat import (check_onnx_file, default_versions, format_reports,
                                        reports_to_json)
    except ImportError as exc:
        raise BackendUnavailable(f"the TensorRT check reads ONNX with the onnx package "
                                 f"({exc.name} is missing): pip install onnx") from None
    reports = check_onnx_file(args.model, args.trt_version or default_versions(),
                              precision="fp16" if args.fp16 else None)
    if args.json:
        print(json.dumps(reports_to_json(reports, args.model), indent=2))
    else:
        print(format_reports(reports, args.model))
    return 0 if all(r.ok for r in reports) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from .runtime.modalities import extra_modalities
    from .runtime.run import RunConfig, input_folders, run

    model = args.model or _latest_artifact(Path("runs"))
    flags = {m.name: getattr(args, f"input_{m.name}", None) for m in extra_modalities()}
    config = RunConfig(
        model=model, source=args.source, camera=args.camera, backend=args.backend,
        output=args.output, save_masks=args.save_masks, show=args.show, alpha=args.alpha,
        max_frames=args.max_frames, stats=args.stats, live=args.live, threads=args.threads,
        queue_size=args.queue_size, reconnect_timeout=args.reconnect_timeout,
        progress_every=args.progress_every, head=args.head,
        inputs=input_folders(args.input, flags))
    try:
        stats = run(config, log=print)
    except KeyboardInterrupt:  # before the pipeline started (model load, first connection)
        print("fcn-edge run: interrupted", file=sys.stderr)
        return 130
    return 130 if stats.interrupted else 0


def _latest_artifact(root: Path) -> str:
    """The newest exported model under ``root`` (engines first): `fcn-edge run --camera 0`
    works right after `fcn-edge demo` or `fcn-edge export`."""
    for pattern in ("*.engine", "*.onnx"):
        found = sorted(root.rglob(pattern), key=lambda p: p.stat().st_mtime) \
            if root.is_dir() else []
        if found:
            print(f"model: {found[-1]} (the newest under {root}/; choose with --model)")
            return str(found[-1])
    raise InputError(f"no model given and none exported under {root}/: pass --model "
                     f"MODEL.onnx (make one with `fcn-edge export CHECKPOINT`)")


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise InputError(f"--size must look like HEIGHTxWIDTH (e.g. 512x1024), got {text!r}") from None
    if h < 1 or w < 1:
        raise InputError(f"--size must be positive, got {text!r}")
    return h, w


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(out_dir=args.out, minutes=args.minutes))
    print(f"report: {result.report}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench.plan import BENCH_BACKENDS, IO_KINDS, PRECISIONS, parse_choices, parse_sizes
    from .bench.report import format_table, write_report
    from .bench.runner import BenchConfig, bench

    config = BenchConfig(
        model=args.model, data=args.data, data_layout=args.data_layout, split=args.split,
        images=args.images, backends=parse_choices(args.backends, BENCH_BACKENDS, "--backends"),
        precisions=parse_choices(args.precisions, PRECISIONS, "--precisions"),
        io=parse_choices(args.io, IO_KINDS, "--io"), sizes=parse_sizes(args.sizes),
        runs=args.runs, warmup=args.warmup, max_seconds=args.max_seconds,
        threads=args.threads, reference=args.reference, calib=args.calib, out_dir=args.out)
    log = (lambda line: None) if args.quiet else (lambda line: print(line, file=sys.stderr))
    report = bench(config, log=log)
    print(format_table(report))
    written = write_report(report, args.out)
    print(f"wrote {', '.join(str(p) for p in written.values())}")
    return 1 if any(r.check == "FAIL" for r in report.rows) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fcn-edge",
        description="Fully Convolutional Networks for semantic segmentation, "
                    "from training to the edge.")
    parser.add_argument("--version", action="version", version=f"fcn-edge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("checks", help="report installed engines and smoke-test every backbone")
    p.add_argument("--no-smoke", action="store_true", help="only report the environment")
    p.set_defaults(func=cmd_checks)

    p = sub.add_parser("models", help="list the FCN models with parameters and GFLOPs")
    p.add_argument("--size", default="512x512", help="input HEIGHTxWIDTH for GFLOPs")
    p.add_argument("--num-classes", type=int, default=21)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_models)
    _add_train_parser(sub)
    _add_eval_parser(sub)
    _add_export_parser(sub)
    _add_build_parser(sub)
    _add_run_parser(sub)
    _add_bench_parser(sub)
    p = sub.add_parser("demo", help="the whole pipeline in one command: procedural data → "
                                    "train → evaluate → export → bench → run → report",
                       description="Train FCN-8s ResNet18 on procedural scenes for a few "
                                   "minutes, then evaluate, export (fp32/fp16/int8), "
                                   "benchmark, segment a rendered video and write report.md.")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--minutes", type=float, default=4.0,
                   help="training budget in minutes (the other stages add ~2-3)")
    p.set_defaults(func=cmd_demo)
    return parser


def _add_data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="synthetic",
                   help="'synthetic' (procedural scenes), 'synthetic-rgbd' (with depth), "
                        "'synthetic-twotask' (semantic + geometric labels) or a data set "
                        "folder (VOC, SBD, Cityscapes, NYUDv2, SIFT Flow or images/+masks/, "
                        "detected)")
    p.add_argument("--data-layout", choices=("voc", "sbd", "cityscapes", "nyud", "siftflow", "folder"),
                   help="override the detected layout")
    p.add_argument("--num-images", type=int, default=1000,
                   help="synthetic scenes (train: 1000 training scenes; eval: 100 validation)")
    p.add_argument("--image-size", help="synthetic image HEIGHTxWIDTH (train: 256x256; eval: "
                                        "the checkpoint's training size)")
    p.add_argument("--difficulty", choices=("standard", "hard"),
                   help="synthetic scenes: standard (default; eval: the checkpoint's) or hard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train an FCN and write deployable checkpoints",
                       description="Train an FCN (paper §4). Under torchrun, trains with DDP.")
    _add_data_arguments(p)
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="val")
    p.add_argument("--val-images", type=int, default=100, help="synthetic validation images")
    p.add_argument("--model", default="fcn8s", choices=("fcn32s", "fcn16s", "fcn8s"))
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "vgg16", "alexnet"))
    p.add_argument("--layout", default="edge", choices=("edge", "reference"))
    p.add_argument("--learnable-upsampling", action="store_true")
    p.add_argument("--epochs", type=int, help="default 10; with --resume, the saved run's")
    p.add_argument("--batch-size", type=int, default=1, help="1 = whole-image training")
    p.add_argument("--recipe", default="paper", choices=("paper", "heavy"),
                   help="paper: momentum 0.9, mean loss; heavy: momentum 0.99, summed loss")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"),
                   help="sgd (the paper's) or adamw (faster from scratch on short runs)")
    p.add_argument("--lr", type=float, help="default: per backbone and recipe (adamw: 1e-3)")
    p.add_argument("--momentum", type=float)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--schedule", default="fixed", choices=("fixed", "poly"))
    p.add_argument("--class-weights", help="comma-separated, one per class (of the first "
                                           "head's task)")
    p.add_argument("--tasks", help="multi-task data: comma-separated tasks to train, one "
                                   "head each, e.g. semantic,geometric (default: all; one "
                                   "task trains a plain FCN on its labels)")
    p.add_argument("--task-weights", help="comma-separated loss weight per task, in --tasks "
                                          "order (default: 1 each)")
    p.add_argument("--inputs", help="input modalities in channel order, e.g. rgb,depth or "
                                    "rgb,hha (default rgb; depth/hha need data that has them)")
    p.add_argument("--fusion", default="early", choices=("early", "late"),
                   help="early: one net over the stacked inputs; late: one stream per input, "
                        "scores summed (paper §5)")
    p.add_argument("--loss-sample-p", type=float, default=0.0,
                   help="drop final-layer cells from the loss with this probability (§3.4)")
    p.add_argument("--no-mirror", action="store_true")
    p.add_argument("--translate", type=int, default=32, help="jitter up to N pixels (§4.3)")
    p.add_argument("--scale", help="random scale range MIN,MAX, e.g. 0.5,2.0")
    p.add_argument("--crop", help="random crop HEIGHTxWIDTH (padded batches)")
    p.add_argument("--weights", help="ImageNet classifier state dict to initialise the trunk")
    p.add_argument("--init-from", help="a coarser FCN checkpoint (staged 32s → 16s → 8s)")
    p.add_argument("--resume", help="a last.pt to continue exactly, with its saved settings "
                                    "(only --epochs and --out apply)")
    p.add_argument("--out", help="output folder (default runs/train; with --resume, the "
                                 "checkpoint's folder)")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="mixed precision (default: on for CUDA)")
    p.add_argument("--threads", type=int, help="CPU threads (default: cores / ranks)")
    p.add_argument("--workers", type=int, default=0, help="data loader processes")
    p.add_argument("--max-steps", type=int, help="stop each epoch after N steps (smoke runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)


def _add_eval_parser(sub) -> None:
    p = sub.add_parser("eval", help="score a checkpoint with the paper's four metrics")
    p.add_argument("checkpoint")
    _add_data_arguments(p)
    p.add_argument("--split", default="val")
    p.add_argument("--json", help="also write the metrics to this JSON file")
    p.add_argument("--save-predictions", help="write palette PNG predictions to this folder")
    p.set_defaults(func=cmd_eval, num_images=100)


def _add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to verified, self-describing ONNX",
                       description="Export to ONNX (dynamic batch/height/width), checked against "
                                   "PyTorch at several sizes; optionally FP16 and INT8 graphs.")
    p.add_argument("checkpoint")
    p.add_argument("-o", "--output", help="output folder (default: the checkpoint's)")
    p.add_argument("--fp16", action="store_true",
                   help="also write an FP16 ONNX (fp32 IO); builds a TensorRT engine when "
                        "TensorRT is installed")
    p.add_argument("--int8", action="store_true",
                   help="also write an INT8 (QDQ) ONNX by ONNX Runtime static quantization")
    p.add_argument("--calib", help="calibration data for --int8: 'synthetic' or a data folder "
                                   "(default: the checkpoint's data when synthetic)")
    p.add_argument("--calib-images", type=int, default=32)
    p.add_argument("--int8-target", choices=("cpu", "tensorrt"),
                   help="cpu: ONNX Runtime's fast uint8 activations; tensorrt: symmetric int8 "
                        "activations and float biases (what TensorRT accepts). Default: "
                        "tensorrt with --target tensorrt, else cpu")
    p.add_argument("--eval-data", help="labelled data for the FP16/INT8 ΔmIoU (default: as "
                                       "--calib)")
    p.add_argument("--eval-images", type=int, default=8)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--shapes", help="recommended MIN:OPT:MAX, each HxW or NxHxW "
                                    "(default 32x32:<training size>:2048x2048)")
    p.add_argument("--argmax", action="store_true", help="labels out (ArgMax in the graph)")
    p.add_argument("--labels-dtype", default="auto", choices=("auto", "uint8", "int32"),
                   help="with --argmax: auto is uint8 up to 256 classes (cast through float, "
                        "as TensorRT needs), else int32")
    p.add_argument("--target", default="any", choices=("any", "tensorrt"),
                   help="tensorrt: every artifact, fp32 too, must pass the TensorRT "
                        "compatibility check (FP16 and --int8-target tensorrt artifacts "
                        "always do)")
    p.add_argument("--trt-version", metavar="V[,V]",
                   help="the TensorRT releases TensorRT-bound artifacts are checked for: 8.6, "
                        "10, 11 (default: all three)")
    p.add_argument("--raw-io", action="store_true",
                   help="uint8 BGR NHWC frames in; normalisation inside the graph")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("--parity-sizes", help="comma-separated HxW sizes for the parity check")
    p.add_argument("--triton-repo", help="also write a Triton model repository here")
    p.add_argument("--no-engine", action="store_true",
                   help="with --fp16: do not build a TensorRT engine even if TensorRT is here")
    p.add_argument("--workspace", type=float, default=4.0, help="TensorRT workspace, GB")
    p.set_defaults(func=cmd_export)


def _add_build_parser(sub) -> None:
    p = sub.add_parser("build", help="build a TensorRT engine from an exported ONNX (on the "
                                     "target GPU)")
    p.add_argument("model", help="an ONNX written by fcn-edge export (any ONNX with "
                                 "--check-only)")
    p.add_argument("--check-only", action="store_true",
                   help="only check whether TensorRT can build it (opset, operators, types, "
                        "uint8, dynamic dims, INT8): a verdict per rule, exit 0 or 1; needs "
                        "no TensorRT or GPU")
    p.add_argument("--trt-version", metavar="V[,V]",
                   help="with --check-only: the releases to check, 8.6, 10 and/or 11 "
                        "(default: the installed TensorRT's, else all three)")
    p.add_argument("--json", action="store_true", help="with --check-only: print JSON")
    p.add_argument("--no-check", action="store_true",
                   help="build without the compatibility check (its tables may lag a newer "
                        "TensorRT)")
    p.add_argument("--fp16", action="store_true", help="FP16 engine (give the .fp16.onnx on "
                                                       "TensorRT ≥ 11)")
    p.add_argument("--shapes", help="profile MIN:OPT:MAX, each HxW or NxHxW (default: the "
                                    "ONNX's recommended shapes)")
    p.add_argument("--workspace", type=float, default=4.0, help="workspace limit, GB")
    p.add_argument("-o", "--output", help="engine path (default: next to the ONNX)")
    p.add_argument("--cache-dir", help="engine and timing cache folder (default: engines/ "
                                       "under $FCN_EDGE_CACHE, else $XDG_CACHE_HOME/fcn-edge, "
                                       "else ~/.cache/fcn-edge)")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached engine fits")
    p.set_defaults(func=cmd_build)


def _add_run_parser(sub) -> None:
    from .runtime.modalities import extra_modalities

    p = sub.add_parser("run", help="segment a camera, video, images or a stream",
                       description="Run an exported model over a source; overlays, masks and "
                                   "statistics out. Ctrl-C ends cleanly.")
    p.add_argument("source", nargs="?", help="video file, image, folder, glob (quoted), "
                                             "rtsp:// or http(s):// URL, or a camera index")
    p.add_argument("--camera", type=int, help="camera index, instead of SOURCE")
    p.add_argument("--model", help="an artifact of fcn-edge export (.onnx, .engine) or a "
                                   "checkpoint (default: the newest export under runs/)")
    p.add_argument("--backend", default="auto",
                   help="auto (the fastest available), onnxruntime, tensorrt, torch, or an "
                        "exact name such as onnxruntime:cpu or torch:cuda")
    p.add_argument("--output", help="video (.mp4, .avi), image, or folder of overlays")
    p.add_argument("--save-masks", help="folder for palette PNG label maps")
    p.add_argument("--show", action="store_true", help="show a window (when a display exists)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--stats", help="write the end statistics to this JSON file")
    p.add_argument("--live", action=argparse.BooleanOptionalAction, default=None,
                   help="latest-frame policy (default: on for cameras and URLs)")
    p.add_argument("--threads", type=int, help="CPU inference threads")
    p.add_argument("--queue-size", type=int, default=4)
    p.add_argument("--reconnect-timeout", type=float, default=30.0,
                   help="seconds to keep reopening a dropped live source")
    p.add_argument("--progress-every", type=float, default=5.0,
                   help="seconds between progress lines (0: none)")
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
    p.add_argument("model", help="a checkpoint, or an .onnx/.engine from fcn-edge export/build")
    p.add_argument("--data", default="synthetic",
                   help="labelled data for mIoU: 'synthetic' (the checkpoint's procedural "
                        "scenes, rendered at each size) or a data set folder")
    p.add_argument("--data-layout", choices=("voc", "sbd", "cityscapes", "nyud", "siftflow", "folder"))
    p.add_argument("--split", default="val")
    p.add_argument("--images", type=int, default=16, help="evaluation images per size")
    p.add_argument("--backends", default="all", help="comma-separated, or all: "
                   "tensorrt, onnxruntime:tensorrt, onnxruntime:cuda, onnxruntime:cpu, "
                   "torch:cuda+graphs, torch:cuda, torch:cpu")
    p.add_argument("--precisions", default="all", help="fp32,fp16,int8 or all")
    p.add_argument("--io", default="all", help="plain (float NCHW in, logits out), raw "
                                               "(--raw-io --argmax artifacts) or all")
    p.add_argument("--sizes", default="256x512,512x1024", help="HEIGHTxWIDTH,…")
    p.add_argument("--runs", type=int, default=50, help="timed calls per measurement")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--max-seconds", type=float, default=10.0,
                   help="stop a measurement after this long (at least 5 calls)")
    p.add_argument("--threads", type=int, default=0,
                   help="threads for every CPU backend (default: every core)")
    p.add_argument("--reference", help="the checkpoint an exported MODEL came from (ΔmIoU)")
    p.add_argument("--calib", help="int8 calibration data (default: the checkpoint's)")
    p.add_argument("--out", default="runs/bench",
                   help="folder for artifacts and bench.txt/.csv/.json")
    p.add_argument("--quiet", action="store_true", help="only the table")
    p.set_defaults(func=cmd_bench)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] | None = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        return func(args)
    except BackendUnavailable as exc:
        print(f"fcn-edge {args.command}: {exc}", file=sys.stderr)
        return 2
    except FcnEdgeError as exc:
        print(f"fcn-edge {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fcn-edge {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
