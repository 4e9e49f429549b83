"""The ``Backend`` protocol: one small interface in front of every inference engine.

Modelled on Polygraphy's runners: a backend is opened on an artifact, is a context manager,
says what it takes (:class:`InputSpec`, one per input tensor) and what it is (``name``,
``meta``, ``describe()``), and ``run(feed)`` maps input tensor names to batches and returns
every output by name — N×C×H×W float32 logits, or N×H×W labels for argmax artifacts, one per
head (paper §5: several inputs such as RGB + depth, several heads such as semantic +
geometric). ``infer(batch)`` is the one-input, one-output shorthand most artifacts need; it
refuses an artifact with more inputs or outputs (naming them) rather than guess which one is
meant. Pre- and post-processing (frames → input, logits → labels, resizing, encoding depth)
are not a backend's business: :class:`~fcn_edge.runtime.segmenter.Segmenter` does them once,
for every backend alike.

The base class owns the call (Polygraphy's template method, ``BaseRunner.infer`` around
``infer_impl``): :meth:`BackendBase.run` refuses a closed backend and a feed that does not fit
the inputs, times the call, and hands the checked feed to the backend's own ``_run``. A backend
implements ``_run`` and nothing of the checking; :meth:`BackendBase.take_call_times` tells a
caller how long the engine took inside a larger call (``fcn-edge run`` splits a Segmenter call
into preprocess, infer and postprocess with it).

Threads: a backend with ``thread_safe = True`` may have ``run``/``infer`` called from several
threads at once (ONNX Runtime sessions allow concurrent ``run``). One with
``thread_safe = False`` keeps one inference's state between calls (a TensorRT execution context
and its bound buffers, a captured CUDA graph's static tensors): its callers must serialise
calls, as the Segmenter does with one lock. Call times are kept per thread.
"""
from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from ...errors import FcnEdgeError, InputError, ModelFormatError
from ..metadata import EXPORT_AGAIN, NCHW, NHWC, ArtifactMeta, Shapes
from ..processing import fit_size

#: More engine threads than this many per CPU only add switching (1000 threads took 42 s an
#: image on 2 cores, 100000 never finished creating them), so they are refused.
THREADS_PER_CPU = 4


def max_threads() -> int:
    """The most CPU threads a backend, loader or trainer may be given on this machine."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return THREADS_PER_CPU * max(1, cpus or 1)


def check_threads(threads: int | None, flag: str = "threads", *, zero: str | None = None
                  ) -> int | None:
    """``threads`` if it is None, an allowed count (1 … :func:`max_threads`), or 0 where ``zero``
    says what 0 means; else one line naming ``flag`` and the range."""
    if threads is None:
        return None
    low = 0 if zero else 1
    if isinstance(threads, bool) or not isinstance(threads, int) \
            or not low <= threads <= max_threads():
        meaning = f" (0: {zero})" if zero else ""
        raise InputError(f"{flag} must be an integer from {low} to {max_threads()} "
                         f"({THREADS_PER_CPU} per CPU here){meaning}, got {threads!r}")
    return threads


@dataclass(frozen=True)
class InputSpec:
    """What one input tensor takes.

    Attributes:
        name: the tensor's name (``images`` or ``frames`` for RGB; ``depth``, ``hha``).
        layout: ``NCHW`` (normalised or encoded float32) or ``NHWC`` (uint8 BGR frames).
        dtype: float32 or uint8.
        profile: hard (batch, height, width) bounds, as a TensorRT optimisation profile sets
            them; None when any size runs.
        channels: 3 for images and HHA, 1 for depth (paper §5).
        modality: ``rgb``, ``depth`` or ``hha``: what the tensor carries.
    """

    name: str
    layout: str
    dtype: np.dtype
    profile: Shapes | None = None
    channels: int = 3
    modality: str = "rgb"

    @classmethod
    def for_meta(cls, meta: ArtifactMeta, profile: Shapes | None = None) -> "InputSpec":
        """The spec of the artifact's first input (its RGB input, where it has one)."""
        return next(iter(input_specs(meta, profile).values()))

    def dims(self, batch_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(batch, height, width) of a batch of this layout."""
        if self.layout == NHWC:
            return batch_shape[0], batch_shape[1], batch_shape[2]
        return batch_shape[0], batch_shape[2], batch_shape[3]

    def tensor_shape(self, n: int, h: int, w: int) -> tuple[int, int, int, int]:
        c = self.channels
        return (n, h, w, c) if self.layout == NHWC else (n, c, h, w)

    def check(self, batch: np.ndarray) -> None:
        """Refuse a batch of the wrong dtype, rank, channel count or size with an InputError."""
        if not isinstance(batch, np.ndarray) or batch.dtype != self.dtype or batch.ndim != 4:
            got = f"{batch.dtype} {batch.shape}" if isinstance(batch, np.ndarray) else type(batch)
            raise InputError(f"'{self.name}' takes a 4-D {self.dtype} {self.layout} batch, "
                             f"got {got}")
        channels = batch.shape[3] if self.layout == NHWC else batch.shape[1]
        if channels != self.channels or batch.size == 0:
            raise InputError(f"'{self.name}' takes {self.channels} channel"
                             f"{'s' if self.channels != 1 else ''} ({self.layout}) and a "
                             f"non-empty batch, got shape {batch.shape}")
        if self.profile is not None and not self.profile.covers(*self.dims(batch.shape)):
            n, h, w = self.dims(batch.shape)
            raise InputError(f"batch {n}×{h}×{w} is outside the profile {self.profile} "
                             f"(N×H×W min:opt:max); Segmenter resizes frames into it")


def input_specs(meta: ArtifactMeta, profile: Shapes | None = None) -> dict[str, InputSpec]:
    """Every input tensor's spec, by name, in the model's channel order (paper §5 RGB-D)."""
    return {name: InputSpec(name, layout, np.dtype(dtype), profile, channels, modality)
            for (name, layout, channels, dtype), modality in zip(meta.input_tensors(),
                                                                 meta.modalities)}


def check_feed(specs: Mapping[str, InputSpec], feed: Mapping[str, Any]) -> tuple[int, int, int]:
    """Refuse a feed that lacks an input, names an unknown one, or whose batches differ in
    batch size, height or width; returns their common (batch, height, width)."""
    if not isinstance(feed, Mapping):
        raise InputError(f"run takes a dict of input name → batch ({', '.join(specs)}), got "
                         f"{type(feed).__name__}")
    missing = [n for n in specs if n not in feed]
    unknown = [n for n in feed if n not in specs]
    if missing or unknown:
        raise InputError(f"the model's inputs are {', '.join(specs)}; the feed "
                         + (f"lacks {', '.join(missing)}" if missing else "")
                         + ("; " if missing and unknown else "")
                         + (f"has unknown {', '.join(map(str, unknown))}" if unknown else ""))
    dims = {}
    for name, spec in specs.items():
        spec.check(feed[name])
        dims[name] = spec.dims(feed[name].shape)
    if len(set(dims.values())) > 1:
        shown = ", ".join(f"{n} {d[0]}×{d[1]}×{d[2]}" for n, d in dims.items())
        raise InputError(f"every input must have one batch size, height and width (N×H×W), "
                         f"got {shown}")
    return next(iter(dims.values()))


def check_tensor_names(path: Path, inputs: Sequence[str], outputs: Sequence[str],
                       meta: ArtifactMeta, fix: str) -> None:
    """Refuse a model (an ONNX session, a TensorRT network or engine) whose input tensors are
    not the metadata's, in any order, or whose outputs lack one of the metadata's (one per
    head, paper §5): a ModelFormatError that ends with ``fix``."""
    if sorted(inputs) != sorted(meta.input_names) or not set(meta.output_names) <= set(outputs):
        raise ModelFormatError(f"{path} has inputs {list(inputs)} and outputs {list(outputs)}, "
                               f"but its metadata says {', '.join(meta.input_names)} → "
                               f"{', '.join(meta.output_names)}: {fix}")


def check_outputs(meta: ArtifactMeta, outputs: Mapping[str, Any], path: Path,
                  fix: str = EXPORT_AGAIN) -> None:
    """Refuse outputs that do not fit the metadata's classes: logits whose channels are not
    their head's class count, labels at or past it. An argmax artifact whose metadata lists
    fewer classes than the model predicts would otherwise hand out labels without a name
    (item 2 of the reliability issue); a labels map costs one ``max`` to check."""
    for name, classes, _ in meta.output_tensors():
        if name not in outputs:
            continue  # a missing output is the caller's error to name
        output = np.asarray(outputs[name])
        if meta.argmax:
            seen = int(output.max()) if output.size else 0
            if seen >= classes:
                raise _mismatch(meta, name, path, f"gave label {seen}", fix)
        elif output.ndim != 4 or output.shape[1] != classes:
            raise _mismatch(meta, name, path, f"gave logits of shape {output.shape}", fix)


def check_channels(meta: ArtifactMeta, channels: Mapping[str, Any], path: Path,
                   fix: str = EXPORT_AGAIN) -> bool:
    """Hold each logits output's channel count, as the graph states it (``channels``: output
    → an int, or anything else where it is dynamic or unknown), to its head's classes; True
    when every output was checked this way, False when a probe run must tell."""
    if meta.argmax:
        return False
    checked = True
    for name, classes, _ in meta.output_tensors():
        count = channels.get(name)
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            if count != classes:
                raise _mismatch(meta, name, path, f"has {count} channels", fix)
        else:
            checked = False
    return checked


def probe_feed(specs: Mapping[str, InputSpec], shapes: Shapes,
               multiple: int = 1) -> dict[str, np.ndarray]:
    """A small batch for every input, at the smallest size ``shapes`` allows (a multiple of
    ``multiple``): seeded noise, which shows a model more of its classes than a flat frame."""
    h, w = fit_size(*shapes.min[1:], shapes.min[1:], shapes.max[1:], multiple)
    rng = np.random.default_rng(0)
    feed = {}
    for name, spec in specs.items():
        shape = spec.tensor_shape(shapes.min[0], h, w)
        feed[name] = (rng.integers(0, 256, shape, np.uint8) if spec.dtype == np.uint8
                      else rng.standard_normal(shape, np.float32))
    return feed


def _mismatch(meta: ArtifactMeta, output: str, path: Path, what: str,
              fix: str) -> ModelFormatError:
    heads = {h.output: h for h in meta.heads}
    head = heads.get(output)
    classes = head.classes if head else meta.classes
    shown = ", ".join(classes[:4]) + (", …" if len(classes) > 4 else "")
    task = f" (task {head.task!r})" if head else ""
    return ModelFormatError(f"{path}: output '{output}'{task} {what} but its metadata lists "
                            f"{len(classes)} classes ({shown}): the metadata does not match "
                            f"the model; {fix}")


@dataclass
class CallTimes:
    """The ``run`` calls one thread made on a backend since it last asked: how many, when the
    first began and the last ended (``time.perf_counter`` seconds), and the seconds inside."""

    calls: int = 0
    first_start: float = 0.0
    last_end: float = 0.0
    seconds: float = 0.0

    def add(self, start: float, end: float) -> None:
        if not self.calls:
            self.first_start = start
        self.calls += 1
        self.last_end = end
        self.seconds += end - start


@runtime_checkable
class Backend(Protocol):
    """An open artifact that runs inference. See the module docstring."""

    name: str                # e.g. "onnxruntime:cpu", "tensorrt", "torch:cuda"
    meta: ArtifactMeta
    input_spec: InputSpec    # the first input's (the RGB input, where there is one)
    thread_safe: bool
    reason: str              # why ``open_backend`` chose it ("" when asked for by name)

    @property
    def input_specs(self) -> dict[str, InputSpec]: ...

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str: ...

    def take_call_times(self) -> CallTimes: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc: Any) -> None: ...


class BackendBase:
    """What every fcn-edge backend shares: the checked, timed call (:meth:`run`, and
    :meth:`infer` for one input and one output), context management, closing and a
    description. A backend sets ``path``, ``meta`` and ``input_spec`` and implements
    :meth:`_run`."""

    name = "backend"
    thread_safe = True
    reason = ""
    #: What to do about an artifact whose metadata does not match its model.
    remake = EXPORT_AGAIN
    path: Path
    meta: ArtifactMeta
    input_spec: InputSpec
    _closed = False

    @property
    def input_specs(self) -> dict[str, InputSpec]:
        """Every input's spec, by name, in the model's order; all share ``input_spec``'s
        profile (one optimisation profile bounds every input alike)."""
        specs = self.__dict__.get("_input_specs")
        if specs is None or next(iter(specs.values())).profile != self.input_spec.profile:
            specs = self.__dict__["_input_specs"] = input_specs(self.meta,
                                                                self.input_spec.profile)
        return specs

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output, by tensor name, for ``feed`` (input tensor name → batch).

        Refuses a closed backend and a feed that does not fit :attr:`input_specs` (an
        InputError naming the input), then runs :meth:`_run` and notes the call's start and
        end for :meth:`take_call_times`.
        """
        self._check_open()
        check_feed(self.input_specs, feed)
        started = time.perf_counter()
        outputs = self._run(feed)
        self._thread_call_times().add(started, time.perf_counter())
        check_outputs(self.meta, outputs, self.path, self.remake)
        return outputs

    def check_classes(self, channels: Mapping[str, Any] | None = None) -> None:
        """Hold the metadata's classes to the model when it opens: each logits output's
        channels where the graph states them (``channels``: output → count), else — argmax
        labels, dynamic channels — one probe run at the smallest allowed size. A probe can
        miss a label the model gives only to real frames: :meth:`run` checks every output."""
        if check_channels(self.meta, channels or {}, self.path, self.remake):
            return
        shapes = self.input_spec.profile or self.meta.shapes
        feed = probe_feed(self.input_specs, shapes, self.meta.size_multiple)
        check_outputs(self.meta, self._run(feed), self.path, self.remake)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The one output for a batch of the one input (``run`` for several)."""
        inputs, outputs = self.meta.input_names, self.meta.output_names
        if len(inputs) > 1 or len(outputs) > 1:
            raise InputError(f"{self.path.name} takes {len(inputs)} input(s) "
                             f"({', '.join(inputs)}) and gives {len(outputs)} output(s) "
                             f"({', '.join(outputs)}); infer handles one of each: use "
                             f"run(feed) with a dict of inputs, or a Segmenter")
        return self.run({self.input_spec.name: batch})[self.meta.output_name]

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The backend's own inference on a feed :meth:`run` has checked: every output of
        the metadata, by name."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _run")

    def take_call_times(self) -> CallTimes:
        """The :meth:`run` calls the calling thread made since it last asked; counting
        starts again. Fixed size however long nobody asks."""
        times = self._thread_call_times()
        self._thread_local().times = CallTimes()
        return times

    def _thread_call_times(self) -> CallTimes:
        local = self._thread_local()
        if not hasattr(local, "times"):
            local.times = CallTimes()
        return local.times

    def _thread_local(self) -> threading.local:
        # Made on first use: subclasses need not call an __init__ here (test stand-ins don't).
        return self.__dict__.setdefault("_call_times", threading.local())

    def describe(self) -> str:
        return f"{self.name} running {self.path}"

    def close(self) -> None:
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise FcnEdgeError(f"the {self.name} backend for {self.path} is closed")

    def __enter__(self) -> "BackendBase":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = ", closed" if self._closed else ""
        return f"<{type(self).__name__} {self.name} {self.path.name}{state}>"
