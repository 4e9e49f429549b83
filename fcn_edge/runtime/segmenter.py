"""``Segmenter``: frames in, label maps out, on the best backend for the artifact.

    seg = Segmenter("model.onnx")          # backend="auto"; seg.info()["reason"] says which
    labels = seg(frame)                    # H×W×3 uint8 BGR → H×W uint8 labels, same size
    cv2.imshow("fcn", seg.overlay(frame, labels))

**Several inputs and heads** (paper §5). An RGB-D artifact (``seg.inputs == ("rgb", "depth")``)
takes ``seg(frame, depth=d)``: H×W float metres or uint16 millimetres, registered to the frame
and at its size; an RGB-HHA one ``seg(frame, hha=h)`` (H×W×3 uint8); any registered modality
(:data:`~fcn_edge.runtime.modalities.MODALITIES`) is a keyword alike. Each is checked, resized
with the frame when it is (depth by nearest neighbour, HHA like the frame) and encoded by its
modality's record. A multi-head artifact (``seg.tasks == ("semantic",
"geometric")``) returns a dict task → H×W labels; ``seg.overlay(frame, labels, task=...)``
colours one task with that task's palette (``seg.palette_of(task)``).

**Frames.** An H×W×3 uint8 array in BGR, as OpenCV delivers it (``color="rgb"`` for RGB), or
any buffer-protocol object (``bytes``, ``memoryview``, a camera SDK's buffer) with
``shape=(H, W, 3)``. Any strides are accepted. Grayscale (H×W or H×W×1) is replicated to three
channels and a 4th (alpha) channel is dropped — both as zero-copy views: the network only ever
saw colour, a mono camera shows it what a colour camera would of a grey world, and alpha is not
image content. Anything else (another dtype or channel count, the wrong rank, an empty frame,
``None`` from a failed ``cv2.imread``) raises an :class:`InputError` saying what to pass.
Frames outside the backend's profile (a TensorRT engine's, or ``profile=``) are resized into
it, aspect kept, and the labels mapped back by nearest neighbour: labels always come back at
the frame's own size.

**Threads.** One Segmenter may be shared by threads. Validation, normalisation, encoding depth
and HHA, resizing and argmax run in the calling threads, in parallel; the backend's ``run``
runs in parallel on backends that allow it (ONNX Runtime sessions, eager PyTorch) and under
one lock on those that hold one inference's state (a TensorRT execution context; PyTorch's
CUDA graphs). Stats are updated under a lock. For parallel TensorRT inference, use one
Segmenter per thread.

**Copies** of pixel data made here, per frame, for a contiguous BGR frame inside the profile
(counted in ``seg.stats.copies``; what the engine does inside is not counted):

=====================  ======  ===========================================================
artifact               copies  what
=====================  ======  ===========================================================
raw-IO + argmax        0       the frame goes in as a view with a batch axis; the labels
                               are the engine's own output array
raw-IO, logits         1       argmax over the logits
plain, argmax          1       normalising into the N×3×H×W float32 input
plain, logits (torch)  2       normalising; argmax
=====================  ======  ===========================================================

Each of these adds one: an RGB or non-contiguous frame (a strided view, grayscale, alpha
dropped) into a raw-IO artifact — plain artifacts read any strides while normalising, so there
they are free; resizing into the profile (two if the frame is not contiguous); mapping labels
back; stacking a list for ``batch`` into a raw-IO artifact; narrowing labels a backend returns
in a wider dtype. Each extra input (depth, HHA) adds one for its encoding, written straight
into the batch, and one more when it is resized into the profile. The per-head steps (argmax,
narrowing, mapping back, joining chunks) count once per head. Inside: ONNX Runtime (CPU) reads
the input in place and allocates its output; TensorRT copies into and out of pinned memory
around its DMA transfers; torch on the CPU shares memory both ways (and concatenates several
inputs along channels: one more copy there).
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Sequence

import numpy as np

from ..errors import FcnEdgeError, InputError, ModelFormatError
from .backends import Backend, open_backend
from .backends.base import check_threads
from .heads import Head, Labels, find_head, heads_of, pick, result_of, tasks_of
from .metadata import ArtifactMeta, Shapes, parse_shapes
from .modalities import check_extras, encode_batch, gather_extras, resize_extra
from .legend import draw_legend
from .processing import (as_frame, colorize, fit_size, group_by_size, labels_from_logits,
                         overlay, resize_frame, resize_labels, rgb_input)

COLORS = ("bgr", "rgb")
_ANY = 1 << 30  # "no upper bound" for sizes when only a size multiple applies
#: The extra inputs of equal-size frames: modality → one checked array per frame.
Extras = Dict[str, List[np.ndarray]]


@dataclass(frozen=True)
class SegmenterStats:
    """Counters since the Segmenter opened (or ``reset_stats``)."""

    frames: int = 0
    inferences: int = 0        # backend.run calls
    copies: int = 0            # pixel-data copies made by fcn-edge (see the module docstring)
    resized: int = 0           # frames resized into the profile
    infer_seconds: float = 0.0
    total_seconds: float = 0.0

    @property
    def copies_per_frame(self) -> float:
        return self.copies / self.frames if self.frames else 0.0


@dataclass
class _Work:
    """What one call did; merged into the stats under the lock at its end."""

    copies: int = 0
    resized: int = 0
    inferences: int = 0
    infer_seconds: float = 0.0


class Segmenter:
    """Semantic segmentation of frames with an fcn-edge artifact. See the module docstring.

    Args:
        model: an artifact (``.onnx``, fcn-edge ``.engine``/``.plan``, ``.pt``/``.pth``/
            ``.safetensors`` checkpoint) or an open :class:`Backend` (not closed with us).
        backend: ``auto`` (the fastest that runs here) or a name from ``backend_names()``.
        color: the channel order of the frames given, ``bgr`` (OpenCV) or ``rgb``; colorize
            and overlay return the same order.
        profile: the (batch, height, width) bounds frames are resized into: ``auto`` (the
            backend's hard bounds, e.g. a TensorRT engine's profile; none for ONNX Runtime on
            CPU/CUDA or torch), ``artifact`` (the shapes in the artifact's metadata, the same
            on every backend), a :class:`Shapes` or ``"MIN:OPT:MAX"`` string, or None (never).
        options: for the backend (``threads``, ``fp16``, ``device_id`` …).
    """

    def __init__(self, model: str | os.PathLike | Backend, backend: str = "auto", *,
                 color: str = "bgr", profile: str | Shapes | None = "auto",
                 **options: Any) -> None:
        if color not in COLORS:
            raise InputError(f"color must be one of {COLORS}, got {color!r}")
        if "threads" in options:  # before any engine starts that many (100000 never returned)
            check_threads(options["threads"], "threads", zero="the engine's default")
        if isinstance(model, (str, os.PathLike)):
            self._backend, self._owns = open_backend(model, backend, **options), True
        elif isinstance(model, Backend):
            if options:
                raise InputError("backend options apply when the Segmenter opens the model")
            self._backend, self._owns = model, False
        else:
            raise InputError(f"model must be a path to an artifact or an open Backend, "
                             f"got {type(model).__name__}")
        self.color = color
        self.meta: ArtifactMeta = self._backend.meta
        try:
            self.profile = _resolve_profile(profile, self._backend)
        except InputError:
            self.close()
            raise
        self._infer_lock = None if self._backend.thread_safe else threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = SegmenterStats()
        self._specs = tuple(self._backend.input_specs.values())
        self._heads = heads_of(self.meta)

    # --- the API -----------------------------------------------------------------------------
    def __call__(self, frame: Any, *, shape: Sequence[int] | None = None,
                 **extras: Any) -> Labels:
        """H×W labels (uint8; int32 beyond 256 classes) for one frame, at its size; a dict
        task → labels for a multi-head artifact. ``extras``: the frame's other modalities by
        name (``depth=``, ``hha=`` …), for artifacts that take them (``seg.inputs``)."""
        start = time.perf_counter()
        view = as_frame(frame, shape)
        extras = gather_extras(self.inputs, extras, 1, lambda a: [a], self._name())
        work = _Work()
        labels = self._segment([view], check_extras(extras, [0], view.shape[:2]), work)
        self._record(1, work, start)
        return result_of(labels, self._heads, 0)

    def batch(self, frames: np.ndarray | Iterable[Any], **extras: Any) -> list[Labels]:
        """One result per frame (an N×H×W×C array or a sequence of frames, sizes may
        differ); equal sizes run together, in batches the profile allows. ``extras``: one
        array per frame (a sequence, or an N×H×W[×C] array) of each other modality by name
        (``depth=``, ``hha=`` …), for artifacts that take them."""
        start = time.perf_counter()
        count, groups, order = group_by_size(frames)
        extras = gather_extras(self.inputs, extras, count, list, self._name())
        results: list[Any] = [None] * count
        work = _Work()
        for size, group in groups.items():
            labels = self._segment(group, check_extras(extras, order[size], size), work)
            for j, i in enumerate(order[size]):
                results[i] = result_of(labels, self._heads, j)
        self._record(count, work, start)
        return results

    def colorize(self, labels: Labels, task: str | None = None) -> np.ndarray:
        """Labels → H×W×3 uint8 colours from the (``task``'s) palette, in ``color`` order."""
        head = find_head(self._heads, task, self._name())
        return colorize(pick(labels, head), head.palette, self.color)

    def overlay(self, frame: Any, labels: Labels, alpha: float = 0.5,
                task: str | None = None, legend: bool = False) -> np.ndarray:
        """``frame`` blended with its colorized ``labels`` (``alpha`` of the colours); for a
        multi-head artifact, ``task``'s labels in its palette (default: the first head).
        ``legend``: that head's classes in a corner (:func:`~.legend.draw_legend`; beyond
        12 classes, only those in ``labels``)."""
        view = as_frame(frame)
        head = find_head(self._heads, task, self._name())
        labels = np.asarray(pick(labels, head))
        if labels.shape != view.shape[:2]:
            raise InputError(f"labels of shape {labels.shape} do not match a frame of "
                             f"{view.shape[0]}×{view.shape[1]}")
        shown = overlay(view, colorize(labels, head.palette, self.color), alpha)
        return draw_legend(shown, head.classes, head.palette, present=labels, color=self.color,
                           inplace=True) if legend else shown

    @property
    def classes(self) -> tuple[str, ...]:
        """Class names (of the first head, for a multi-head artifact)."""
        return self.meta.classes

    @property
    def palette(self) -> tuple[tuple[int, int, int], ...]:
        """RGB colours, one per class (of the first head, for a multi-head artifact)."""
        return self.meta.palette

    @property
    def tasks(self) -> tuple[str, ...]:
        """The heads' task names, in order (paper §5, e.g. semantic, geometric); () for one."""
        return tasks_of(self._heads)

    @property
    def inputs(self) -> tuple[str, ...]:
        """The modalities the artifact takes, in channel order: ``("rgb",)``, ``("rgb",
        "depth")`` …; each one but rgb is a keyword of ``seg()`` and ``seg.batch()``."""
        return self.meta.modalities

    def classes_of(self, task: str | None = None) -> tuple[str, ...]:
        """``task``'s class names (None: the first head's)."""
        return find_head(self._heads, task, self._name()).classes

    def palette_of(self, task: str | None = None) -> tuple[tuple[int, int, int], ...]:
        """``task``'s RGB colours (None: the first head's)."""
        return find_head(self._heads, task, self._name()).palette

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise FcnEdgeError("this Segmenter is closed")
        return self._backend

    @property
    def stats(self) -> SegmenterStats:
        with self._stats_lock:
            return self._stats

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._stats = SegmenterStats()

    def info(self) -> dict[str, Any]:
        """What runs: backend, why it was chosen, the artifact, its inputs, heads, profile."""
        backend, meta = self.backend, self.meta
        return {"backend": backend.name, "reason": backend.reason,
                "description": backend.describe(), "artifact": str(getattr(backend, "path", "")),
                "model": meta.model, "backbone": meta.backbone, "classes": meta.num_classes,
                "precision": meta.precision, "raw_io": meta.raw_io, "argmax": meta.argmax,
                "input": ", ".join(f"{s.name} {s.layout} {s.dtype}" for s in self._specs),
                "inputs": self.inputs, "tasks": self.tasks,
                "profile": str(self.profile) if self.profile else "any size",
                "thread_safe": backend.thread_safe, "color": self.color}

    def __repr__(self) -> str:
        if self._backend is None:
            return "Segmenter(closed)"
        meta = self.meta
        kinds = [k for k, on in (("raw-IO", meta.raw_io), ("argmax", meta.argmax),
                                 (" + ".join(self.inputs), len(self.inputs) > 1),
                                 ("heads " + ", ".join(self.tasks), bool(self.tasks))) if on]
        return (f"Segmenter({meta.model}/{meta.backbone}, {meta.num_classes} classes, "
                f"{Path(getattr(self._backend, 'path', '?')).name} on {self._backend.name}"
                + "".join(f", {k}" for k in kinds) + ")")

    def close(self) -> None:
        if self._backend is not None and self._owns:
            self._backend.close()
        self._backend = None

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _name(self) -> str:
        return Path(getattr(self._backend, "path", "the model")).name

    # --- the work ----------------------------------------------------------------------------
    def _segment(self, frames: Sequence[np.ndarray], extras: Extras,
                 work: _Work) -> dict[str, np.ndarray]:
        """Equal-size frames (and their extra inputs) → output name → N×H×W labels."""
        n = len(frames)
        h, w = frames[0].shape[:2]
        size = self._fit(h, w)
        if size != (h, w):
            work.copies += sum(1 + (not f.flags.c_contiguous) for f in frames) + n * len(extras)
            work.resized += n
            frames = [resize_frame(f, size) for f in frames]
            extras = {m: [resize_extra(m, a, size) for a in arrays]
                      for m, arrays in extras.items()}
        lo, hi = (self.profile.min[0], self.profile.max[0]) if self.profile else (1, n)
        outputs = []
        for start in range(0, n, hi):
            chunk = frames[start:start + hi]
            more = {m: arrays[start:start + hi] for m, arrays in extras.items()}
            pad = max(0, lo - len(chunk))
            if pad:  # below the profile's minimum batch: repeat the last frame, drop its labels
                chunk = list(chunk) + [chunk[-1]] * pad
                more = {m: arrays + [arrays[-1]] * pad for m, arrays in more.items()}
            result = self._run(chunk, more, work)
            outputs.append({k: v[:len(chunk) - pad] for k, v in result.items()})
        labels = outputs[0] if len(outputs) == 1 else {
            k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
        work.copies += n * len(labels) if len(outputs) > 1 else 0
        if size != (h, w):
            labels = {k: resize_labels(v, (h, w)) for k, v in labels.items()}
            work.copies += n * len(labels)
        return labels

    def _run(self, chunk: Sequence[np.ndarray], extras: Extras,
             work: _Work) -> dict[str, np.ndarray]:
        feed = {}
        for spec in self._specs:
            if spec.modality == "rgb":
                feed[spec.name], copies = rgb_input(chunk, self.meta, self.color)
                work.copies += copies
            else:  # encoded straight into the batch: one copy per frame
                feed[spec.name] = encode_batch(spec.modality, extras[spec.modality],
                                               self.meta.mean, self.meta.std)
                work.copies += len(chunk)
        backend = self.backend
        start = time.perf_counter()
        if self._infer_lock is None:
            outputs = backend.run(feed)
        else:
            with self._infer_lock:
                outputs = backend.run(feed)
        work.infer_seconds += time.perf_counter() - start
        work.inferences += 1
        size = chunk[0].shape[:2]
        return {h.output: self._labels(outputs, h, len(chunk), size, work) for h in self._heads}

    def _labels(self, outputs: dict[str, np.ndarray], head: Head, n: int,
                size: tuple[int, int], work: _Work) -> np.ndarray:
        """One head's N×H×W labels from the backend's outputs."""
        if head.output not in outputs:
            raise ModelFormatError(f"{self.backend.name} returned {', '.join(outputs)} but no "
                                   f"'{head.output}'")
        output = np.asarray(outputs[head.output])
        if self.meta.argmax:
            labels = output
            if labels.dtype != head.dtype:
                work.copies += n
                labels = labels.astype(head.dtype)
        else:
            classes = len(head.classes)
            if output.ndim != 4 or output.shape[1] != classes:
                raise ModelFormatError(f"{self.backend.name} returned logits of shape "
                                       f"{output.shape}; {classes} classes expected")
            labels = labels_from_logits(output)
            work.copies += n
        if labels.shape != (n, *size):
            raise ModelFormatError(f"{self.backend.name} returned labels of shape {labels.shape} "
                                   f"for a {n}×{size[0]}×{size[1]} batch")
        return labels

    def _fit(self, h: int, w: int) -> tuple[int, int]:
        multiple = max(1, self.meta.size_multiple)
        if self.profile is not None:
            return fit_size(h, w, self.profile.min[1:], self.profile.max[1:], multiple)
        return fit_size(h, w, (1, 1), (_ANY, _ANY), multiple)

    def _record(self, frames: int, work: _Work, start: float) -> None:
        elapsed = time.perf_counter() - start
        with self._stats_lock:
            s = self._stats
            self._stats = SegmenterStats(
                s.frames + frames, s.inferences + work.inferences, s.copies + work.copies,
                s.resized + work.resized, s.infer_seconds + work.infer_seconds,
                s.total_seconds + elapsed)


def _resolve_profile(profile: Any, backend: Backend) -> Shapes | None:
    hard = backend.input_spec.profile
    if isinstance(profile, str) and profile == "auto":
        return hard
    if profile is None:
        return None  # frames outside a hard profile then fail in the backend
    if isinstance(profile, str) and profile == "artifact":
        chosen = backend.meta.shapes
    elif isinstance(profile, str):
        chosen = parse_shapes(profile)
    elif isinstance(profile, Shapes):
        chosen = profile
    else:
        raise InputError(f"profile must be 'auto', 'artifact', None, a Shapes or "
                         f"'MIN:OPT:MAX', got {profile!r}")
    if hard is not None and not (hard.covers(*chosen.min) and hard.covers(*chosen.max)):
        raise InputError(f"profile {chosen} reaches outside the backend's own {hard}")
    return chosen


__all__ = ["Segmenter", "SegmenterStats", "COLORS"]
