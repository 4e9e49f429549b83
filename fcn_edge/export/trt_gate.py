"""The accuracy gate of ``fcn-edge build``: a new engine is run against ONNX Runtime before it
is cached or written.

Why: an engine that builds and runs can still give other masks than the model it came from, and
nothing says so — FP16 overflow to NaN or Inf in one layer, a fusion that loses accuracy, a
profile edge case (the most common complaint in mmdeploy's, TensorRT's and efficientvit's
issues). The export verified the ONNX against PyTorch before writing it; the gate carries that
check to the target, where the engine is built.

Why ONNX Runtime on the same ONNX: it is the anchor the export already held to PyTorch, it runs
on the target without torch or a GPU (CPU provider, no fusions of TensorRT's), and it sees the
same graph the engine was built from, so any difference is TensorRT's (its precision, its
fusions, its profile) and not the export's. The gate feeds both the same frames — procedural
scenes the artifact's metadata regenerates (RGB, plus depth/HHA for RGB-D models), or the
user's images (``--verify-data``) — made into input tensors by the runtime's own preprocessing.

Why min/opt/max shapes: TensorRT picks kernels per profile and tunes them at ``opt``; an engine
can be right at ``opt`` and wrong at an edge of its profile, so the gate runs every corner it
will be asked to run. Each output (one per head) at each shape is checked for NaN/Inf and for
label agreement with ONNX Runtime against the bound of the engine's precision
(:func:`gate_bounds`). The TensorRT calls are the build's (``tensorrt.py``); everything here is
plain numpy, OpenCV and the runtime, never torch (Jetson boxes run it without torch).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np

from ..data.files import read_image
from ..errors import AccuracyGateFailed, BackendUnavailable, InputError
from ..metrics import THRESHOLDS
from ..runtime.backends.onnxruntime import OnnxRuntimeBackend
from ..runtime.backends.optional import has_module
from ..runtime.metadata import ArtifactMeta, Shapes
from ..runtime.sources import IMAGE_SUFFIXES
from .frames import Infer, artifact_feed, scene_arrays

__all__ = ["Infer", "REFERENCE", "GateBounds", "gate_bounds", "gate_shapes", "gate_feeds",
           "OutputCheck", "compare_output", "GateReport", "judge", "failure_advice", "run_gate",
           "refuse", "reference_backend", "frames_label"]

#: What the engine is compared with (written into the engine's header).
REFERENCE = "onnxruntime cpu"
PROCEDURAL = "procedural"
NO_ORT = ("the accuracy gate runs the ONNX in ONNX Runtime: pip install onnxruntime, "
          "or pass --no-verify")
KEEP_ANYWAY = "or pass --no-verify to keep the engine anyway"
#: What to try when an engine of each precision fails the gate.
ADVICE = {
    "fp16": "keep the failing layers in fp32: `fcn-edge export CHECKPOINT --fp16 --keep-fp32 "
            "OPS` (op types or node names, comma-separated), or build fp32, " + KEEP_ANYWAY,
    "int8": "export again with calibration images like the deployment's (`fcn-edge export "
            "CHECKPOINT --int8 --int8-target tensorrt --calib DIR --calib-images N`), or build "
            "fp16, " + KEEP_ANYWAY,
    "fp32": "TensorRT's result differs from ONNX Runtime's on the same ONNX (a TensorRT or "
            "profile problem): rebuild with --force, " + KEEP_ANYWAY,
}


# --- what is held, and where --------------------------------------------------------------------

@dataclass(frozen=True)
class GateBounds:
    precision: str
    min_agreement: float  # least share of pixels labelled as ONNX Runtime does, per output, shape


def gate_bounds(precision: str) -> GateBounds:
    """The least label agreement with ONNX Runtime for an engine of ``precision``, from the
    bench's regression bounds (:data:`fcn_edge.metrics.THRESHOLDS`): fp32 0.999, fp16 0.995,
    int8 0.98.

    One table bounds both, so the gate is never looser than the bench. The gate has no ground
    truth (procedural scenes or the user's unlabelled images), so it cannot measure ΔmIoU; it
    measures what ΔmIoU comes from: pixels that change label. Where the bench holds agreement
    itself (fp32) that bound is taken; where it holds only a mean-IU drop of d points, at most
    d % of pixels may change label (a relabelled share s costs about s of IoU, summed over the
    classes it leaves and enters).
    """
    if precision not in THRESHOLDS:
        raise InputError(f"no accuracy bound for precision {precision!r}; known: "
                         f"{', '.join(THRESHOLDS)}")
    threshold = THRESHOLDS[precision]
    if threshold.min_agreement is not None:
        return GateBounds(precision, threshold.min_agreement)
    return GateBounds(precision, round(1.0 - threshold.max_drop_points / 100.0, 6))


def gate_shapes(shapes: Shapes) -> list[tuple[int, int, int]]:
    """The profile's min, opt and max (N, H, W), duplicates dropped, order kept."""
    return list(dict.fromkeys((shapes.min, shapes.opt, shapes.max)))


# --- the frames ---------------------------------------------------------------------------------

def gate_feeds(meta: ArtifactMeta, shapes: Shapes, data_dir: Path | None = None,
               seed: int = 2024) -> list[tuple[tuple[int, int, int], dict[str, np.ndarray]]]:
    """One batched feed (input name → N×… array) per gate shape, N frames each: procedural
    scenes regenerated from the metadata, or the images of ``data_dir`` (sorted by name, resized
    to W×H, cycled to fill the batches), made into the artifact's inputs by the runtime's own
    preprocessing (``frames.artifact_feed``)."""
    sizes = gate_shapes(shapes)
    if data_dir is None:
        examples = [scene_arrays(meta, [(h, w)] * n, seed + i) for i, (n, h, w) in
                    enumerate(sizes)]
    else:
        images = _cycle(verify_images(meta, Path(data_dir), sum(n for n, _, _ in sizes)))
        examples = [[{"rgb": _resize(next(images), h, w)} for _ in range(n)]
                    for n, h, w in sizes]
    return [(size, _stack([artifact_feed(meta, arrays) for arrays in batch]))
            for size, batch in zip(sizes, examples)]


def verify_images(meta: ArtifactMeta, folder: Path, wanted: int) -> list[np.ndarray]:
    """Up to ``wanted`` RGB images from ``folder`` (its image files by name; unreadable ones
    are passed over); InputError when there is none, or the model takes more than RGB."""
    flag = f"--verify-data {folder}"
    if not folder.is_dir():
        raise InputError(f"{flag}: not a folder; give a folder of images "
                         f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    if meta.modalities != ("rgb",):
        raise InputError(f"{flag}: the model takes {' + '.join(meta.modalities)} inputs, not "
                         f"RGB images alone; leave out --verify-data to use procedural RGB-D "
                         f"scenes")
    images = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        if len(images) == wanted:
            break
        try:
            images.append(read_image(path))
        except InputError:  # a corrupt or unreadable file: the next one serves as well
            continue
    if not images:
        raise InputError(f"{flag}: no readable image ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                         f"give a folder of images like the deployment's")
    return images


def _cycle(images: list[np.ndarray]) -> Iterator[np.ndarray]:
    while True:
        yield from images


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.shape[:2] == (height, width):
        return image
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def _stack(feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]}


# --- one output at one shape --------------------------------------------------------------------

@dataclass(frozen=True)
class OutputCheck:
    output: str
    batch: int
    height: int
    width: int
    agreement: float          # share of pixels with the same label as the reference
    nan: int                  # NaN values in the engine's output
    inf: int
    reference_nan: int
    reference_inf: int
    rel_max_abs: float | None  # max|engine-ref| / max|ref| for logits outputs (finite only)
    #: The engine's output shape where it is not the reference's (agreement then counts 0).
    engine_shape: tuple[int, ...] | None = None


def compare_output(meta: ArtifactMeta, name: str, engine_out: np.ndarray,
                   reference_out: np.ndarray) -> OutputCheck:
    """The engine's output ``name`` against ONNX Runtime's: label agreement (argmax over the
    channels of N×C×H×W logits; an argmax artifact's N×H×W labels as they are), NaN and Inf
    counts on both sides and, for logits, the relative max |Δ| over the values finite in both.
    Frame by frame: a batch of 1024² logits is hundreds of MB, and whole-batch temporaries cost
    more in fresh memory than the arithmetic (``benchmarks/bench_gate.py``)."""
    ours, theirs = np.asarray(engine_out), np.asarray(reference_out)
    n, (h, w) = theirs.shape[0], theirs.shape[-2:]
    same = ours.shape == theirs.shape
    agree, deltas = 0, []
    for i in range(n if same else 0):
        labels = (ours[i], theirs[i]) if meta.argmax else (ours[i].argmax(0), theirs[i].argmax(0))
        agree += int(np.count_nonzero(labels[0] == labels[1]))
        if not meta.argmax:
            deltas.append(_max_abs(ours[i], theirs[i]))
    deltas = [d for d in deltas if d is not None]
    rel = None
    if deltas:
        diff, scale = max(d for d, _ in deltas), max(s for _, s in deltas)
        rel = diff / scale if scale > 0 else diff
    return OutputCheck(name, int(n), int(h), int(w), agree / float(n * h * w) if same else 0.0,
                       *_nan_inf(ours), *_nan_inf(theirs), rel,
                       None if same else tuple(int(d) for d in ours.shape))


def _nan_inf(array: np.ndarray) -> tuple[int, int]:
    if array.dtype.kind != "f":
        return 0, 0  # labels
    return int(np.isnan(array).sum()), int(np.isinf(array).sum())


def _max_abs(ours: np.ndarray, theirs: np.ndarray) -> tuple[float, float] | None:
    """(max |ours − theirs|, max |theirs|) of one frame over the elements finite in both (None:
    there is none); masked only when something is not finite (rare: such an engine fails)."""
    if np.isfinite(ours).all() and np.isfinite(theirs).all():
        return float(np.abs(ours - theirs).max()), float(np.abs(theirs).max())
    finite = np.isfinite(ours) & np.isfinite(theirs)
    if not finite.any():
        return None
    with np.errstate(invalid="ignore", over="ignore"):  # Inf − Inf where masked out anyway
        diff = float(np.max(np.abs(ours - theirs), where=finite, initial=0.0))
    return diff, float(np.max(np.abs(theirs), where=finite, initial=0.0))


# --- the verdict --------------------------------------------------------------------------------

def judge(checks: Sequence[OutputCheck], bounds: GateBounds) -> tuple[str, ...]:
    """Every failure, one clause each, naming output and shape: NaN/Inf in ONNX Runtime's own
    output (the ONNX itself overflows), an output of the wrong shape, NaN/Inf in the engine's
    output (any count fails), label agreement below ``bounds.min_agreement``."""
    failures = []
    for c in checks:
        where = f"{c.output} at {c.batch}×{c.height}×{c.width}"
        if c.reference_nan or c.reference_inf:
            failures.append(f"{where}: ONNX Runtime's own output has {c.reference_nan} NaN and "
                            f"{c.reference_inf} Inf values (the ONNX itself overflows)")
        if c.engine_shape is not None:
            failures.append(f"{where}: the engine's output has shape "
                            f"{'×'.join(map(str, c.engine_shape))}, not ONNX Runtime's "
                            f"(labels counted as disagreeing)")
        if c.nan or c.inf:
            failures.append(f"{where}: the engine's output has {c.nan} NaN and {c.inf} Inf "
                            f"values")
        if c.engine_shape is None and c.agreement < bounds.min_agreement:
            failures.append(f"{where}: labels agree with ONNX Runtime on {c.agreement:.3%} of "
                            f"pixels, below {bounds.min_agreement:.2%} ({bounds.precision})")
    return tuple(failures)


def failure_advice(precision: str) -> str:
    """What to try when an engine of ``precision`` fails the gate."""
    gate_bounds(precision)  # an unknown precision is refused alike
    return ADVICE[precision]


@dataclass(frozen=True)
class GateReport:
    frames: str                        # frames_label(): "procedural" or the --verify-data folder
    bounds: GateBounds
    checks: tuple[OutputCheck, ...]
    failures: tuple[str, ...]

    @property
    def precision(self) -> str:
        return self.bounds.precision

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_header(self) -> dict:
        """The figures for the engine's header (JSON), next to the ONNX's parity figures."""
        checks = [{**asdict(c), "engine_shape": None if c.engine_shape is None
                   else list(c.engine_shape)} for c in self.checks]
        return {"passed": self.passed, "reference": REFERENCE, "frames": self.frames,
                "precision": self.precision, "min_agreement": self.bounds.min_agreement,
                "checks": checks, "failures": list(self.failures)}

    def lines(self) -> list[str]:
        """One console line per output and shape."""
        return [_line(c, self.bounds) for c in self.checks]


def _line(c: OutputCheck, bounds: GateBounds) -> str:
    text = (f"gate {c.batch}×{c.height}×{c.width} {c.output}: labels agree {c.agreement:.2%} "
            f"(≥ {bounds.min_agreement:.2%}), NaN {c.nan}, Inf {c.inf}")
    if c.rel_max_abs is not None:
        text += f", rel max|Δ| {c.rel_max_abs:.1e}"
    if c.reference_nan or c.reference_inf:
        text += f"; ONNX Runtime NaN {c.reference_nan}, Inf {c.reference_inf}"
    if c.engine_shape is not None:
        text += f"; engine output shape {'×'.join(map(str, c.engine_shape))}"
    return text


# --- the gate -----------------------------------------------------------------------------------

def run_gate(meta: ArtifactMeta, engine: Infer, reference: Infer, shapes: Shapes,
             data_dir: Path | None = None, *, precision: str | None = None) -> GateReport:
    """Run ``engine`` and ``reference`` on the gate's feeds and judge every output of ``meta``
    at every shape. ``precision``: the engine's, where it is not the ONNX's (``meta.precision``),
    e.g. an fp16 engine built from an fp32 ONNX."""
    bounds = gate_bounds(precision or meta.precision)
    checks = []
    for _, feed in gate_feeds(meta, shapes, data_dir):
        ours, theirs = engine(feed), reference(feed)
        checks += [compare_output(meta, name, ours[name], theirs[name])
                   for name in meta.output_names]
    return GateReport(frames_label(data_dir), bounds, tuple(checks), judge(checks, bounds))


def frames_label(data_dir: Path | None) -> str:
    """How the header names the gate's frames: ``procedural``, or the ``--verify-data``
    folder (a cached engine gated on other frames is gated again)."""
    return PROCEDURAL if data_dir is None else str(data_dir)


def refuse(report: GateReport, what: str) -> None:
    """AccuracyGateFailed (a ModelFormatError), one line, when ``report`` failed: the first
    failure, how many more, and what to try."""
    if report.passed:
        return
    more = len(report.failures) - 1
    raise AccuracyGateFailed(f"{what} failed the accuracy gate against ONNX Runtime and was "
                             f"neither cached nor written: {report.failures[0]}"
                             f"{f'; +{more} more' if more else ''}; "
                             f"{failure_advice(report.precision)}")


def reference_backend(onnx_path: Path):
    """The gate's reference: ONNX Runtime's CPU provider on ``onnx_path`` (a runtime backend;
    its ``run`` is the reference :data:`Infer`, and the caller closes it)."""
    if not has_module("onnxruntime"):
        raise BackendUnavailable(NO_ORT)
    try:
        return OnnxRuntimeBackend(onnx_path, provider="cpu")
    except BackendUnavailable as exc:  # installed but does not load (a broken wheel)
        raise BackendUnavailable(f"{exc}; {NO_ORT}") from None
