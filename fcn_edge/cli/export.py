"""``fcn-edge export`` (checkpoint → verified ONNX) and ``fcn-edge build`` (ONNX → TensorRT
engine, or ``--check-only``: will it build?) and ``fcn-edge import`` (a foreign segmentation ONNX
made self-describing)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..errors import BackendUnavailable, InputError
from ..io import check_writable
from ..runtime.bounds import Bound
from .args import (EXPORT_TARGETS, INT8_TARGETS, LABELS_DTYPES, LazyChoices, add_bounded,
                   config_from_args)
from .model_arg import (CHECKPOINT, ONNX, add_model_argument, export_folder, resolve_model,
                        zoo_name)

# The configs whose ranges the flags read, imported (with torch) only when a flag is given.
_EXPORT = "fcn_edge.export.exporter:ExportConfig"
_BUILD = "fcn_edge.export.trt_options:BuildOptions"
#: --mean and --std of import: finite numbers here, held to a pixel's range by the import
#: (which knows the scale they go with).
_PIXEL = Bound(-65535.0, 65535.0, integer=False)
TRITON_PLATFORMS = LazyChoices("fcn_edge.export.triton:EXPORT_PLATFORMS")


def cmd_export(args: argparse.Namespace) -> int:
    name = zoo_name(args)
    if args.out_dir is None and name is not None:  # a zoo model's artifacts: not the cache
        args.out_dir = str(export_folder(name))
    if args.out_dir is not None:  # refused before a download, not after it
        check_writable(args.out_dir, "--output", folder=True)
    resolve_model(args)
    from ..export.exporter import ExportConfig, export

    # export() refuses unwritable --output/--triton-repo folders itself, before any work.
    result = export(config_from_args(ExportConfig, args), log=print)
    print(f"export done in {result.report['seconds']:.1f} s: "
          + ", ".join(f"{k} {v}" for k, v in result.artifacts.items()))
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    if args.trt_version and not args.check_only:
        raise InputError("--trt-version goes with --check-only: a build is checked against the "
                         "TensorRT it runs with")
    resolve_model(args)
    if args.check_only:
        return _check_only(args)
    from ..export.tensorrt import BuildOptions, build_engine
    from ..runtime.metadata import parse_shapes

    options = config_from_args(
        BuildOptions, args, precision="fp16" if args.fp16 else None,
        shapes=parse_shapes(args.shapes) if args.shapes else None,
        output=check_writable(args.output, "--output") if args.output else None,
        **({"cache_dir": Path(args.cache_dir)} if args.cache_dir else {}))
    print(f"wrote {build_engine(Path(args.model), options)}")
    return 0


def _check_only(args: argparse.Namespace) -> int:
    """``fcn-edge build MODEL.onnx --check-only``: will it build? Exit 0 when every release
    asked passes every rule, 1 when one fails; no TensorRT or GPU needed."""
    try:
        from ..export.trt_compat import (check_onnx_file, default_versions, format_reports,
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


def cmd_import(args: argparse.Namespace) -> int:
    from ..export.import_onnx import ImportOptions, import_onnx

    palette = _colours_file(args.colors) if args.colors else None
    options = config_from_args(ImportOptions, args, palette=palette, **{
        k: tuple(getattr(args, k)) for k in ("mean", "std") if getattr(args, k) is not None})
    print(f"wrote {import_onnx(args.model, options, args.output)}")
    return 0


def _colours_file(path: str) -> tuple[tuple[int, int, int], ...]:
    """One ``R G B`` (or jetson-inference's ``R G B A``) per line, blank lines skipped: the
    colours of the classes in order; import_onnx checks there is one per class."""
    import numpy as np

    from ..models.archive import read_colors

    file = Path(path)
    if not file.is_file():
        raise InputError(f"--colors {path}: no such file (one 'R G B' line per class)")
    lines = [line for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = read_colors(file, len(lines), np.zeros((len(lines), 3), np.uint8))
    return tuple(tuple(int(v) for v in row) for row in rows)


def add_parsers(sub) -> None:
    _add_export_parser(sub)
    _add_build_parser(sub)
    _add_import_parser(sub)


def _add_export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a checkpoint to verified, self-describing ONNX",
                       description="Export to ONNX (dynamic batch/height/width), checked against "
                                   "PyTorch at several sizes; optionally FP16 and INT8 graphs.")
    add_model_argument(p, "checkpoint", needs=CHECKPOINT,
                       help="a checkpoint, or a zoo name (fcn-edge zoo lists them)")
    p.add_argument("-o", "--output", dest="out_dir", metavar="OUTPUT",
                   help="output folder (default: the checkpoint's; for a zoo name "
                        "runs/export/NAME)")
    p.add_argument("--fp16", action="store_true",
                   help="also write an FP16 ONNX (fp32 IO); builds a TensorRT engine when "
                        "TensorRT is installed")
    p.add_argument("--keep-fp32", dest="keep_fp32", metavar="OPS",
                   help="with --fp16: keep these op types or node names in fp32 "
                        "(comma-separated), e.g. --keep-fp32 ConvTranspose,Add, when the fp16 "
                        "artifact or its TensorRT engine overflows")
    p.add_argument("--int8", action="store_true",
                   help="also write an INT8 (QDQ) ONNX by ONNX Runtime static quantization")
    p.add_argument("--calib", help="calibration data for --int8: 'synthetic' or a data folder "
                                   "(default: the checkpoint's data when synthetic)")
    add_bounded(p, "--calib-images", _EXPORT)
    p.add_argument("--int8-target", choices=INT8_TARGETS, metavar="TARGET",
                   help="cpu: ONNX Runtime's fast uint8 activations; tensorrt: symmetric int8 "
                        "activations and float biases (what TensorRT accepts). Default: "
                        "tensorrt with --target tensorrt, else cpu")
    p.add_argument("--eval-data", help="labelled data for the FP16/INT8 ΔmIoU (default: as "
                                       "--calib)")
    add_bounded(p, "--eval-images", _EXPORT)
    add_bounded(p, "--opset", _EXPORT)
    p.add_argument("--shapes", help="recommended MIN:OPT:MAX, each HxW or NxHxW "
                                    "(default 32x32:<training size>:2048x2048)")
    p.add_argument("--argmax", action="store_true", help="labels out (ArgMax in the graph)")
    p.add_argument("--aux", action="store_true",
                   help="torchvision's and jetson-inference's FCNs: keep the auxiliary head, "
                        "as a second head: outputs out and aux")
    p.add_argument("--labels-dtype", choices=LABELS_DTYPES, metavar="DTYPE",
                   help="with --argmax: auto is uint8 up to 256 classes (cast through float, "
                        "as TensorRT needs), else int32")
    p.add_argument("--target", choices=EXPORT_TARGETS, metavar="TARGET",
                   help="%(choices)s (default any). tensorrt: every artifact, fp32 too, must pass the TensorRT "
                        "compatibility check (FP16 and --int8-target tensorrt artifacts "
                        "always do)")
    p.add_argument("--trt-version", dest="trt_versions", metavar="V[,V]",
                   help="the TensorRT releases TensorRT-bound artifacts are checked for: 8.6, "
                        "10, 11 (default: all three)")
    p.add_argument("--raw-io", action="store_true",
                   help="uint8 BGR NHWC frames in; normalisation inside the graph")
    p.add_argument("--no-simplify", dest="simplify", action="store_false",
                   help="skip onnxslim")
    add_bounded(p, "--parity-sizes", _EXPORT,
                help="comma-separated HxW sizes for the parity check")
    p.add_argument("--triton-repo", help="also write a Triton model repository here")
    p.add_argument("--triton-platform", choices=TRITON_PLATFORMS, metavar="PLATFORM",
                   help="the Triton model --triton-repo holds: onnxruntime_onnx (default; "
                        "Triton's ONNX Runtime backend) or python (fcn-edge's runtime in "
                        "Triton's Python backend, as fcn-edge serve runs it)")
    add_bounded(p, "--triton-max-batch", _EXPORT, metavar="N",
                help="the Triton model's max_batch_size (default 0 for onnxruntime_onnx; 8 "
                     "for python, whose dynamic batcher joins requests; 1: no batching)")
    add_bounded(p, "--triton-instances", _EXPORT, metavar="K",
                help="with --triton-platform python: model instances, each its own process "
                     "(default 1)")
    add_bounded(p, "--triton-threads", _EXPORT, metavar="T",
                help="with --triton-platform python: each instance's inference threads "
                     "(default 0: the engine's; keep instances x threads <= the cores)")
    p.add_argument("--no-engine", dest="build_engine", action="store_false",
                   help="with --fp16: do not build a TensorRT engine even if TensorRT is here")
    add_bounded(p, "--workspace", _EXPORT, dest="workspace_gb", metavar="WORKSPACE",
                help="TensorRT workspace, GB")
    p.set_defaults(func=cmd_export)


def _add_build_parser(sub) -> None:
    p = sub.add_parser("build", help="build a TensorRT engine from an exported ONNX (on the "
                                     "target GPU)")
    add_model_argument(p, "model", needs=ONNX,
                       help="an ONNX written by fcn-edge export or import (any ONNX with "
                            "--check-only), or a zoo name whose file is an ONNX")
    p.add_argument("--check-only", action="store_true",
                   help="only check whether TensorRT can build it (opset, operators, types, "
                        "uint8, dynamic dims, INT8): a verdict per rule, exit 0 or 1; needs "
                        "no TensorRT or GPU")
    p.add_argument("--trt-version", metavar="V[,V]",
                   help="with --check-only: the releases to check, 8.6, 10 and/or 11 "
                        "(default: the installed TensorRT's, else all three)")
    p.add_argument("--json", action="store_true", help="with --check-only: print JSON")
    p.add_argument("--no-check", dest="check", action="store_false",
                   help="build without the compatibility check (its tables may lag a newer "
                        "TensorRT)")
    p.add_argument("--fp16", action="store_true", help="FP16 engine (give the .fp16.onnx on "
                                                       "TensorRT ≥ 11; default: the ONNX's own "
                                                       "precision, int8 for an .int8.onnx)")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="skip the accuracy gate (by default the new engine is run against ONNX "
                        "Runtime on the same ONNX at the profile's min/opt/max shapes, and "
                        "neither cached nor written unless its labels agree)")
    p.add_argument("--verify-data", metavar="DIR",
                   help="the accuracy gate's frames: your images in DIR, resized to each "
                        "profile shape (default: procedural scenes)")
    add_bounded(p, "--dla-core", _BUILD, metavar="N",
                help="build for Jetson DLA core N (fp16 or int8; layers DLA cannot run fall "
                     "back to the GPU, listed per layer); refused on GPUs without DLA")
    p.add_argument("--shapes", help="profile MIN:OPT:MAX, each HxW or NxHxW (default: the "
                                    "ONNX's recommended shapes)")
    add_bounded(p, "--workspace", _BUILD, dest="workspace_gb", metavar="WORKSPACE",
                help="workspace limit, GB")
    p.add_argument("-o", "--output", help="engine path (default: next to the ONNX)")
    p.add_argument("--cache-dir", help="engine and timing cache folder (default: engines/ "
                                       "under $FCN_EDGE_CACHE, else $XDG_CACHE_HOME/fcn-edge, "
                                       "else ~/.cache/fcn-edge)")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached engine fits")
    p.set_defaults(func=cmd_build)


def _add_import_parser(sub) -> None:
    p = sub.add_parser("import", help="make a foreign segmentation ONNX self-describing, so "
                                      "fcn-edge runs it like its own",
                       description="Write fcn-edge's metadata into a segmentation ONNX from "
                                   "elsewhere (NCHW or NHWC float input, fixed or dynamic size, "
                                   "logits at full resolution or on a coarse grid), rename its "
                                   "tensors, upsample a coarse grid in the graph, and check the "
                                   "result against the original in ONNX Runtime.")
    p.add_argument("model", help="the ONNX to import")
    p.add_argument("--classes", required=True,
                   help="voc (21 classes), cityscapes (the 19 train ids) or a file with one "
                        "class name per line, in score-channel order")
    add_bounded(p, "--mean", _PIXEL, nargs=3, metavar=("R", "G", "B"),
                   help="per-channel mean the model subtracts, on pixel / --scale, in the "
                        "model's --color order (default ImageNet's 0.485 0.456 0.406, as "
                        "torchvision uses)")
    add_bounded(p, "--std", _PIXEL, nargs=3, metavar=("R", "G", "B"),
                   help="per-channel std it divides by, on pixel / --scale (default ImageNet's "
                        "0.229 0.224 0.225)")
    p.add_argument("--color", choices=("rgb", "bgr"),
                   help="the channel order the model was trained on (default rgb)")
    p.add_argument("--colors", metavar="FILE",
                   help="the classes' colours, one 'R G B' line each in class order (as "
                        "jetson-inference's colors.txt; default: VOC's colour map)")
    add_bounded(p, "--scale", Bound(0.0, 65535.0, integer=False, low_open=True),
                   help="pixels are divided by this before --mean/--std (default 255; 1 for "
                        "Caffe-style means in pixel units)")
    p.add_argument("--score-output", help="the output that is the score map, for a model with "
                                          "several outputs")
    p.add_argument("--argmax", action="store_true",
                   help="append ArgMax: labels out (uint8 up to 256 classes) instead of scores")
    p.add_argument("--raw-io", action="store_true",
                   help="uint8 BGR NHWC frames in, normalised inside the graph (as export "
                        "--raw-io)")
    p.add_argument("-o", "--output", help="the ONNX to write (default: NAME.fcn-edge.onnx "
                                          "beside the model); an existing file, the model "
                                          "too, is replaced only once the result checks out")
    p.set_defaults(func=cmd_import)
