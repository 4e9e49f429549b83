"""Native TensorRT backend: an fcn-edge engine file run on a CUDA stream.

Opening checks before it trusts: the engine file's header is read and held against this
machine's TensorRT release and GPU (:func:`~fcn_edge.export.engine_file.check_engine_compatible`)
*before* the plan goes to ``deserialize_cuda_engine`` — a plan from another release does not
load, and one tuned for another GPU must not run — so a stale engine fails with one message
naming both machines and the command that rebuilds it. Then an execution context is created and
the input's optimisation profile read with ``get_tensor_profile_shape``.

Each ``infer``: ``set_input_shape`` (inside the profile), the output shapes from the context,
pinned host and device buffers per tensor (grown on demand, or sized for the profile maximum
with ``preallocate=True``), input → pinned buffer, ``cudaMemcpyAsync`` to the device,
``set_tensor_address``, ``execute_async_v3`` on the backend's stream, the output back into pinned
memory, ``cudaStreamSynchronize``, and one copy out of the pinned buffer (the next call reuses
it). Host copies: two (into and out of pinned memory), plus the two DMA transfers.

Not thread-safe: an execution context holds one inference's shapes and addresses, so callers
serialise ``infer`` (Segmenter does); for parallel inference open one backend per thread — each
has its own context, stream and buffers.

CUDA through cuda-python (``cuda.bindings.runtime``; ``cuda.cudart`` before 12.6), else pycuda.
"""
from __future__ import annotations

import ctypes
import importlib.metadata as md
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ...errors import BackendUnavailable, FcnEdgeError, InputError, ModelFormatError
from ...export.engine_file import (TRT_EXTRA, check_engine_compatible, engine_meta, query_gpu,
                                   read_engine, read_engine_header)
from ..metadata import ArtifactMeta, Shapes
from .base import BackendBase, InputSpec

_ALIGN = 1 << 20  # grow buffers in whole MiB: fewer reallocations as sizes creep up


def probe(path: str | Path | None = None) -> tuple[bool, str]:
    """Whether TensorRT, CUDA bindings and a GPU are here; given an engine, a ModelFormatError
    when it was built for another TensorRT release or GPU (no backend can run that file)."""
    if not _has_module("tensorrt"):
        return False, f"TensorRT is not installed: {TRT_EXTRA}"
    if not any(_has_module(m) for m in ("cuda.bindings", "cuda.cudart", "pycuda")):
        return False, f"TensorRT needs CUDA bindings (cuda-python or pycuda): {TRT_EXTRA}"
    version = _tensorrt_version()
    try:
        gpu = query_gpu()
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

    def __init__(self, path: str | Path, *, device_id: int = 0,
                 preallocate: bool = False) -> None:
        self.path = Path(path)
        header = read_engine_header(self.path)  # refuses anything but an fcn-edge engine
        self.meta = engine_meta(header)
        trt = _import_tensorrt()
        self._cuda = _open_cuda(device_id)
        self._buffers: dict[str, _Buffer] = {}
        self._stream = None
        self._version = trt.__version__
        try:
            with self._cuda.active():
                check_engine_compatible(header, trt.__version__, *query_gpu())
                _, plan = read_engine(self.path)  # the plan, its length checked too
                self._open(trt, plan)
                if preallocate:
                    self._reserve(self.input_spec.profile.max)
        except BaseException:
            self.__del__()  # free whatever was allocated before the failure, quietly
            raise

    def _open(self, trt: Any, plan: bytes) -> None:
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.ERROR))
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise ModelFormatError(f"TensorRT {trt.__version__} could not deserialise {self.path} "
                                   f"(see its messages above): rebuild it with `fcn-edge build "
                                   f"MODEL.onnx`")
        self._dtypes, self._outputs = _io_tensors(trt, self._engine, self.meta, self.path)
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendUnavailable(f"TensorRT could not create an execution context for "
                                     f"{self.path} (out of GPU memory?)")
        self.input_spec = InputSpec.for_meta(self.meta, _profile(self._engine, self.meta))
        self._stream = self._cuda.stream()

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """The engine's output for ``batch``. Not thread-safe: serialise calls."""
        self._check_open()
        self.input_spec.check(batch)
        name = self.meta.input_name
        with self._cuda.active():
            if not self._context.set_input_shape(name, tuple(batch.shape)):
                raise InputError(f"TensorRT refused input shape {batch.shape} for {self.path} "
                                 f"(profile {self.input_spec.profile})")
            shapes = {n: tuple(self._context.get_tensor_shape(n)) for n in self._outputs}
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
            result = self.meta.output_name
            return self._buffers[result].view(self._dtypes[result], shapes[result]).copy()

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
        name = self.meta.input_name
        shape = self.input_spec.tensor_shape(*dims)
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


def _profile(engine: Any, meta: ArtifactMeta) -> Shapes:
    """The input's optimisation profile 0 as (batch, height, width) triples."""
    spec = InputSpec.for_meta(meta)
    lo, opt, hi = engine.get_tensor_profile_shape(meta.input_name, 0)
    return Shapes(*(spec.dims(tuple(int(d) for d in dims)) for dims in (lo, opt, hi)))


def _io_tensors(trt: Any, engine: Any, meta: ArtifactMeta,
                path: Path) -> tuple[dict[str, np.dtype], list[str]]:
    """Every I/O tensor's numpy dtype, and the output names; checked against the metadata."""
    dtypes, inputs, outputs = {}, [], []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtypes[name] = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        (inputs if is_input else outputs).append(name)
    if inputs != [meta.input_name] or meta.output_name not in outputs:
        raise ModelFormatError(f"{path} has inputs {inputs} and outputs {outputs}, but its "
                               f"header says '{meta.input_name}' → '{meta.output_name}'")
    expected = InputSpec.for_meta(meta).dtype
    if dtypes[meta.input_name] != expected:
        raise ModelFormatError(f"{path} takes {dtypes[meta.input_name]} '{meta.input_name}'; "
                               f"fcn-edge engines take {expected}: rebuild it with `fcn-edge "
                               f"build`")
    return dtypes, outputs


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the wheel is there, libnvinfer is not
        raise BackendUnavailable(f"running TensorRT engines needs TensorRT ({exc}): "
                                 f"{TRT_EXTRA}") from None
    return tensorrt


def _has_module(name: str) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing or half-installed
        return False


def _tensorrt_version() -> str:
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11"):
        try:
            return md.version(dist)
        except md.PackageNotFoundError:
            continue
    return _import_tensorrt().__version__  # installed outside pip (JetPack, tarball)


# --- CUDA: pinned and device buffers, a stream ----------------------------------------------

@dataclass
class _Buffer:
    host: np.ndarray   # pinned, ``capacity`` bytes
    device: int        # device address
    capacity: int
    token: Any         # what the CUDA binding needs to free it

    def view(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return self.host[:nbytes].view(dtype).reshape(shape)


def _open_cuda(device_id: int) -> Any:
    try:
        from cuda.bindings import runtime  # cuda-python ≥ 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python
        except ImportError:
            runtime = None
    if runtime is not None:
        return _CudaRuntime(runtime, device_id)
    if not _has_module("pycuda"):
        raise BackendUnavailable(f"TensorRT needs CUDA bindings (cuda-python or pycuda): "
                                 f"{TRT_EXTRA}")
    return _PyCuda(device_id)


class _CudaRuntime:
    """The CUDA runtime API through cuda-python; every call returns ``(error, *values)``."""

    def __init__(self, runtime: Any, device_id: int) -> None:
        self._rt, self._device = runtime, device_id
        try:
            self._call(runtime.cudaSetDevice(device_id), f"selecting GPU {device_id}")
        except FcnEdgeError as exc:
            raise BackendUnavailable(f"no usable CUDA GPU for TensorRT: {exc}") from None

    def _call(self, result: Any, what: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            name = self._rt.cudaGetErrorName(err)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
            raise FcnEdgeError(f"CUDA failed {what}: {name}")
        return values[0] if len(values) == 1 else None

    @contextmanager
    def active(self) -> Iterator[None]:
        # The current device is per host thread: set it on whichever thread calls.
        self._call(self._rt.cudaSetDevice(self._device), "selecting the GPU")
        yield

    def alloc(self, nbytes: int, name: str) -> _Buffer:
        what = f"allocating {nbytes / 2**20:.0f} MiB for '{name}'"
        host_ptr = self._call(self._rt.cudaMallocHost(nbytes), what + " (pinned)")
        try:
            device = self._call(self._rt.cudaMalloc(nbytes), what)
        except FcnEdgeError:
            self._rt.cudaFreeHost(host_ptr)
            raise
        host = np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(int(host_ptr)))
        return _Buffer(host, int(device), nbytes, host_ptr)

    def free(self, buffer: _Buffer) -> None:
        self._rt.cudaFree(buffer.device)
        self._rt.cudaFreeHost(buffer.token)

    def stream(self) -> Any:
        return self._call(self._rt.cudaStreamCreate(), "creating a stream")

    def handle(self, stream: Any) -> int:
        return int(stream)

    def htod(self, buffer: _Buffer, nbytes: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        self._call(self._rt.cudaMemcpyAsync(buffer.device, buffer.token, nbytes, kind, stream),
                   "copying the input to the GPU")

    def dtoh(self, buffer: _Buffer, nbytes: int, stream: Any) -> None:
        kind = self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        self._call(self._rt.cudaMemcpyAsync(buffer.token, buffer.device, nbytes, kind, stream),
                   "copying the output from the GPU")

    def sync(self, stream: Any) -> None:
        self._call(self._rt.cudaStreamSynchronize(stream), "running the stream")

    def destroy_stream(self, stream: Any) -> None:
        self._rt.cudaStreamDestroy(stream)


class _PyCuda:
    """pycuda on the device's primary context, which TensorRT's runtime API also uses."""

    def __init__(self, device_id: int) -> None:
        import pycuda.driver as cuda

        try:
            cuda.init()
            self._context = cuda.Device(device_id).retain_primary_context()
        except cuda.Error as exc:
            raise BackendUnavailable(f"no usable CUDA GPU for TensorRT: {exc}") from None
        self._cuda = cuda

    @contextmanager
    def active(self) -> Iterator[None]:
        self._context.push()  # a pycuda context is current per thread: push on the caller's
        try:
            yield
        finally:
            self._cuda.Context.pop()

    def alloc(self, nbytes: int, name: str) -> _Buffer:
        try:
            host = self._cuda.pagelocked_empty(nbytes, np.uint8)
            device = self._cuda.mem_alloc(nbytes)
        except self._cuda.Error as exc:
            raise FcnEdgeError(f"CUDA failed allocating {nbytes / 2**20:.0f} MiB for "
                               f"'{name}': {exc}") from None
        return _Buffer(host, int(device), nbytes, device)

    def free(self, buffer: _Buffer) -> None:
        buffer.token.free()  # the pinned array goes with its last reference

    def stream(self) -> Any:
        return self._cuda.Stream()

    def handle(self, stream: Any) -> int:
        return int(stream.handle)

    def htod(self, buffer: _Buffer, nbytes: int, stream: Any) -> None:
        self._cuda.memcpy_htod_async(buffer.device, buffer.host[:nbytes], stream)

    def dtoh(self, buffer: _Buffer, nbytes: int, stream: Any) -> None:
        self._cuda.memcpy_dtoh_async(buffer.host[:nbytes], buffer.device, stream)

    def sync(self, stream: Any) -> None:
        stream.synchronize()

    def destroy_stream(self, stream: Any) -> None:
        pass  # freed with its last reference
