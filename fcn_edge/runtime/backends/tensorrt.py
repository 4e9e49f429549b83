"""Native TensorRT backend: an fcn-edge engine file run on a CUDA stream.

Opening checks before it trusts: the engine file's header is read and held against this
machine's TensorRT release and GPU (:func:`~fcn_edge.runtime.engine_file.check_engine_compatible`)
*before* the plan goes to ``deserialize_cuda_engine`` — a plan from another release does not
load, and one tuned for another GPU must not run — so a stale engine fails with one message
naming both machines and the command that rebuilds it. Then an execution context is created and
every input's optimisation profile read with ``get_tensor_profile_shape`` (they must agree:
the inputs of one model share N×H×W).

Each ``run`` (``infer`` for one input and output; the base class checks the feed first):
``set_input_shape`` for every input (inside
the profile), the output shapes from the context, pinned host and device buffers per tensor
(grown on demand, or sized for the profile maximum with ``preallocate=True``), each input →
its pinned buffer, ``cudaMemcpyAsync`` to the device, ``set_tensor_address`` for every input
and output (paper §5 models: RGB + depth in, one output per head), ``execute_async_v3`` on the
backend's stream, every output back into pinned memory, ``cudaStreamSynchronize``, and one copy
out of each pinned output buffer (the next call reuses it). Host copies: two per tensor (into
or out of pinned memory and out to the caller), plus one DMA transfer per tensor.

Which tensors are inputs and outputs, whether they match the metadata, the profile they share
and the shapes to reserve are decided by plain functions (:func:`check_io`,
:func:`common_profile`, :func:`profile_shapes`), testable without TensorRT.

Not thread-safe: an execution context holds one inference's shapes and addresses, so callers
serialise ``run`` (Segmenter does); for parallel inference open one backend per thread — each
has its own context, stream and buffers.

CUDA through cuda-python (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6), else pycuda
(``cuda.py``). TensorRT logs through one process-wide logger (:func:`tensorrt_logger`), shared
with the engine builder.
"""
from __future__ import annotations

import importlib.metadata as md
import threading
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ...errors import BackendUnavailable, FcnEdgeError, InputError, ModelFormatError
from ..engine_file import (check_engine_compatible, engine_dla_core, engine_meta, read_engine,
                           read_engine_header)
from ..metadata import ArtifactMeta, Shapes
from .base import BackendBase, InputSpec, check_tensor_names, input_specs
from .cuda import _Buffer, _open_cuda, query_gpu
from .cuda import _CudaRuntime  # noqa: F401 — here for tests that stand in for cuda-python
from .optional import TRT_EXTRA, lazy_import
from .optional import has_module as _has_module

_ALIGN = 1 << 20  # grow buffers in whole MiB: fewer reallocations as sizes creep up
_LOGGER_LOCK = threading.Lock()
_LOGGER: tuple[Any, Any] | None = None  # (the tensorrt module, its one Logger)


def tensorrt_logger(trt: Any) -> Any:
    """The process's one ``trt.Logger``, created on first use; every Builder and Runtime,
    here and in ``fcn-edge build``, takes this one.

    TensorRT "maintains only a single logger pointer at any given time": a second logger is
    ignored, with a warning, while any Builder or Runtime made with the first lives
    (NVIDIA/TensorRT#1475; the ``tensorrt.Logger`` docs call it a singleton). So this is the one
    piece of global state here, made under a lock so two threads opening backends at once
    cannot make two, and its first severity is the one that counts. WARNING: a build's warnings
    (fallbacks, precision) are worth seeing and a runtime prints few; whoever wants another
    level sets ``tensorrt_logger(trt).min_severity`` (a read/write property, as Polygraphy's
    ``get_trt_logger().min_severity`` does), for the whole process. Keyed by the module object,
    so a test's stand-in module gets its own logger; a real process has one ``tensorrt``.
    """
    global _LOGGER
    with _LOGGER_LOCK:
        if _LOGGER is None or _LOGGER[0] is not trt:
            _LOGGER = (trt, trt.Logger(trt.Logger.WARNING))
        return _LOGGER[1]


def probe(path: str | Path | None = None, device_id: int = 0) -> tuple[bool, str]:
    """Whether TensorRT, CUDA bindings and GPU ``device_id`` (the one the backend will open)
    are here; given an engine, a ModelFormatError when it was built for another TensorRT
    release or GPU (no backend can run that file)."""
    if not _has_module("tensorrt"):
        return False, f"TensorRT is not installed: {TRT_EXTRA}"
    if not any(_has_module(m) for m in ("cuda.bindings", "cuda.cudart", "pycuda")):
        return False, f"TensorRT needs CUDA bindings (cuda-python or pycuda): {TRT_EXTRA}"
    version = _tensorrt_version()
    try:
        gpu = query_gpu(device_id)
    except BackendUnavailable as exc:
        return False, str(exc)
    if path is not None:
        check_engine_compatible(read_engine_header(path), version, *gpu)
    return True, f"TensorRT {version} on {gpu[0]}"


class TensorRTBackend(BackendBase):
    """An fcn-edge engine file (``.engine``/``.plan`` written by ``fcn-edge build``).

    Args:
        path: the engine file.
        device_id: the GPU to run on (the engine must have been built for its model).
        preallocate: size the buffers for the profile's maximum at once instead of growing
            them with the frames (no allocation while running, more memory held).
    """

    name = "tensorrt"
    thread_safe = False
    remake = "export it again with `fcn-edge export` and rebuild it with `fcn-edge build`"

    def __init__(self, path: str | Path, *, device_id: int = 0,
                 preallocate: bool = False) -> None:
        self.path = Path(path)
        header = read_engine_header(self.path)  # refuses anything but an fcn-edge engine
        self.meta = engine_meta(header, path)
        trt = _import_tensorrt()
        self._cuda = _open_cuda(device_id)
        self._buffers: dict[str, _Buffer] = {}
        self._stream = None
        self._version = trt.__version__
        try:
            with self._cuda.active():
                check_engine_compatible(header, trt.__version__, *query_gpu(device_id))
                _, plan = read_engine(self.path)  # the plan, its length checked too
                self._open(trt, plan, engine_dla_core(header, path))
                if preallocate:
                    self._reserve(self.input_spec.profile.max)
                self.check_classes({out: _channels(self._engine.get_tensor_shape(out))
                                    for out in self._outputs})
        except BaseException:
            self.__del__()  # free whatever was allocated before the failure, quietly
            raise

    def _open(self, trt: Any, plan: bytes, dla_core: int | None = None) -> None:
        self._runtime = trt.Runtime(tensorrt_logger(trt))
        if dla_core is not None:
            # A DLA engine runs on the core the runtime names, so it is set before deserialising
            # (IRuntime::setDLACore: "the DLA core that the deserialized engine must execute
            # on", TensorRT 8.2.5 C++ API; trtexec does the same, samples/common/
            # sampleEngines.cpp, NVIDIA/TensorRT release/10.3 5b990f0a; Python: Runtime.DLA_core).
            self._runtime.DLA_core = dla_core
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ModelFormatError(f"TensorRT {trt.__version__} could not deserialise {self.path} "
                                   f"(see its messages above): rebuild it with `fcn-edge build "
                                   f"MODEL.onnx`")
        self._dtypes, self._outputs = check_io(_engine_io(trt, self._engine), self.meta,
                                               self.path)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailable(f"TensorRT could not create an execution context for "
                                     f"{self.path} (out of GPU memory?)")
        profiles = {name: _tensor_profile(self._engine, spec)
                    for name, spec in input_specs(self.meta).items()}
        self.input_spec = InputSpec.for_meta(self.meta, common_profile(profiles, self.path))
        self._stream = self._cuda.stream()

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for ``feed`` (input name → batch). Not thread-safe."""
        with self._cuda.active():
            for name in self.input_specs:
                if not self._context.set_input_shape(name, tuple(feed[name].shape)):
                    raise InputError(f"TensorRT refused shape {feed[name].shape} for '{name}' "
                                     f"of {self.path} (profile {self.input_spec.profile})")
            shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in self._outputs}
            for name in self.input_specs:
                batch = feed[name]
                source = self._buffer(name, batch.nbytes)
                np.copyto(source.view(batch.dtype, batch.shape), batch)  # into pinned memory
                self._cuda.htod(source, batch.nbytes, self._stream)
                self._context.set_tensor_address(name, source.device)
            for out, shape in shapes.items():
                self._context.set_tensor_address(out, self._buffer(out, self._nbytes(out, shape))
                                                 .device)
            self._execute()
            for out, shape in shapes.items():
                self._cuda.dtoh(self._buffers[out], self._nbytes(out, shape), self._stream)
            self._cuda.sync(self._stream)
            return {out: self._buffers[out].view(self._dtypes[out], shapes[out]).copy()
                    for out in self.meta.output_names}

    def _execute(self) -> None:
        if not self._context.execute_async_v3(self._cuda.handle(self._stream)):
            self._cuda.sync(self._stream)  # leave nothing in flight on the buffers
            raise FcnEdgeError(f"TensorRT failed to run {self.path} (see its messages above)")

    def _nbytes(self, name: str, shape: tuple[int, ...]) -> int:
        return int(np.prod(shape, dtype=np.int64)) * self._dtypes[name].itemsize

    def _buffer(self, name: str, nbytes: int) -> "_Buffer":
        """The tensor's pinned + device buffer, reallocated larger when ``nbytes`` outgrows it."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.capacity < nbytes:
            if buffer is not None:  # nothing is in flight: every infer ends synchronised
                self._cuda.free(self._buffers.pop(name))
            size = -(-max(nbytes, 1) // _ALIGN) * _ALIGN
            buffer = self._buffers[name] = self._cuda.alloc(size, name)
        return buffer

    def _reserve(self, dims: tuple[int, int, int]) -> None:
        for name, shape in profile_shapes(self.input_specs, dims).items():
            self._context.set_input_shape(name, shape)
            self._buffer(name, self._nbytes(name, shape))
        for out in self._outputs:
            self._buffer(out, self._nbytes(out, tuple(self._context.get_tensor_shape(out))))

    def describe(self) -> str:
        return (f"TensorRT {self._version}, profile {self.input_spec.profile}, "
                f"{self.meta.precision} {self.path.name}")

    def close(self) -> None:
        if self._closed or not hasattr(self, "_cuda"):
            return
        with self._cuda.active():
            for buffer in self._buffers.values():
                self._cuda.free(buffer)
            self._buffers.clear()
            if self._stream is not None:
                self._cuda.destroy_stream(self._stream)
            # The context before the engine before the runtime: each needs the next one.
            for attr in ("_context", "_engine", "_runtime"):
                if hasattr(self, attr):
                    delattr(self, attr)
        super().close()

    def __del__(self) -> None:  # pinned memory outlives a forgotten backend otherwise
        try:
            self.close()
        except Exception:  # noqa: BLE001 — never raise from a finaliser
            pass


def _tensor_profile(engine: Any, spec: InputSpec) -> Shapes:
    """An input's optimisation profile 0 as (batch, height, width) triples."""
    lo, opt, hi = engine.get_tensor_profile_shape(spec.name, 0)
    return Shapes(*(spec.dims(tuple(int(d) for d in dims)) for dims in (lo, opt, hi)))


def _channels(dims: Any) -> int | None:
    """An output's channel count from its engine shape (None unless N×C×H×W; -1: dynamic)."""
    dims = tuple(dims)
    return int(dims[1]) if len(dims) == 4 else None


def _engine_io(trt: Any, engine: Any) -> list[tuple[str, bool, np.dtype]]:
    """``(name, is_input, numpy dtype)`` of every I/O tensor, in the engine's order."""
    io = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        io.append((name, engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT,
                   np.dtype(trt.nptype(engine.get_tensor_dtype(name)))))
    return io


def check_io(io: Sequence[tuple[str, bool, np.dtype]], meta: ArtifactMeta,
             path: Path) -> tuple[dict[str, np.dtype], list[str]]:
    """Every tensor's dtype and the outputs to bind, from the engine's ``(name, is_input,
    dtype)`` list; a ModelFormatError unless its inputs are the metadata's (names and dtypes)
    and its outputs include the metadata's (one per head, paper §5)."""
    dtypes = {name: np.dtype(dtype) for name, _, dtype in io}
    inputs = [name for name, is_input, _ in io if is_input]
    outputs = [name for name, is_input, _ in io if not is_input]
    check_tensor_names(path, inputs, outputs, meta, "rebuild it with `fcn-edge build`")
    for name, spec in input_specs(meta).items():
        if dtypes[name] != spec.dtype:
            raise ModelFormatError(f"{path} takes {dtypes[name]} '{name}'; fcn-edge engines "
                                   f"take {spec.dtype}: rebuild it with `fcn-edge build`")
    return dtypes, outputs


def common_profile(profiles: Mapping[str, Shapes], path: Path) -> Shapes:
    """The one (batch, height, width) profile every input shares; a ModelFormatError when the
    inputs' profiles differ (a model's modalities come at one size: fcn-edge builds them so)."""
    distinct = set(profiles.values())
    if len(distinct) != 1:
        shown = "; ".join(f"{name} {shapes}" for name, shapes in profiles.items())
        raise ModelFormatError(f"{path}: the inputs' optimisation profiles differ ({shown}); "
                               f"every input must share N×H×W: rebuild it with `fcn-edge build`")
    return distinct.pop()


def profile_shapes(specs: Mapping[str, InputSpec],
                   dims: tuple[int, int, int]) -> dict[str, tuple[int, ...]]:
    """Each input's full tensor shape at (batch, height, width) ``dims``: what
    ``set_input_shape`` takes (e.g. images 1×3×H×W and depth 1×1×H×W)."""
    return {name: spec.tensor_shape(*dims) for name, spec in specs.items()}


def _import_tensorrt() -> Any:
    return lazy_import("tensorrt", "running TensorRT engines needs TensorRT ({exc}): "
                                   + TRT_EXTRA)


def installed_tensorrt_version() -> str | None:
    """The installed TensorRT's version: pip's metadata (any of its wheels), else the module's
    own (JetPack installs it with apt, a tarball by hand); None when there is none."""
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-lean"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    try:
        import tensorrt
        return str(tensorrt.__version__)
    except (ImportError, OSError, AttributeError):  # OSError: the module is there, libnvinfer not
        return None


def _tensorrt_version() -> str:
    return installed_tensorrt_version() or _import_tensorrt().__version__
