"""``bench``: run every planned row — latency, throughput, accuracy — and collect the table.

For each input size, first the reference: the checkpoint in PyTorch fp32 on the CPU labels the
evaluation frames (its mean IU is the baseline of every ΔmIoU). Then each row:

1. open the artifact with a :class:`~fcn_edge.runtime.Segmenter` on the row's backend, with the
   same ``threads`` for every CPU backend;
2. model-only latency: the backend's ``infer`` on a prepared batch of one (warm-up first;
   ``infer`` returns host memory, so GPU work is finished when it returns);
3. end-to-end latency: a Segmenter call on a BGR uint8 frame — pre-processing, inference,
   labels at the frame's size — as an application sees it; FPS is 1000 / its median;
4. accuracy on the evaluation frames, held to the regression bounds (``accuracy.THRESHOLDS``).

A row that cannot run says why (unsupported, unavailable, failed) and the bench goes on.
"""
from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass, field, replace
from typing import ClassVar, Mapping
from datetime import date
from pathlib import Path

import numpy as np

from .. import __version__
from ..errors import BackendUnavailable, FcnEdgeError, InputError
from ..config import IMAGE_SIZE
from ..data import SYNTHETIC_READERS
from ..io import Log
from ..runtime import Segmenter
from ..runtime.backends import artifact_kind, available_backends
from ..runtime.bounds import Bound, Many, Rule, Threads, check_bounds
from ..runtime.engine_file import engine_meta, read_engine_header
from ..runtime.metadata import ArtifactMeta
from ..runtime.onnx_file import read_onnx_metadata
from ..runtime.processing import frames_to_input
from . import accuracy as acc
from .artifacts import ArtifactStore
from .plan import (BENCH_BACKENDS, DEFAULT_SIZES, IO_KINDS, PRECISIONS, ArtifactKey, Combo,
                   combos_for_artifact, plan_combos)
from .timing import Timing, measure, sgemm_gflops

CPU_BACKENDS = ("onnxruntime:cpu", "torch:cpu")


@dataclass(frozen=True)
class BenchConfig:
    """What ``fcn-edge bench`` does; every field has a CLI flag of the same name."""

    model: str                                    # checkpoint, ONNX or fcn-edge engine
    data: str | None = None                       # labelled data for mean IU (see bench)
    data_layout: str | None = None
    split: str = "val"
    images: int = 16
    backends: tuple[str, ...] = BENCH_BACKENDS
    precisions: tuple[str, ...] = PRECISIONS
    io: tuple[str, ...] = IO_KINDS
    sizes: tuple[tuple[int, int], ...] = DEFAULT_SIZES
    runs: int = 50
    warmup: int = 5
    max_seconds: float = 10.0                     # per latency measurement
    threads: int = 0                              # CPU threads; 0: every core
    reference: str | None = None                  # checkpoint, when ``model`` is an export
    calib: str | None = None
    out_dir: str = "runs/bench"
    artifacts_dir: str | None = None              # exports; default <out_dir>/artifacts

    #: Each numeric field's range; the flags of the same name read their text with these.
    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "images": Bound(1, 100_000), "sizes": Many(IMAGE_SIZE), "runs": Bound(1, 1_000_000),
        "warmup": Bound(0, 100_000),
        "max_seconds": Bound(0.0, 86_400.0, integer=False, low_open=True),
        "threads": Threads(zero="every core")}

    def __post_init__(self) -> None:
        check_bounds(self, self.BOUNDS)
        object.__setattr__(self, "sizes", tuple(dict.fromkeys(self.sizes)))  # each size once


@dataclass
class BenchRow:
    """One line of the table; figures None where a row did not run or has no reference."""

    backend: str
    precision: str
    io: str
    size: str
    status: str = "ok"                 # ok | unsupported | unavailable | failed
    reason: str = ""
    artifact: str = ""                 # file name (``path``: where it is)
    path: str = ""
    artifact_mb: float | None = None
    model_p50_ms: float | None = None
    model_p99_ms: float | None = None
    e2e_p50_ms: float | None = None
    e2e_p99_ms: float | None = None
    fps: float | None = None
    gflops_per_s: float | None = None
    vs_torch: float | None = None      # model-only speed-up over PyTorch eager CPU fp32
    mean_iou: float | None = None
    delta_miou: float | None = None    # points
    agreement: float | None = None
    check: str = ""                    # pass | FAIL (regression bounds) | "" (not held)


@dataclass
class BenchReport:
    rows: list[BenchRow]
    machine: dict = field(default_factory=dict)
    eval_data: list[str] = field(default_factory=list)
    reference: str = ""
    model_gflops: dict = field(default_factory=dict)  # size -> GFLOPs per inference
    not_run: list[tuple[str, str]] = field(default_factory=list)  # (combination, why)


def bench(config: BenchConfig, log: Log = print) -> BenchReport:
    """Run the bench described by ``config``; see the module docstring."""
    model = Path(config.model)
    kind = artifact_kind(model)
    threads = config.threads or os.cpu_count() or 1
    reference = Path(config.reference) if config.reference else (
        model if kind == "checkpoint" else None)
    store, combos, meta = _plan(config, model, kind, log)
    if meta.inputs or meta.heads:
        raise InputError(f"{model} takes {' + '.join(meta.modalities)} and has "
                         f"{len(meta.heads) or 1} head(s); fcn-edge bench measures RGB, "
                         f"one-head models. For the paper's §5 nets use "
                         f"benchmarks/bench_multitask.py or benchmarks/bench_fusion.py, and "
                         f"`fcn-edge eval` for each task's metrics")
    data = _data_for(config.data, meta, log)
    report = BenchReport([], _machine(threads), reference=str(reference or ""))
    store.prepare([c.artifact for c in combos if c.artifact and c.artifact.kind == "onnx"])
    runnable = []
    for c in combos:  # what cannot run is said once, not once per size
        why, path = _blocked(c, store)
        if why and why[0] == "unsupported":
            report.not_run.append((f"{c.backend} {c.precision} {c.io}", why[1]))
        elif why:
            report.rows.append(BenchRow(c.backend, c.precision, c.io, "all", *why))
        else:
            runnable.append((c, path))
    # Procedural scenes are rendered at each size; a real data set's images keep their own
    # sizes, so its evaluation (reference and every artifact) is done once, not once per size.
    evaluations: dict = {}
    for size in config.sizes:
        rendered = data in ("synthetic", acc.UNLABELLED)
        key = size if rendered else "native"
        if key not in evaluations:
            frames = acc.eval_set(meta, data, config.images, size, config.split,
                                  config.data_layout)
            evaluations[key] = _Evaluation(frames, _reference_labels(reference, frames, threads,
                                                                     log), {})
            report.eval_data.append(frames.description)
        evaluation = evaluations[key]
        flops = _flops(store, size)
        report.model_gflops[_size_text(size)] = flops / 1e9 if flops else None
        frame = evaluation.data.frames[0] if rendered else _frame(size)
        rows = [_row(c, path, size, store, evaluation, frame, flops, threads, config, log)
                for c, path in runnable]
        _speedups(rows)
        report.rows.extend(rows)
    if any(r.status == "ok" and r.backend in CPU_BACKENDS for r in report.rows):
        report.machine["sgemm_gflops"] = round(sgemm_gflops(threads), 1)
    return report


def _data_for(data: str | None, meta: ArtifactMeta, log: Log) -> str:
    """``--data``, else the procedural scenes when the model was trained on them, else
    unlabelled frames (a published model, an imported ONNX: their classes are not ours)."""
    if data is not None:
        return data
    if meta.dataset.spec in SYNTHETIC_READERS:
        return "synthetic"
    log("no labelled data for mean IU (pass --data FOLDER); timing and agreement with the "
        "reference on unlabelled procedural frames")
    return acc.UNLABELLED


def _plan(config: BenchConfig, model: Path, kind: str, log: Log):
    out = Path(config.artifacts_dir or Path(config.out_dir) / "artifacts")
    if kind == "checkpoint":
        store = ArtifactStore(out, checkpoint=model, calib=config.calib, log=log)
        combos = plan_combos(config.backends, config.precisions, config.io)
        meta = _checkpoint_meta(model)
        return store, combos, meta
    meta = _artifact_meta(model, kind)
    io = "raw" if meta.raw_io else "plain"
    key = ArtifactKey(kind, meta.precision, io)
    store = ArtifactStore(out, given=(key, model), log=log)
    return store, combos_for_artifact(kind, meta.precision, io, config.backends), meta


def _blocked(c: Combo, store: ArtifactStore) -> tuple[tuple[str, str] | None, Path | None]:
    """``((status, reason), None)`` when ``c`` cannot run here, else ``(None, its file)``."""
    if c.artifact is None:
        return ("unsupported", c.why), None
    try:
        path = store.path(c.artifact)
    except BackendUnavailable as exc:  # e.g. no TensorRT to build the engine with
        return ("unavailable", str(exc)), None
    except FcnEdgeError as exc:
        return ("failed", f"no artifact: {exc}"), None
    available = {name: (ok, why) for name, ok, why in available_backends(path)}
    ok, why = available.get(c.backend_name, (False, "not a backend for this file"))
    return (None, path) if ok else (("unavailable", why), None)


@dataclass
class _Evaluation:
    """Labelled frames, the reference's labels of them, and each combination's score."""

    data: acc.EvalSet
    ref_labels: list | None
    scores: dict  # Combo -> acc.Accuracy


def _row(c: Combo, path: Path, size, store: ArtifactStore, evaluation: _Evaluation,
         frame: np.ndarray, flops, threads: int, config: BenchConfig, log: Log) -> BenchRow:
    row = BenchRow(c.backend, c.precision, c.io, _size_text(size), artifact=path.name,
                   path=str(path), reason=c.note)
    size_bytes = store.size_bytes(c.artifact)
    row.artifact_mb = round(size_bytes / 1e6, 1) if size_bytes else None
    options = dict(c.options)
    if c.backend in CPU_BACKENDS:
        options["threads"] = threads
    log(f"{c.backend} {c.precision} {c.io} {row.size}: {path.name}")
    try:
        with Segmenter(path, backend=c.backend_name, profile=None, **options) as seg:
            _measure_row(row, seg, frame, flops, config)
            if c not in evaluation.scores:
                predictions = acc.predict_all(seg, evaluation.data)
                evaluation.scores[c] = acc.score(predictions, evaluation.data,
                                                 evaluation.ref_labels)
            _record_accuracy(row, evaluation.scores[c])
    except FcnEdgeError as exc:
        return replace(row, status="failed", reason=str(exc))
    return row


def _measure_row(row: BenchRow, seg: Segmenter, frame: np.ndarray, flops,
                 config: BenchConfig) -> None:
    batch = _model_input(seg.meta, frame)
    backend = seg.backend
    timing = dict(runs=config.runs, warmup=config.warmup, max_seconds=config.max_seconds)
    model = measure(lambda: backend.infer(batch), **timing)
    e2e = measure(lambda: seg(frame), **timing)
    row.model_p50_ms, row.model_p99_ms = _ms(model)
    row.e2e_p50_ms, row.e2e_p99_ms = _ms(e2e)
    row.fps = round(e2e.fps, 1)
    if flops:
        row.gflops_per_s = round(flops / (model.p50 / 1e3) / 1e9, 1)


def _record_accuracy(row: BenchRow, result: acc.Accuracy) -> None:
    row.mean_iou = None if result.mean_iou is None else round(result.mean_iou, 4)
    if result.agreement is not None:
        row.delta_miou = None if result.delta_miou is None else round(result.delta_miou, 2)
        row.agreement = round(result.agreement, 5)
        passed, why = acc.verdict(result, row.precision)
        row.check = "pass" if passed else "FAIL"
        if not passed:
            row.reason = "; ".join(filter(None, [row.reason, why]))


def _reference_labels(reference: Path | None, data: acc.EvalSet, threads: int, log: Log):
    """PyTorch fp32 CPU labels of the evaluation frames; None without a reference checkpoint."""
    if reference is None:
        return None
    log(f"reference: {reference.name} in PyTorch fp32 on the CPU, {data.description}")
    with Segmenter(reference, backend="torch:cpu", profile=None, threads=threads) as seg:
        return acc.predict_all(seg, data)


def _model_input(meta: ArtifactMeta, frame: np.ndarray) -> np.ndarray:
    """The batch of one the artifact takes, prepared once outside the timed calls."""
    if meta.raw_io:
        return np.ascontiguousarray(frame[None])
    return frames_to_input(frame[None], meta.mean, meta.std, meta.color_order, "bgr")


def _frame(size) -> np.ndarray:
    """A procedural BGR frame of ``size`` for timing when the data's images differ in size."""
    from ..data import render_scene

    image = render_scene(np.random.default_rng(0), size[0], size[1])[0]
    return np.ascontiguousarray(image[..., ::-1])


def _flops(store: ArtifactStore, size) -> float | None:
    path = store.any_onnx()
    if path is None:
        return None
    from ..export.flops import count_flops

    return float(count_flops(path, size[0], size[1]).total)


def _speedups(rows: list[BenchRow]) -> None:
    """Model-only speed-up of each row over PyTorch eager CPU fp32 at the same size."""
    base = next((r.model_p50_ms for r in rows if (r.backend, r.precision, r.io) ==
                 ("torch:cpu", "fp32", "plain") and r.model_p50_ms), None)
    for r in rows:
        if base and r.model_p50_ms:
            r.vs_torch = round(base / r.model_p50_ms, 2)


def _checkpoint_meta(path: Path) -> ArtifactMeta:
    try:
        from ..export.artifact_meta import artifact_meta
        from ..models import load_model
    except ModuleNotFoundError as exc:
        if exc.name not in ("torch", "onnx"):
            raise
        raise BackendUnavailable(f"benchmarking a checkpoint needs {exc.name}: pip install "
                                 f"'fcn-edge[train]', or bench an exported .onnx") from None
    return artifact_meta(load_model(path).eval(), path, raw_io=False, argmax=False,
                         shapes=None, options={})


def _artifact_meta(path: Path, kind: str) -> ArtifactMeta:
    """The given artifact's own metadata, read without opening an engine."""
    if kind == "engine":
        return engine_meta(read_engine_header(path), path)
    return read_onnx_metadata(path)


def _machine(threads: int) -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(),
            "processor": _cpu_name(), "cpus": os.cpu_count(), "threads": threads,
            "fcn_edge": __version__, "date": date.today().isoformat(),
            "started": time.strftime("%H:%M:%S")}


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ms(timing: Timing) -> tuple[float, float]:
    return round(timing.p50, 2), round(timing.p99, 2)


def _size_text(size) -> str:
    return f"{size[0]}x{size[1]}"
