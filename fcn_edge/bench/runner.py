"""``bench``: run every planned row — latency, throughput, accuracy — and collect the table.

For each input size, first the reference: the checkpoint in PyTorch fp32 on the CPU labels the
evaluation frames (its mean IU is the baseline of every ΔmIoU). Then each row:

1. open the artifact with a :class:`~fcn_edge.runtime.Segmenter` on the row's backend, with the
   same ``threads`` for every CPU backend (and the baseline's of the same combination);
2. model-only latency: the backend's ``infer`` on a prepared batch of one (warm-up first;
   ``infer`` returns host memory, so GPU work is finished when it returns);
3. end-to-end latency: a Segmenter call on a BGR uint8 frame — pre-processing, inference,
   labels at the frame's size — as an application sees it; FPS is 1000 / its median;
4. accuracy on the evaluation frames, held to the regression bounds (``accuracy.THRESHOLDS``).

A row that cannot run says why (unsupported, unavailable, failed) and the bench goes on.

With ``baseline``, a second model runs through the same rows, each timed interleaved with the
model's in alternating turns (``compare.py``); with ``profile``, ONNX Runtime's profiler says where
each ONNX Runtime CPU row's time goes (``profile.py``).
"""
from __future__ import annotations

import math
import os
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import ClassVar, Mapping
from pathlib import Path

import numpy as np

from ..errors import AccuracyGateFailed, FcnEdgeError
from ..config import IMAGE_SIZE
from ..data import SYNTHETIC_READERS
from ..io import Log
from ..runtime import Segmenter
from ..runtime.bounds import Bound, Many, Rule, Threads, check_bounds
from ..runtime.metadata import ArtifactMeta
from ..runtime.onnx_file import read_onnx_metadata
from ..runtime.processing import frames_to_input
from . import accuracy as acc
from .artifacts import ArtifactStore
from .compare import (Contender, baseline_combo, baseline_contender, baseline_data, blocked,
                      contender, vs_baseline)
from .plan import BENCH_BACKENDS, DEFAULT_SIZES, IO_KINDS, PRECISIONS, Combo
from .profile import profile_rows
from .timing import Timing, interleaved, machine, sgemm_gflops

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
    baseline: str | None = None                   # a second model through the same rows
    profile: int = 0                              # ONNX Runtime profiled calls per row; 0: off

    #: Each numeric field's range; the flags of the same name read their text with these.
    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "images": Bound(1, 100_000), "sizes": Many(IMAGE_SIZE), "runs": Bound(1, 1_000_000),
        "warmup": Bound(0, 100_000),
        "max_seconds": Bound(0.0, 86_400.0, integer=False, low_open=True),
        "threads": Threads(zero="every core"), "profile": Bound(0, 100_000)}

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
    vs_baseline: float | None = None   # the baseline's e2e median / this row's (same row)
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
    baseline: str = ""                                 # the --baseline file, if any …
    baseline_rows: list[BenchRow] = field(default_factory=list)  # … and its rows
    baseline_gflops: dict = field(default_factory=dict)
    profiles: list = field(default_factory=list)       # profile.RowProfile per profiled row


def bench(config: BenchConfig, log: Log = print) -> BenchReport:
    """Run the bench described by ``config``; see the module docstring."""
    threads = config.threads or os.cpu_count() or 1
    artifacts = Path(config.artifacts_dir or Path(config.out_dir) / "artifacts")
    model = contender(config, Path(config.model), config.reference, artifacts, log)
    base = baseline_contender(config, artifacts, log) if config.baseline else None
    data = _data_for(config.data, model.meta, log)  # every check passed: the work starts
    report = BenchReport([], machine(threads), reference=str(model.reference or ""),
                         baseline=str(base.path) if base else "")
    runnable = _runnable(model, base, report)
    # Procedural scenes are rendered at each size; a real data set's images keep their own
    # sizes, so its evaluation (reference and every artifact) is done once, not once per size.
    evaluations: dict = {}
    for size in config.sizes:
        rendered = data in ("synthetic", acc.UNLABELLED)
        key = size if rendered else "native"
        if key not in evaluations:
            frames = acc.eval_set(model.meta, data, config.images, size, config.split,
                                  config.data_layout)
            evaluations[key] = [_Evaluation(frames, _reference_labels(model.reference, frames,
                                                                      threads, log), {})]
            if base:  # the same frames, labelled where the classes are the same
                ours = baseline_data(frames, model.meta, base.meta)
                evaluations[key].append(_Evaluation(ours, _reference_labels(
                    base.reference, ours, threads, log), {}))
            report.eval_data.append(frames.description)
        frame = evaluations[key][0].data.frames[0] if rendered else _frame(size)
        _bench_size(size, frame, runnable, (model, base), evaluations[key], report, threads,
                    config, log)
    if any(r.status == "ok" and r.backend in CPU_BACKENDS for r in report.rows):
        report.machine["sgemm_gflops"] = round(sgemm_gflops(threads), 1)
    return report


def _runnable(model: Contender, base: Contender | None, report: BenchReport) -> list:
    """``(combination, file, the baseline's (combination, file) or None)`` of each row that
    can run; what cannot is reported, once and not once per size. Exports (the engines'
    sources too) happen here, then engines are built."""
    model.store.prepare([c.artifact for c in model.combos if c.artifact])
    if base:
        base.store.prepare([c.artifact for c in base.combos if c.artifact])
    runnable = []
    for c in model.combos:
        why, path = blocked(c, model.store)
        if why and why[0] == "unsupported":
            report.not_run.append((f"{c.backend} {c.precision} {c.io}", why[1]))
        elif why:
            row = BenchRow(c.backend, c.precision, c.io, "all", *why)
            if isinstance(model.store.failure(c.artifact), AccuracyGateFailed):
                row.check = "FAIL"  # an engine the gate refused: out of bounds, as a FAIL row
            report.rows.append(row)
        else:
            partner = None
            if base:
                theirs, why, their_path = baseline_combo(base, c)
                if why:
                    report.baseline_rows.append(BenchRow(c.backend, c.precision, c.io, "all",
                                                         *why))
                else:
                    partner = (theirs, their_path)
            runnable.append((c, path, partner))
    return runnable


def _bench_size(size, frame: np.ndarray, runnable: list, models: tuple, evaluations: list,
                report: BenchReport, threads: int, config: BenchConfig, log: Log) -> None:
    """Every runnable row at ``size``; each baseline row timed with the model's row of the
    same combination, in alternating turns (``_combination_rows``)."""
    model, base = models
    flops = _flops(model.store, size)
    report.model_gflops[_size_text(size)] = flops / 1e9 if flops else None
    if base:
        base_flops = _flops(base.store, size)
        report.baseline_gflops[_size_text(size)] = base_flops / 1e9 if base_flops else None
    rows, base_rows = [], []
    for c, path, partner in runnable:
        jobs = [_Job(c, path, model.store, evaluations[0], flops)]
        if partner:
            jobs.append(_Job(*partner, base.store, evaluations[1], base_flops))
        ours, *theirs = _combination_rows(jobs, size, frame, threads, config, log)
        rows.append(ours)
        base_rows += theirs
    _speedups(rows)
    _speedups(base_rows)
    vs_baseline(rows, base_rows)
    report.rows.extend(rows)
    report.baseline_rows.extend(base_rows)
    if config.profile:
        out = Path(config.out_dir)
        batch_of = lambda path: _model_input(read_onnx_metadata(path), frame)  # noqa: E731
        for name, group in (("model", rows), ("baseline", base_rows)):
            report.profiles += profile_rows(group, name, batch_of, threads, config.profile,
                                            config.warmup, out, log)


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


@dataclass
class _Evaluation:
    """Labelled frames, the reference's labels of them, and each combination's score."""

    data: acc.EvalSet
    ref_labels: list | None
    scores: dict  # Combo -> acc.Accuracy


@dataclass(frozen=True)
class _Job:
    """One row to run: a combination of one model, its file, and what its figures need."""

    combo: Combo
    path: Path
    store: ArtifactStore
    evaluation: _Evaluation
    flops: float | None


def _combination_rows(jobs: list[_Job], size, frame: np.ndarray, threads: int,
                      config: BenchConfig, log: Log) -> list[BenchRow]:
    """The rows of one combination (the model's; the baseline's after it), all open at once
    and timed in alternating turns, so that a slow spell of the machine hits each alike;
    then each one's accuracy."""
    rows = []
    with ExitStack() as stack:
        opened = []
        for job in jobs:
            c = job.combo
            row = BenchRow(c.backend, c.precision, c.io, _size_text(size),
                           artifact=job.path.name, path=str(job.path), reason=c.note)
            size_bytes = job.store.size_bytes(c.artifact)
            row.artifact_mb = round(size_bytes / 1e6, 1) if size_bytes else None
            options = dict(c.options)
            if c.backend in CPU_BACKENDS:
                options["threads"] = threads
            log(f"{c.backend} {c.precision} {c.io} {row.size}: {job.path.name}")
            rows.append(row)
            try:
                opened.append((row, stack.enter_context(Segmenter(
                    job.path, backend=c.backend_name, profile=None, **options)), job))
            except FcnEdgeError as exc:
                _failed(row, exc)
        _measure_rows(opened, frame, config)
        for row, seg, job in opened:
            if row.status != "ok":
                continue
            try:
                evaluation = job.evaluation
                if job.combo not in evaluation.scores:
                    predictions = acc.predict_all(seg, evaluation.data)
                    evaluation.scores[job.combo] = acc.score(predictions, evaluation.data,
                                                             evaluation.ref_labels)
                _record_accuracy(row, evaluation.scores[job.combo])
            except FcnEdgeError as exc:
                _failed(row, exc)
    return rows


def _measure_rows(opened: list, frame: np.ndarray, config: BenchConfig) -> None:
    """Model-only, then end-to-end latency of every opened row, interleaved. A row whose call
    fails is marked failed (``_guarded``) and the others are measured again without it."""
    # Turns of a fifth of the runs: ONNX Runtime's threads spin on after a call, and would
    # slow every call of a contender that followed another call by call (interleaved).
    timing = dict(runs=config.runs, warmup=config.warmup, max_seconds=config.max_seconds,
                  block=math.ceil(config.runs / 5))
    pending = list(opened)
    while pending:
        model = {str(i): _guarded(row, lambda b=seg.backend, x=_model_input(seg.meta, frame):
                                  b.infer(x)) for i, (row, seg, _) in enumerate(pending)}
        e2e = {str(i): _guarded(row, lambda s=seg: s(frame))
               for i, (row, seg, _) in enumerate(pending)}
        try:
            model_times, e2e_times = interleaved(model, **timing), interleaved(e2e, **timing)
            break
        except FcnEdgeError:
            pending = [p for p in pending if p[0].status == "ok"]
    else:
        return
    for i, (row, _, job) in enumerate(pending):
        model_t, e2e_t = model_times[str(i)], e2e_times[str(i)]
        row.model_p50_ms, row.model_p99_ms = _ms(model_t)
        row.e2e_p50_ms, row.e2e_p99_ms = _ms(e2e_t)
        row.fps = round(e2e_t.fps, 1)
        if job.flops:
            row.gflops_per_s = round(job.flops / (model_t.p50 / 1e3) / 1e9, 1)


def _guarded(row: BenchRow, call):
    """``call``, marking ``row`` failed (and raising on) when it fails."""
    def run():
        try:
            return call()
        except FcnEdgeError as exc:
            _failed(row, exc)
            raise
    return run


def _failed(row: BenchRow, exc: FcnEdgeError) -> None:
    row.status, row.reason = "failed", str(exc)


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


def _ms(timing: Timing) -> tuple[float, float]:
    return round(timing.p50, 2), round(timing.p99, 2)


def _size_text(size) -> str:
    return f"{size[0]}x{size[1]}"
