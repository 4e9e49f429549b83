"""``fcn-edge export``: checkpoint → verified, self-describing ONNX artifacts (fp32, fp16, int8).

One function per format, called in order by ``export``. Every artifact is verified against the
PyTorch fp32 reference *before* anything is written (fp32: parity at three sizes, failing the
export when out of tolerance; fp16 / int8: NaN/Inf fail it, label agreement and ΔmIoU are
measured and reported). Every artifact meant for TensorRT (fp16; int8 for ``--int8-target
tensorrt``; all of them with ``--target tensorrt``) must also pass the TensorRT compatibility
check of ``trt_compat`` for each release in ``trt_versions``, and every artifact's metadata,
read back as a runtime reads it, must match the checkpoint field by field (``meta_check``).

Every option is checked when the ``ExportConfig`` is made, and the outputs' folders and the
data sets before any work. Only when every artifact has passed are they written, all into
hidden staging folders first and then renamed into place together (``staging``), so a failed,
interrupted (Ctrl-C, SIGTERM) or disk-full export leaves nothing new behind — no folder, no
partial artifact — and a previous export in the same place stays as it was. The figures go
into each artifact's metadata and into ``<name>.export.json``.
"""
from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import ClassVar, Mapping

import numpy as np
import onnx

from ..config import IMAGE_SIZE
from ..data import SYNTHETIC_READERS, open_dataset
from ..errors import AccuracyGateFailed, BackendUnavailable, InputError
from ..io import Log, atomic_path, check_writable
from ..models import load_model
from ..runtime.bounds import Bound, Many, Rule, check_bounds
from ..runtime.metadata import ArtifactMeta, parse_shapes
from . import parity, triton
from .artifact_meta import artifact_meta
from .onnx_export import (DEFAULT_OPSET, MAX_OPSET, MIN_OPSET, build_graph, save_onnx, simplify,
                          trace_to_onnx)
from .graph import LABELS_DTYPES
from .aux_head import with_aux_head
from .fp16_keep import keep_fp32_option, parse_keep_fp32
from .meta_check import check_written_meta
from .onnx_props import set_metadata
from .runners import ort_latency, ort_run
from .trt_compat import parse_versions, require_tensorrt_compat
from .trt_support import TRT_VERSIONS
from .staging import Staging
from .trt_options import BuildOptions

EXPORT_TARGETS = ("any", "tensorrt")  # who runs the artifacts: "tensorrt" checks every one for it
FP16_MIN_AGREEMENT = 0.99  # below this an FP16 graph is broken, not merely rounded


@dataclass(frozen=True)
class ExportConfig:
    """What ``fcn-edge export`` does; every field has a CLI flag of the same name."""

    checkpoint: str
    out_dir: str | None = None          # default: the checkpoint's folder
    fp16: bool = False
    keep_fp32: tuple[str, ...] = ()     # fp16: op types or node names kept fp32 ("A,B" too)
    int8: bool = False
    calib: str | None = None            # INT8 calibration data (default: the checkpoint's)
    calib_images: int = 32
    int8_target: str | None = None      # "cpu" (ORT: uint8 activations) or "tensorrt";
    #                                     None: "tensorrt" with target="tensorrt", else "cpu"
    eval_data: str | None = None        # labelled data for ΔmIoU (default: as calib)
    eval_images: int = 8                # fp16 runs in onnx.reference here (~1 s per image)
    opset: int = DEFAULT_OPSET
    shapes: str | None = None           # MIN:OPT:MAX, see runtime.metadata.parse_shapes
    argmax: bool = False
    labels_dtype: str = "auto"          # argmax labels: uint8 up to 256 classes, else int32
    raw_io: bool = False
    aux: bool = False                   # with the aux head: two heads, out and aux
    simplify: bool = True
    parity_sizes: tuple[tuple[int, int], ...] | None = None
    triton_repo: str | None = None
    triton_platform: str = "onnxruntime_onnx"   # or "python": fcn-edge's Python-backend model
    triton_max_batch: int | None = None  # None: 0 (onnxruntime_onnx), 8 (python)
    triton_instances: int | None = None  # python: model instances (None: 1)
    triton_threads: int | None = None    # python: each instance's engine threads (None: default)
    build_engine: bool = True           # with --fp16, build a TensorRT engine when TRT is here
    workspace_gb: float = 4.0
    target: str = "any"                 # "tensorrt": every artifact must build with TensorRT
    trt_versions: tuple[str, ...] = TRT_VERSIONS   # the releases TensorRT-bound artifacts pass

    #: Each numeric field's range; the flags of the same name read their text with these.
    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "calib_images": Bound(1, 100_000), "eval_images": Bound(1, 100_000),
        "opset": Bound(MIN_OPSET, MAX_OPSET), "parity_sizes": Many(IMAGE_SIZE),
        "workspace_gb": BuildOptions.BOUNDS["workspace_gb"], **triton.EXPORT_BOUNDS}

    def __post_init__(self) -> None:
        check_bounds(self, self.BOUNDS)
        _check_choice("--target", self.target, EXPORT_TARGETS)
        _check_choice("--labels-dtype", self.labels_dtype, LABELS_DTYPES)
        triton.check_export_options(self.triton_platform, self.triton_max_batch,
                                    self.triton_instances, self.triton_threads)
        if self.int8_target is not None:
            from .int8 import INT8_TARGETS  # lazily: it imports onnxruntime's quantization

            _check_choice("--int8-target", self.int8_target, INT8_TARGETS)
        if self.shapes is not None:
            parse_shapes(self.shapes)  # a bad --shapes is refused now, not after the export
        object.__setattr__(self, "trt_versions", parse_versions(self.trt_versions))
        object.__setattr__(self, "keep_fp32", keep_fp32_option(self.keep_fp32, self.fp16))
        if self.int8_target is None:  # follow the target: int8 for TensorRT is symmetric Q/DQ
            object.__setattr__(self, "int8_target",
                               "tensorrt" if self.target == "tensorrt" else "cpu")
        if self.target == "tensorrt" and self.int8_target != "tensorrt":
            raise InputError("--int8-target cpu writes ONNX Runtime's CPU quantization (uint8, "
                             "asymmetric), which TensorRT cannot build, but --target tensorrt "
                             "was asked: drop --int8-target or pass --int8-target tensorrt")

    def tensorrt_bound(self, precision: str) -> bool:
        """Whether the ``precision`` artifact is meant for TensorRT (and checked for it)."""
        return self.target == "tensorrt" or precision == "fp16" or \
            (precision == "int8" and self.int8_target == "tensorrt")


@dataclass
class ExportResult:
    artifacts: dict[str, Path] = field(default_factory=dict)
    meta: ArtifactMeta | None = None
    report: dict = field(default_factory=dict)


def export(config: ExportConfig, log: Log = print) -> ExportResult:
    """Run the whole export; see the module docstring."""
    started = time.perf_counter()
    checkpoint = Path(config.checkpoint)
    out_dir = check_writable(config.out_dir or checkpoint.parent, "--output", folder=True)
    if config.triton_repo:
        check_writable(config.triton_repo, "--triton-repo", folder=True)
    model = load_model(checkpoint).eval()
    if config.aux:
        model = with_aux_head(model)
    options = {k: v for k, v in asdict(config).items() if k not in ("checkpoint", "out_dir")}
    meta = artifact_meta(model, checkpoint, raw_io=config.raw_io, argmax=config.argmax,
                         shapes=parse_shapes(config.shapes) if config.shapes else None,
                         options=options, labels_dtype=config.labels_dtype)
    samples = _eval_samples(config, meta, log)  # the data sets opened before any work
    calib = _calibration_inputs(config, meta) if config.int8 else []
    result = ExportResult(meta=meta)
    fp32_model, meta = export_fp32(model, meta, config, log)
    models = {"fp32": fp32_model}
    result.report["fp32"] = {"parity": meta.parity,
                             "tensorrt": check_tensorrt(fp32_model, "fp32", config, log)}
    if config.fp16:
        models["fp16"], result.report["fp16"] = export_fp16(model, fp32_model, meta, config,
                                                            samples, log)
    if config.int8:
        models["int8"], result.report["int8"] = export_int8(model, fp32_model, meta, config,
                                                            calib, samples, log)
    for precision, onnx_model in models.items():  # the metadata as written, once more
        check_written_meta(onnx_model, model, precision)
    result.meta = meta
    _write(config, models, result, out_dir, started, log)
    return result


def _write(config: ExportConfig, models: dict[str, onnx.ModelProto], result: ExportResult,
           out_dir: Path, started: float, log: Log) -> None:
    """Write every artifact, the engine, the Triton model and the report: all, or nothing."""
    def named(precision: str, suffix: str = ".onnx") -> Path:
        return artifact_path(out_dir, Path(config.checkpoint), precision, config.raw_io,
                             config.argmax, suffix)

    finals = {precision: named(precision) for precision in models}
    with Staging() as staging:
        for precision, onnx_model in models.items():
            path = save_onnx(onnx_model, staging.path(finals[precision]))
            result.report[precision]["bytes"] = _size(path)
        extra = _engine_and_triton(config, staging, finals, result.meta, log)
        result.report["seconds"] = round(time.perf_counter() - started, 2)
        report = {k: _jsonable(v) for k, v in result.report.items()}
        with atomic_path(staging.path(named("fp32", ".export.json"))) as tmp:
            tmp.write_text(json.dumps(report, indent=2))
        staging.commit()
    for precision, path in finals.items():
        log(f"wrote {path} ({result.report[precision]['bytes'] / 1e6:.1f} MB)")
    for path in extra.values():
        log(f"wrote {path}")
    result.artifacts.update({**finals, **extra, "report": named("fp32", ".export.json")})


def artifact_path(out_dir: Path, checkpoint: Path, precision: str = "fp32",
                  raw_io: bool = False, argmax: bool = False, suffix: str = ".onnx") -> Path:
    """Where ``export`` writes an artifact: ``<stem>[_rawio][_argmax][.fp16|.int8].onnx``."""
    stem = checkpoint.stem + ("_rawio" if raw_io else "") + ("_argmax" if argmax else "")
    return out_dir / (stem + ("" if precision == "fp32" else f".{precision}") + suffix)


def export_fp32(model, meta: ArtifactMeta, config: ExportConfig,
                log: Log) -> tuple[onnx.ModelProto, ArtifactMeta]:
    """Trace, check, simplify, verify parity at ≥ 3 sizes; the caller writes it."""
    graph = build_graph(model, meta, raw_io=config.raw_io, argmax=config.argmax,
                        labels_dtype=config.labels_dtype)
    onnx_model = trace_to_onnx(graph, opset=config.opset)
    set_metadata(onnx_model, meta.to_props())
    if config.simplify:
        onnx_model = simplify(onnx_model)
    # Parity feeds the artifact as a runtime will: from the metadata it reads back, held to
    # the checkpoint first (a wrong field is named here, not found as a parity figure).
    meta = check_written_meta(onnx_model, model, "fp32")
    sizes = config.parity_sizes or parity.parity_sizes(_opt_size(meta))
    results = parity.check_parity(model, ort_run(onnx_model), meta, sizes)
    meta = meta.with_(parity={"reference": "pytorch fp32", "sizes": parity.as_dicts(results)})
    set_metadata(onnx_model, meta.to_props())
    for r in results:
        rel = "" if r.rel_max_abs is None else f"rel max|Δ| {r.rel_max_abs:.1e}, "
        log(f"fp32 parity {r.height}×{r.width}: {rel}labels agree {r.agreement:.4%}")
    return onnx_model, meta


def export_fp16(model, fp32_model: onnx.ModelProto, meta: ArtifactMeta, config: ExportConfig,
                samples: list, log: Log) -> tuple[onnx.ModelProto, dict]:
    """FP16 weights and arithmetic, fp32 IO; executed for real, overflow fails the export, and
    so does any TensorRT rule it breaks (FP16 artifacts are what TensorRT builds)."""
    from .execute import check_finite, run_fp16
    from .fp16 import DEFAULT_KEEP_FP32, convert_with_report

    ops = nodes = frozenset()
    if config.keep_fp32:  # read against the fp32 graph: node names are its, after onnxslim
        ops, nodes = parse_keep_fp32(config.keep_fp32, fp32_model)
    fp16_model, conversion = convert_with_report(fp32_model, keep_fp32_ops=DEFAULT_KEEP_FP32 | ops,
                                                 keep_fp32_nodes=nodes)
    meta16 = meta.with_(precision="fp16")
    set_metadata(fp16_model, meta16.to_props())
    executor: list[str] = []

    def infer(feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs, name = run_fp16(fp16_model, feed)
        check_finite(outputs)  # overflow or NaN fails the export
        executor.append(name)
        return outputs

    sizes = config.parity_sizes or parity.parity_sizes(_opt_size(meta))
    results = parity.check_parity(model, infer, meta16, sizes, rel_tol=None,
                                  min_agreement=FP16_MIN_AGREEMENT, label="fp16")
    figures = {"executor": executor[0] if executor else None,
               "sizes": parity.as_dicts(results), "conversion": asdict(conversion),
               "keep_fp32": {"ops": sorted(ops), "nodes": sorted(nodes)}}
    if samples:
        figures["dataset"] = parity.compare_on_dataset(model, infer, meta16, samples)
    set_metadata(fp16_model, meta16.with_(parity=figures).to_props())
    log(f"fp16 ({figures['executor']}): labels agree "
        f"{min(r.agreement for r in results):.4%} (worst size)"
        + _delta_text(figures.get("dataset"))
        + (f"; {len(conversion.requested_fp32_nodes)} nodes kept fp32 as asked (--keep-fp32)"
           if config.keep_fp32 else ""))
    figures["tensorrt"] = check_tensorrt(fp16_model, "fp16", config, log)
    return fp16_model, figures


def export_int8(model, fp32_model: onnx.ModelProto, meta: ArtifactMeta, config: ExportConfig,
                calib: list[dict[str, np.ndarray]], samples: list,
                log: Log) -> tuple[onnx.ModelProto, dict]:
    """ONNX Runtime static quantization (QDQ), calibrated on ``calib`` (the artifact's inputs
    for dataset images, ``_calibration_inputs``); checked against TensorRT's rules for
    ``--int8-target tensorrt``."""
    from .int8 import CalibrationReader, bound_memory, quantize_int8

    reader = bound_memory(CalibrationReader(calib), fp32_model, log)  # ORT keeps it all
    with tempfile.TemporaryDirectory(prefix="fcn-edge-int8-") as work:  # ORT reads files
        source, quantized_path = Path(work) / "fp32.onnx", Path(work) / "int8.onnx"
        save_onnx(fp32_model, source)
        quantize_int8(source, quantized_path, reader, target=config.int8_target)
        quantized = onnx.load(str(quantized_path))
    meta8 = meta.with_(precision="int8")
    infer = ort_run(quantized)
    figures: dict = {"calibration_images": len(reader), "target": config.int8_target}
    if samples:
        figures["dataset"] = parity.compare_on_dataset(model, infer, meta8, samples)
    h, w = _opt_size(meta)
    probe = parity.artifact_feed(meta, parity.scene_arrays(meta, [(h, w)])[0])
    figures["latency_ms"] = {"size": [h, w], "fp32": ort_latency(fp32_model, probe),
                             "int8": ort_latency(quantized, probe)}
    set_metadata(quantized, meta8.with_(parity=figures).to_props())
    lat = figures["latency_ms"]
    log(f"int8: ORT CPU {lat['int8']:.1f} ms vs fp32 {lat['fp32']:.1f} ms at {h}×{w}"
        + _delta_text(figures.get("dataset")))
    figures["tensorrt"] = check_tensorrt(quantized, "int8", config, log)
    return quantized, figures


def check_tensorrt(onnx_model: onnx.ModelProto, precision: str, config: ExportConfig,
                   log: Log) -> dict | None:
    """For a TensorRT-bound artifact: every rule of every release in ``config.trt_versions``
    (a ModelFormatError naming node, rule and fix when one fails; nothing is written then).
    Returns the verdicts for the report; None for artifacts not meant for TensorRT."""
    if not config.tensorrt_bound(precision):
        return None
    reports = require_tensorrt_compat(
        onnx_model, config.trt_versions, f"the {precision} artifact", precision=precision,
        hint="nothing was written; check only the releases you deploy to with "
             "--trt-version, or leave the artifact out (--fp16, --int8-target, --target)")
    warnings = [f"TensorRT {r.tensorrt}: {f.text()}" for r in reports for f in r.findings]
    for line in warnings:
        log(f"{precision} warning: {line}")
    log(f"{precision}: passes the TensorRT {', '.join(r.tensorrt for r in reports)} "
        f"compatibility check")
    return {r.tensorrt: {"builds": r.ok, "warnings": [f.text() for f in r.findings]}
            for r in reports}


def _engine_and_triton(config: ExportConfig, staging: Staging, finals: dict[str, Path],
                       meta: ArtifactMeta, log: Log) -> dict[str, Path]:
    """Stage a TensorRT engine where TensorRT is installed (with --fp16) and the Triton model
    if asked; returns where they will be once committed (``finals``: the artifacts')."""
    extra: dict[str, Path] = {}
    if config.fp16 and config.build_engine:
        from .tensorrt import build_engine
        from .trt_options import default_output_path

        engine = default_output_path(finals["fp16"], "fp16")
        try:
            build_engine(staging.staged(finals["fp16"]),
                         BuildOptions(precision="fp16", workspace_gb=config.workspace_gb,
                                      output=staging.path(engine)))
            extra["engine"] = engine
        except BackendUnavailable:
            log(f"TensorRT is not installed here: build the engine on the target with "
                f"`fcn-edge build {finals['fp16']} --fp16` (engines are specific "
                f"to the GPU and TensorRT version they are built with)")
        except AccuracyGateFailed as exc:  # the ONNX artifacts passed their own checks: keep them
            log(f"no engine: {exc}")
    if config.triton_repo:
        primary = finals.get("fp16", finals["fp32"])
        extra["triton"] = triton.stage_model(
            staging, config.triton_repo, finals["fp32"].stem.replace(".", "_"),
            staging.staged(primary), meta, config.triton_platform, config.triton_max_batch,
            config.triton_instances, config.triton_threads)
    return extra


def _eval_samples(config: ExportConfig, meta: ArtifactMeta, log: Log) -> list:
    """Labelled images for ΔmIoU: ``eval_data``, else the checkpoint's synthetic validation set."""
    if not (config.fp16 or config.int8):
        return []
    dataset = _open_data(config.eval_data or config.calib, meta, "val", config.eval_images,
                         classes=config.eval_data is not None)
    if dataset is None:
        log("no labelled data for ΔmIoU (pass --eval-data); agreement figures only")
        return []
    return [dataset[i] for i in range(min(len(dataset), config.eval_images))]


def _calibration_inputs(config: ExportConfig, meta: ArtifactMeta) -> list[dict[str, np.ndarray]]:
    dataset = _open_data(config.calib, meta, "train", config.calib_images, classes=None)
    if dataset is None:
        raise InputError("--int8 needs calibration images: pass --calib DATA (a data set "
                         "folder or 'synthetic')")
    count = min(len(dataset), config.calib_images)
    return [parity.artifact_feed(meta, parity.sample_arrays(dataset[i], meta.modalities))
            for i in range(count)]


def _open_data(spec: str | None, meta: ArtifactMeta, split: str, count: int,
               classes: bool | None = True):
    """Open ``spec`` or, when it is None, the checkpoint's own data if it is synthetic.

    ``classes``: True, its class count must be the model's (labels are scored); False, a set
    with other classes is no evaluation set (None is returned: calibration data given for
    int8, e.g. the procedural scenes for a published model, is not its evaluation data);
    None, images only (calibration), any classes."""
    own = meta.dataset.spec
    if spec is None:
        if own not in SYNTHETIC_READERS:
            return None
        spec = own
    difficulty = meta.dataset.difficulty or "standard"
    options = {"num_images": count, "size": _opt_size(meta), "difficulty": difficulty} \
        if spec in SYNTHETIC_READERS else {}
    dataset = open_dataset(spec, split, **options)
    if dataset.num_classes != meta.num_classes and classes is False:
        return None
    if dataset.num_classes != meta.num_classes and classes:
        raise InputError(f"{spec} has {dataset.num_classes} classes but the model predicts "
                         f"{meta.num_classes}: pass data the model was trained for")
    return dataset


def _check_choice(flag: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InputError(f"{flag} {value!r}: choose one of {', '.join(choices)}")


def _opt_size(meta: ArtifactMeta) -> tuple[int, int]:
    return meta.shapes.opt[1], meta.shapes.opt[2]


def _size(path: Path) -> int:
    return os.path.getsize(path)


def _delta_text(figures: dict | None) -> str:
    if not figures:
        return ""
    if "tasks" in figures:  # several heads: each task's mean IU
        return "".join(f"; {task}" + _delta_text(each)[1:]
                       for task, each in figures["tasks"].items())
    return (f"; mean IU {figures['mean_iou']:.4f} vs PyTorch fp32 "
            f"{figures['reference_mean_iou']:.4f} (Δ {figures['delta_miou_points']:+.2f} points)")


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))
