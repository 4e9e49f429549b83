"""CUDA for the native TensorRT backend: pinned host + device buffers, a stream, copies.

Two bindings behind one small interface: cuda-python's runtime API (``cuda.bindings.runtime``;
``cuda.cudart`` before 12.6), else pycuda on the device's primary context, which TensorRT's
runtime API also uses. Imported only when a TensorRT backend opens.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any, Iterator

import numpy as np

from ...errors import BackendUnavailable, FcnEdgeError
from ...export.engine_file import TRT_EXTRA


def has_module(name: str) -> bool:
    """Whether ``name`` is importable, without importing it."""
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing or half-installed
        return False


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
    if not has_module("pycuda"):
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
