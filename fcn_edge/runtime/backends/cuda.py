"""CUDA for the native TensorRT backend: pinned host + device buffers, a stream, copies.

Two bindings behind one small interface: cuda-python's runtime API (``cuda.bindings.runtime``;
``cuda.cudart`` before 12.6, removed in 13.0), else pycuda on the device's primary context, which
TensorRT's runtime API also uses. Imported only when a TensorRT backend opens.

cuda-python importing is not cuda-python working: cuda-bindings 13.x needs driver ≥ 580 and
answers ``cudaErrorInsufficientDriver`` to its first call on older drivers (JetPack 6, x86 boxes
on 525–579; checked with cuda-bindings 12.9.4 and 13.5.0 wheels on a machine without a driver:
both return error 35 rather than raise). So every use tries cuda-python, then pycuda, and only
when both fail says so, once, naming both errors (:func:`with_cuda_bindings`); the same for
:func:`query_gpu`, the GPU identity engine headers are checked against. Driver floors:
https://docs.nvidia.com/deploy/cuda-compatibility/minor-version-compatibility.html
(CUDA 12.x ≥ 525, CUDA 13.x ≥ 580).
"""
from __future__ import annotations

import ctypes
import importlib
import importlib.metadata as md
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import numpy as np

from ...errors import BackendUnavailable, FcnEdgeError
from .optional import TRT_EXTRA, has_module, lazy_import

T = TypeVar("T")
#: What to do when no binding reaches the GPU: the driver first, then the CUDA 12 pins.
#: (A Jetson's driver is its Jetson Linux release: R36 is JetPack 6, CUDA 12.)
CUDA_FIX = ("check the driver and the GPU index with `nvidia-smi` (on a Jetson: cat "
            "/etc/nv_tegra_release); cuda-python 13 needs driver ≥ 580.65, so on older drivers "
            "and on JetPack 6 install the CUDA 12 stack: pip install \"fcn-edge[trt]\" "
            "(cuda-python<13) or pip install pycuda")


@dataclass
class _Buffer:
    host: np.ndarray   # pinned, ``capacity`` bytes
    device: int        # device address
    capacity: int
    token: Any         # what the CUDA binding needs to free it

    def view(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        return self.host[:nbytes].view(dtype).reshape(shape)


def runtime_api() -> Any | None:
    """cuda-python's runtime API module, or None when cuda-python is not installed."""
    try:
        from cuda.bindings import runtime  # cuda-python ≥ 12.6
    except ImportError:
        try:
            from cuda import cudart as runtime  # older cuda-python
        except ImportError:
            return None
    return runtime


def with_cuda_bindings(what: str, using_runtime: Callable[[Any], T],
                       using_pycuda: Callable[[], T]) -> T:
    """``using_runtime(cuda-python's runtime module)``, else ``using_pycuda()``: the first that
    works. Each raises BackendUnavailable when its binding cannot reach the GPU; when none
    works, one BackendUnavailable names every binding's error and the fix."""
    failures: dict[str, str] = {}
    runtime = runtime_api()
    if runtime is not None:
        try:
            return using_runtime(runtime)
        except BackendUnavailable as exc:
            failures[_cuda_python_name()] = str(exc)
    if has_module("pycuda"):
        try:
            return using_pycuda()
        except BackendUnavailable as exc:
            failures["pycuda"] = str(exc)
    elif failures:
        failures["pycuda"] = "not installed"
    raise BackendUnavailable(no_cuda_message(what, failures))


def no_cuda_message(what: str, failures: dict[str, str]) -> str:
    """One line: why no CUDA binding could do ``what``, and what to do."""
    if not failures:
        return f"{what} needs CUDA bindings (cuda-python or pycuda): {TRT_EXTRA}"
    tried = "; ".join(f"{name}: {error}" for name, error in failures.items())
    return f"no usable CUDA GPU for {what} ({tried}): {CUDA_FIX}"


def _cuda_python_name() -> str:
    for dist in ("cuda-bindings", "cuda-python"):  # cuda-python ≥ 12.8 is a metapackage
        try:
            return f"{dist} {md.version(dist)}"
        except md.PackageNotFoundError:
            continue
    return "cuda-python"


def _runtime_error(runtime: Any, result: Any, what: str) -> Any:
    """The value of a cuda-python call returning ``(error, value)``; BackendUnavailable naming
    the error (e.g. ``cudaErrorInsufficientDriver selecting GPU 1``) when it failed."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != runtime.cudaError_t.cudaSuccess:
        raise BackendUnavailable(f"{_error_name(runtime, err)} {what}")
    return values[0] if values else None


def _error_name(runtime: Any, err: Any) -> str:
    try:
        name = runtime.cudaGetErrorName(err)[1]
    except Exception:  # noqa: BLE001 — the name is a courtesy; the code itself still tells
        return str(err)
    return name.decode() if isinstance(name, bytes) else str(name)


def _open_cuda(device_id: int) -> Any:
    """CUDA on GPU ``device_id`` through cuda-python, else pycuda."""
    return with_cuda_bindings(f"TensorRT on GPU {device_id}",
                              lambda runtime: _CudaRuntime(runtime, device_id),
                              lambda: _PyCuda(device_id))


def query_gpu(device_id: int | None = None) -> tuple[str, str]:
    """``(name, "major.minor")`` of CUDA device ``device_id`` (None: the calling thread's
    current device), through cuda-python, else pycuda: the GPU an engine must have been built
    for. Falls back to pycuda when cuda-python is missing *or* imports but cannot reach the GPU
    (cuda-python 13 on a driver older than 580); one BackendUnavailable naming both bindings'
    errors when neither works."""
    where = "the current GPU" if device_id is None else f"GPU {device_id}"
    return with_cuda_bindings(f"TensorRT on {where}",
                              lambda runtime: _runtime_identity(runtime, device_id),
                              lambda: _pycuda_identity(device_id))


def _runtime_identity(runtime: Any, device_id: int | None) -> tuple[str, str]:
    device = device_id
    if device is None:
        device = _runtime_error(runtime, runtime.cudaGetDevice(), "finding the current GPU")
    prop = _runtime_error(runtime, runtime.cudaGetDeviceProperties(device),
                          f"reading GPU {device}")
    name = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    return name.split("\0")[0].strip(), f"{prop.major}.{prop.minor}"


def _pycuda_identity(device_id: int | None) -> tuple[str, str]:
    cuda = _import_pycuda()
    try:
        cuda.init()
        if device_id is not None:
            device = cuda.Device(device_id)
        else:
            try:  # the device of the current context (the runtime's device_id), else device 0
                device = cuda.Context.get_device()
            except cuda.LogicError:
                device = cuda.Device(0)
        major, minor = device.compute_capability()
        return device.name().strip(), f"{major}.{minor}"
    except cuda.Error as exc:
        where = "the current GPU" if device_id is None else f"GPU {device_id}"
        raise BackendUnavailable(f"{exc} reading {where}") from None


def _native_handle_getter(runtime: Any) -> Callable[[Any], int]:
    """How to turn the binding's stream into the address TensorRT takes.

    ``int(stream)`` is deprecated since cuda-bindings 12.9.1/13.0.0 in favour of
    ``cuda.bindings.utils.get_cuda_native_handle`` (release notes:
    https://nvidia.github.io/cuda-python/cuda-bindings/latest/release/13.0.0-notes.html); older
    bindings have only ``int()`` (the fallback NVIDIA suggests in NVIDIA/numba-cuda#563).
    ``stream.getPtr()`` is *not* it: that is the address of the handle, not the handle.
    """
    package = getattr(runtime, "__package__", None)  # "cuda.bindings" for the real module
    if package:
        try:
            return importlib.import_module(f"{package}.utils").get_cuda_native_handle
        except (ImportError, AttributeError):
            pass
    return int


class _CudaRuntime:
    """The CUDA runtime API through cuda-python; every call returns ``(error, *values)``."""

    def __init__(self, runtime: Any, device_id: int) -> None:
        self._rt, self._device = runtime, device_id
        # The first call: where a driver too old for these bindings, or a missing device, shows.
        _runtime_error(runtime, runtime.cudaSetDevice(device_id), f"selecting GPU {device_id}")
        self._native_handle = _native_handle_getter(runtime)

    def _call(self, result: Any, what: str) -> Any:
        err, *values = result if isinstance(result, tuple) else (result,)
        if err != self._rt.cudaError_t.cudaSuccess:
            raise FcnEdgeError(f"CUDA failed {what}: {_error_name(self._rt, err)}")
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
        """The stream's address, what ``execute_async_v3`` takes."""
        return int(self._native_handle(stream))

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
        cuda = _import_pycuda()
        try:
            cuda.init()
            self._context = cuda.Device(device_id).retain_primary_context()
        except cuda.Error as exc:
            raise BackendUnavailable(f"{exc} selecting GPU {device_id}") from None
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


def _import_pycuda() -> Any:
    """``pycuda.driver``; BackendUnavailable when it is installed but cannot load (its
    extension links libcuda, so a machine without the driver fails here)."""
    return lazy_import("pycuda.driver", "cannot load ({exc})")
