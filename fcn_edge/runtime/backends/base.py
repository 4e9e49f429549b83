"""The ``Backend`` protocol: one small interface in front of every inference engine.

Modelled on Polygraphy's runners: a backend is opened on an artifact, is a context manager,
says what it takes (:class:`InputSpec`) and what it is (``name``, ``meta``, ``describe()``),
and ``infer(batch)`` returns the artifact's one output — N×C×H×W float32 logits, or N×H×W
labels for argmax artifacts — for a batch laid out as ``input_spec`` says. Pre- and
post-processing (frames → input, logits → labels, resizing) are not a backend's business:
:class:`~fcn_edge.runtime.segmenter.Segmenter` does them once, for every backend alike.

Threads: a backend with ``thread_safe = True`` may have ``infer`` called from several threads at
once (ONNX Runtime sessions allow concurrent ``run``). One with ``thread_safe = False`` keeps
one inference's state between calls (a TensorRT execution context and its bound buffers, a
captured CUDA graph's static tensors): its callers must serialise ``infer``, as the Segmenter
does with one lock.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ...errors import FcnEdgeError, InputError
from ..metadata import ArtifactMeta, Shapes

#: Layouts of the two input kinds: normalised images and raw OpenCV frames (see metadata.py).
NCHW, NHWC = "NCHW", "NHWC"


@dataclass(frozen=True)
class InputSpec:
    """What ``infer`` takes.

    Attributes:
        name: the input tensor's name (``images`` or ``frames``).
        layout: ``NCHW`` (normalised float32 images) or ``NHWC`` (uint8 BGR frames).
        dtype: float32 or uint8.
        profile: hard (batch, height, width) bounds, as a TensorRT optimisation profile sets
            them; None when any size runs.
    """

    name: str
    layout: str
    dtype: np.dtype
    profile: Shapes | None = None

    @classmethod
    def for_meta(cls, meta: ArtifactMeta, profile: Shapes | None = None) -> "InputSpec":
        """The spec an artifact's metadata implies."""
        if meta.raw_io:
            return cls(meta.input_name, NHWC, np.dtype(np.uint8), profile)
        return cls(meta.input_name, NCHW, np.dtype(np.float32), profile)

    def dims(self, batch_shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(batch, height, width) of a batch of this layout."""
        if self.layout == NHWC:
            return batch_shape[0], batch_shape[1], batch_shape[2]
        return batch_shape[0], batch_shape[2], batch_shape[3]

    def tensor_shape(self, n: int, h: int, w: int) -> tuple[int, int, int, int]:
        return (n, h, w, 3) if self.layout == NHWC else (n, 3, h, w)

    def check(self, batch: np.ndarray) -> None:
        """Refuse a batch of the wrong dtype, rank, channel count or size with an InputError."""
        if not isinstance(batch, np.ndarray) or batch.dtype != self.dtype or batch.ndim != 4:
            got = f"{batch.dtype} {batch.shape}" if isinstance(batch, np.ndarray) else type(batch)
            raise InputError(f"'{self.name}' takes a 4-D {self.dtype} {self.layout} batch, "
                             f"got {got}")
        channels = batch.shape[3] if self.layout == NHWC else batch.shape[1]
        if channels != 3 or batch.size == 0:
            raise InputError(f"'{self.name}' takes 3 channels ({self.layout}) and a non-empty "
                             f"batch, got shape {batch.shape}")
        if self.profile is not None and not self.profile.covers(*self.dims(batch.shape)):
            n, h, w = self.dims(batch.shape)
            raise InputError(f"batch {n}×{h}×{w} is outside the profile {self.profile} "
                             f"(N×H×W min:opt:max); Segmenter resizes frames into it")


@runtime_checkable
class Backend(Protocol):
    """An open artifact that runs inference. See the module docstring."""

    name: str                # e.g. "onnxruntime:cpu", "tensorrt", "torch:cuda"
    meta: ArtifactMeta
    input_spec: InputSpec
    thread_safe: bool
    reason: str              # why ``open_backend`` chose it ("" when asked for by name)

    def infer(self, batch: np.ndarray) -> np.ndarray: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Backend": ...

    def __exit__(self, *exc: Any) -> None: ...


class BackendBase:
    """What every fcn-edge backend shares: context management, closing, a description."""

    name = "backend"
    thread_safe = True
    reason = ""
    path: Path
    meta: ArtifactMeta
    input_spec: InputSpec
    _closed = False

    def infer(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError

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
