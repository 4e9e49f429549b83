"""CUDA bindings on first use (issue 14): cuda-python that imports but cannot reach the GPU
falls back to pycuda, in ``query_gpu`` and in the TensorRT backend's ``_open_cuda`` alike; both
failing is one line naming both; stream handles through ``get_cuda_native_handle`` where the
bindings have it; and the TensorRT probe looks at the GPU the backend will open.

There is no GPU, driver, cuda-python or pycuda here, so the modules below are stand-ins,
inserted into ``sys.modules``: they answer the calls fcn-edge makes the way the real bindings
do (cuda-bindings 12.9.4 and 13.5.0, tried on this machine without a driver, return
``cudaErrorInsufficientDriver`` (35) from ``cudaSetDevice``/``cudaGetDevice``/
``cudaGetDeviceProperties`` rather than raising), and record what they were asked.
"""
from __future__ import annotations

import enum
import sys
import types
from importlib.machinery import ModuleSpec

import pytest

from fcn_edge.errors import BackendUnavailable
from fcn_edge.runtime.backends import available_backends, open_backend
from fcn_edge.runtime.backends import cuda as cuda_backend
from fcn_edge.runtime.backends import tensorrt as trt_backend
from fcn_edge.runtime.backends.cuda import query_gpu
from fcn_edge.runtime.backends.optional import TRT_EXTRA

_MODULES = ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.bindings.utils",
            "cuda.cudart", "pycuda", "pycuda.driver", "tensorrt")


class CudaError(enum.IntEnum):
    """cuda-python's ``cudaError_t`` values these tests use."""

    cudaSuccess = 0
    cudaErrorInsufficientDriver = 35
    cudaErrorInvalidDevice = 101


def _module(name: str, package: bool = False) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = ModuleSpec(name, None, is_package=package)  # find_spec must see it
    if package:
        module.__path__ = []  # a package with nothing else inside: other submodules are absent
    return module


class StandInCudaRuntime(types.ModuleType):
    """Stand-in for ``cuda.bindings.runtime`` (no CUDA driver or GPU here). ``error`` makes every
    device call fail with that ``cudaError_t``, as cuda-bindings 13 does on a driver < 580."""

    cudaError_t = CudaError

    def __init__(self, gpus=("Stand-in GPU 0", "Stand-in GPU 1"), error=None) -> None:
        super().__init__("cuda.bindings.runtime")
        self.__spec__ = ModuleSpec("cuda.bindings.runtime", None)
        self.__package__ = "cuda.bindings"
        self.gpus, self.error, self.calls, self.current = list(gpus), error, [], 0

    def _result(self, device: int, *values):
        if self.error is not None:
            return (self.error, *(None for _ in values))
        if not 0 <= device < len(self.gpus):
            return (CudaError.cudaErrorInvalidDevice, *(None for _ in values))
        return (CudaError.cudaSuccess, *values)

    def cudaGetDevice(self):  # noqa: N802 — cuda-python's names
        self.calls.append(("cudaGetDevice",))
        return self._result(self.current, self.current)

    def cudaSetDevice(self, device):  # noqa: N802
        self.calls.append(("cudaSetDevice", device))
        return self._result(device)

    def cudaGetDeviceProperties(self, device):  # noqa: N802
        self.calls.append(("cudaGetDeviceProperties", device))
        name = self.gpus[device].encode() + b"\0\0" if 0 <= device < len(self.gpus) else b""
        return self._result(device, types.SimpleNamespace(name=name, major=8, minor=7))

    def cudaGetErrorName(self, err):  # noqa: N802
        return (CudaError.cudaSuccess, CudaError(err).name.encode())

    def cudaStreamCreate(self):  # noqa: N802
        return (CudaError.cudaSuccess, StandInStream())


class StandInStream:
    """Stand-in for ``cudaStream_t``: ``int()`` and the native-handle getter give different
    numbers, so a test can tell which one the backend used."""

    def __int__(self) -> int:
        return 111


def stand_in_cuda_utils(calls: list) -> types.ModuleType:
    """Stand-in for ``cuda.bindings.utils`` (cuda-bindings ≥ 12.9.1 / 13)."""
    utils = _module("cuda.bindings.utils")

    def get_cuda_native_handle(obj) -> int:
        calls.append(obj)
        return 222

    utils.get_cuda_native_handle = get_cuda_native_handle
    return utils


def stand_in_pycuda(gpus=("Stand-in GPU 0", "Stand-in GPU 1"), init_error=None):
    """Stand-in for ``pycuda`` and ``pycuda.driver`` (no GPU here); ``.opened`` records the
    devices asked for."""
    driver = _module("pycuda.driver")
    driver.opened = []

    class Error(Exception):
        pass

    class LogicError(Error):
        pass

    class Device:
        def __init__(self, index: int) -> None:
            if not 0 <= index < len(gpus):
                raise LogicError("cuDeviceGet failed: invalid device ordinal")
            driver.opened.append(index)
            self.index = index

        def name(self) -> str:
            return gpus[self.index] + " "

        def compute_capability(self) -> tuple[int, int]:
            return (8, 7)

        def retain_primary_context(self):
            return types.SimpleNamespace(device=self.index)

    class Context:
        @staticmethod
        def get_device():
            raise LogicError("no current context")

    def init() -> None:
        if init_error:
            raise Error(init_error)

    driver.Error, driver.LogicError, driver.Device, driver.Context = Error, LogicError, Device, \
        Context
    driver.init = init
    package = _module("pycuda", package=True)
    package.driver = driver
    return package, driver


@pytest.fixture
def bindings(monkeypatch):
    """``bindings(runtime=None, utils=None, pycuda=None)`` installs stand-ins in ``sys.modules``;
    a binding left None is not installed at all (a None entry makes Python refuse the import)."""
    for name in _MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)

    def install(runtime=None, utils=None, pycuda=None):
        if runtime is None:
            monkeypatch.setitem(sys.modules, "cuda", None)
        else:
            cuda, bound = _module("cuda", package=True), _module("cuda.bindings", package=True)
            cuda.bindings, bound.runtime = bound, runtime
            for name, module in (("cuda", cuda), ("cuda.bindings", bound),
                                 ("cuda.bindings.runtime", runtime)):
                monkeypatch.setitem(sys.modules, name, module)
            if utils is not None:
                bound.utils = utils
                monkeypatch.setitem(sys.modules, "cuda.bindings.utils", utils)
        if pycuda is None:
            monkeypatch.setitem(sys.modules, "pycuda", None)
        else:
            monkeypatch.setitem(sys.modules, "pycuda", pycuda[0])
            monkeypatch.setitem(sys.modules, "pycuda.driver", pycuda[1])

    return install


TOO_OLD = CudaError.cudaErrorInsufficientDriver


# --- cuda-python that cannot reach the driver falls back to pycuda -------------------------

def test_query_gpu_falls_back_to_pycuda_when_cuda_python_cannot_reach_the_driver(bindings):
    runtime, pycuda = StandInCudaRuntime(error=TOO_OLD), stand_in_pycuda()
    bindings(runtime=runtime, pycuda=pycuda)
    assert query_gpu(1) == ("Stand-in GPU 1", "8.7")
    assert runtime.calls == [("cudaGetDeviceProperties", 1)]  # cuda-python was tried first
    assert pycuda[1].opened == [1]


def test_open_cuda_falls_back_to_pycuda_when_cuda_python_cannot_reach_the_driver(bindings):
    runtime, pycuda = StandInCudaRuntime(error=TOO_OLD), stand_in_pycuda()
    bindings(runtime=runtime, pycuda=pycuda)
    cuda = cuda_backend._open_cuda(1)
    assert isinstance(cuda, cuda_backend._PyCuda)
    assert cuda._context.device == 1
    assert runtime.calls == [("cudaSetDevice", 1)]


def test_a_working_cuda_python_is_used_and_pycuda_left_alone(bindings):
    runtime, pycuda = StandInCudaRuntime(), stand_in_pycuda()
    runtime.current = 1
    bindings(runtime=runtime, pycuda=pycuda)
    assert query_gpu() == ("Stand-in GPU 1", "8.7")  # the current device, NULs stripped
    assert query_gpu(0) == ("Stand-in GPU 0", "8.7")
    assert isinstance(cuda_backend._open_cuda(0), cuda_backend._CudaRuntime)
    assert runtime.calls == [("cudaGetDevice",), ("cudaGetDeviceProperties", 1),
                             ("cudaGetDeviceProperties", 0), ("cudaSetDevice", 0)]
    assert pycuda[1].opened == []


@pytest.mark.parametrize("call", [lambda: query_gpu(0), lambda: cuda_backend._open_cuda(0)],
                         ids=["query_gpu", "_open_cuda"])
def test_both_bindings_failing_is_one_line_naming_both_and_the_fix(bindings, call):
    bindings(runtime=StandInCudaRuntime(error=TOO_OLD),
             pycuda=stand_in_pycuda(init_error="cuInit failed: no CUDA-capable device"))
    with pytest.raises(BackendUnavailable) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no usable CUDA GPU for TensorRT on GPU 0 (")
    assert "cudaErrorInsufficientDriver" in message                    # cuda-python's error
    assert "pycuda: cuInit failed: no CUDA-capable device" in message  # and pycuda's
    assert "nvidia-smi" in message and 'pip install "fcn-edge[trt]" (cuda-python<13)' in message


def test_cuda_python_failing_without_pycuda_says_pycuda_is_missing(bindings):
    bindings(runtime=StandInCudaRuntime(error=TOO_OLD))
    with pytest.raises(BackendUnavailable, match=r"cudaErrorInsufficientDriver selecting GPU 0; "
                                                 r"pycuda: not installed\): check the driver"):
        cuda_backend._open_cuda(0)


def test_a_gpu_index_that_does_not_exist_names_the_index(bindings):
    bindings(runtime=StandInCudaRuntime(), pycuda=stand_in_pycuda())
    with pytest.raises(BackendUnavailable) as info:
        query_gpu(5)
    assert "cudaErrorInvalidDevice reading GPU 5" in str(info.value)
    assert "pycuda: cuDeviceGet failed: invalid device ordinal" in str(info.value)


def test_no_bindings_at_all_names_both_extras(bindings):
    bindings()
    with pytest.raises(BackendUnavailable) as info:
        cuda_backend._open_cuda(0)
    assert str(info.value) == ("TensorRT on GPU 0 needs CUDA bindings (cuda-python or pycuda): "
                               + TRT_EXTRA)
    assert '"fcn-edge[trt]"' in TRT_EXTRA and '"fcn-edge[trt-cu13]"' in TRT_EXTRA


# --- the stream handle TensorRT takes ------------------------------------------------------

def test_the_stream_handle_comes_from_get_cuda_native_handle_where_the_bindings_have_it(bindings):
    seen: list = []
    bindings(runtime=StandInCudaRuntime(), utils=stand_in_cuda_utils(seen))
    cuda = cuda_backend._CudaRuntime(sys.modules["cuda.bindings.runtime"], 0)
    stream = cuda.stream()
    assert cuda.handle(stream) == 222 and seen == [stream]


def test_older_bindings_give_the_stream_handle_by_int(bindings):
    bindings(runtime=StandInCudaRuntime())  # no cuda.bindings.utils: cuda-bindings < 12.9.1
    cuda = cuda_backend._CudaRuntime(sys.modules["cuda.bindings.runtime"], 0)
    assert cuda.handle(cuda.stream()) == 111


# --- the probe looks at the GPU the backend opens --------------------------------------------

def test_the_tensorrt_probe_queries_the_chosen_device(bindings, monkeypatch):
    runtime = StandInCudaRuntime()
    bindings(runtime=runtime)
    tensorrt = _module("tensorrt")  # stand-in: only its version is read by the probe
    tensorrt.__version__ = "10.3.0.26"
    monkeypatch.setitem(sys.modules, "tensorrt", tensorrt)
    monkeypatch.setattr(trt_backend, "_tensorrt_version", lambda: tensorrt.__version__)
    assert trt_backend.probe(None, device_id=1) == (True, "TensorRT 10.3.0.26 on Stand-in GPU 1")
    assert runtime.calls == [("cudaGetDeviceProperties", 1)]


def test_the_registry_gives_probe_and_backend_the_same_device(fake_tensorrt, onnx_artifact,
                                                              monkeypatch):
    probed, queried = [], []
    monkeypatch.setattr(trt_backend, "probe", lambda path=None, device_id=0:
                        probed.append(device_id) or (True, "stand-in"))
    monkeypatch.setattr(trt_backend, "query_gpu", lambda device_id=None:
                        queried.append(device_id) or fake_tensorrt.gpu)
    engine = fake_tensorrt.engine(onnx_artifact("plain"))
    assert available_backends(engine, device_id=1)[0] == ("tensorrt", True, "stand-in")
    with open_backend(engine, device_id=1) as backend:
        assert backend.name == "tensorrt"
    with open_backend(engine):
        pass
    assert probed == [1, 1, 0]
    assert queried == [1, 0]  # the backend's own check of the engine against this GPU
