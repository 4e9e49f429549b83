"""Shared by the runtime tests: one checkpoint, its ONNX exports (made once, on first use), the
PyTorch reference labels, real-looking frames, and a stand-in for TensorRT and CUDA.

The stand-in runs the native TensorRT backend's own code on a machine without a GPU: its
"engine" is the ONNX model run by ONNX Runtime, its "device memory" is host memory, and it
speaks exactly the calls the backend makes (TensorRT 10's named-tensor API, cuda-python's
runtime API), so allocation, growth, copies, profile handling and clean-up are all exercised.
"""
from __future__ import annotations

import ctypes
import enum
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fcn_edge.data.procedural import render_scene
from fcn_edge.export.exporter import ExportConfig, export
from fcn_edge.export.onnx_props import set_metadata
from fcn_edge.models import load_model
from fcn_edge.runtime.backends import tensorrt as trt_backend
from fcn_edge.runtime.engine_file import write_engine
from fcn_edge.runtime.metadata import ArtifactMeta, parse_shapes
from fcn_edge.runtime.processing import frames_to_input

from support import make_checkpoint

#: Export options of each ONNX kind the tests use.
KINDS = {"plain": {}, "rawio": {"raw_io": True}, "argmax": {"argmax": True},
         "rawio_argmax": {"raw_io": True, "argmax": True},
         "rawio_argmax_int32": {"raw_io": True, "argmax": True, "labels_dtype": "int32"}}
SMALL_PROFILE = "32x32:64x64:256x256"


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op thread for torch while these tests run: on a busy 2-core machine its
    spinning OpenMP workers made a small forward pass 20× slower (2 s against 0.1 s)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")


@pytest.fixture(scope="session")
def onnx_artifact(checkpoint, tmp_path_factory) -> Callable[[str], Path]:
    """``onnx_artifact(kind)``: the checkpoint exported as ``kind`` (see KINDS), made once.

    One parity size and no onnxslim pass keep each export to a few seconds; parity itself is
    the exporter's business, tested in tests/export.
    """
    made: dict[str, Path] = {}
    lock = threading.Lock()

    def get(kind: str) -> Path:
        with lock:
            if kind == "small_profile":
                if kind not in made:
                    made[kind] = _with_shapes(get_unlocked("rawio_argmax"), SMALL_PROFILE)
                return made[kind]
            return get_unlocked(kind)

    def get_unlocked(kind: str) -> Path:
        if kind not in made:
            out = tmp_path_factory.mktemp(kind)
            config = ExportConfig(str(checkpoint), out_dir=str(out), simplify=False,
                                  parity_sizes=((64, 64),), **KINDS[kind])
            made[kind] = export(config, log=lambda s: None).artifacts["fp32"]
        return made[kind]

    return get


def _with_shapes(source: Path, shapes: str) -> Path:
    """A copy of ``source`` whose metadata declares ``shapes``: what `--shapes` would write."""
    model = onnx.load(str(source))
    props = {p.key: p.value for p in model.metadata_props}
    meta = ArtifactMeta.from_props(props).with_(shapes=parse_shapes(shapes))
    set_metadata(model, meta.to_props())
    path = source.with_name(source.stem + "_small.onnx")
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def reference(checkpoint) -> Callable[[np.ndarray], np.ndarray]:
    """PyTorch fp32 labels (H×W uint8) for one BGR frame: the reference every backend meets."""
    model = load_model(checkpoint).eval()
    meta = model.meta
    known: dict[tuple, np.ndarray] = {}  # every artifact kind is held to the same frames

    def labels(frame_bgr: np.ndarray) -> np.ndarray:
        key = (frame_bgr.shape, hash(frame_bgr.tobytes()))
        if key not in known:
            x = frames_to_input(frame_bgr, meta.mean, meta.std, meta.color_order, "bgr")
            with torch.no_grad():
                logits = model(torch.from_numpy(x))
            known[key] = logits.argmax(1)[0].numpy().astype(np.uint8)
        return known[key]

    return labels


def _scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    rgb = render_scene(np.random.default_rng(seed), height, width)[0]
    return np.ascontiguousarray(rgb[..., ::-1])


@pytest.fixture(scope="session")
def scene() -> Callable[..., np.ndarray]:
    """``scene(h, w, seed=0)``: a real-looking H×W×3 uint8 BGR frame (procedural), fixed."""
    return _scene


# --- a stand-in for TensorRT and cuda-python ------------------------------------------------

OK = 0


class FakeCudart:
    """The cuda-python runtime calls the backend makes, with host memory as "device" memory."""

    class cudaError_t(enum.IntEnum):  # noqa: N801 — cuda-python's names
        cudaSuccess = 0
        cudaErrorMemoryAllocation = 2

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        self.live: dict[int, ctypes.Array] = {}
        self.allocations = 0
        self.transfers = 0
        self.fail_malloc = False

    def _alloc(self, nbytes: int) -> tuple:
        if self.fail_malloc:
            return (self.cudaError_t.cudaErrorMemoryAllocation, 0)
        buf = ctypes.create_string_buffer(nbytes)
        self.live[ctypes.addressof(buf)] = buf
        self.allocations += 1
        return (self.cudaError_t.cudaSuccess, ctypes.addressof(buf))

    def cudaSetDevice(self, device):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaGetErrorName(self, err):  # noqa: N802
        return (self.cudaError_t.cudaSuccess, self.cudaError_t(err).name.encode())

    def cudaMallocHost(self, nbytes):  # noqa: N802
        return self._alloc(nbytes)

    cudaMalloc = cudaMallocHost

    def cudaFree(self, ptr):  # noqa: N802
        self.live.pop(int(ptr))
        return (self.cudaError_t.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaStreamCreate(self):  # noqa: N802
        return (self.cudaError_t.cudaSuccess, 7)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (self.cudaError_t.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        assert int(dst) in self.live and int(src) in self.live, "copies between our buffers only"
        ctypes.memmove(int(dst), int(src), nbytes)
        self.transfers += 1
        return (self.cudaError_t.cudaSuccess,)


class _DataType(enum.Enum):
    FLOAT = "float32"
    UINT8 = "uint8"
    INT32 = "int32"


_ORT_TYPES = {"tensor(float)": _DataType.FLOAT, "tensor(uint8)": _DataType.UINT8,
              "tensor(int32)": _DataType.INT32}


class FakeEngine:
    """An "engine" whose plan is ONNX bytes, run by ONNX Runtime on the bound host addresses."""

    def __init__(self, plan: bytes) -> None:
        self.session = ort.InferenceSession(plan, providers=["CPUExecutionProvider"])
        self.meta = ArtifactMeta.from_props(self.session.get_modelmeta().custom_metadata_map)
        io = self.session.get_inputs() + self.session.get_outputs()
        self.names = [t.name for t in io]
        self.types = {t.name: _ORT_TYPES[t.type] for t in io}
        self.num_io_tensors = len(self.names)
        self.max_concurrent = 0

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        return FakeTensorRT.TensorIOMode.INPUT if name == self.names[0] else \
            FakeTensorRT.TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name):
        return self.types[name]

    def get_tensor_shape(self, name):  # as the graph states it: -1 where dynamic
        io = {t.name: t.shape for t in self.session.get_inputs() + self.session.get_outputs()}
        return tuple(d if isinstance(d, int) else -1 for d in io[name])

    def get_tensor_profile_shape(self, name, profile):
        full = ((lambda n, h, w: (n, h, w, 3)) if self.meta.raw_io
                else (lambda n, h, w: (n, 3, h, w)))
        s = self.meta.shapes
        return full(*s.min), full(*s.opt), full(*s.max)

    def create_execution_context(self):
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine) -> None:
        self.engine, self.shape, self.addresses, self.active = engine, None, {}, 0

    def set_input_shape(self, name, shape):
        meta = self.engine.meta
        n, h, w = (shape[0], shape[1], shape[2]) if meta.raw_io else (shape[0], *shape[2:])
        self.shape = tuple(shape)
        return meta.shapes.covers(n, h, w)

    def get_tensor_shape(self, name):
        meta, shape = self.engine.meta, self.shape
        n, h, w = (shape[0], shape[1], shape[2]) if meta.raw_io else (shape[0], *shape[2:])
        return (n, h, w) if meta.argmax else (n, meta.num_classes, h, w)

    def set_tensor_address(self, name, address):
        self.addresses[name] = int(address)

    def execute_async_v3(self, stream_handle):
        self.active += 1
        self.engine.max_concurrent = max(self.engine.max_concurrent, self.active)
        try:
            inp, out = self.engine.names[0], self.engine.names[1]
            batch = _at(self.addresses[inp], self.engine.types[inp], self.shape).copy()
            result = self.engine.session.run([out], {inp: batch})[0]
            _at(self.addresses[out], self.engine.types[out], result.shape)[...] = result
            return True
        finally:
            self.active -= 1


def _at(address: int, dtype: _DataType, shape) -> np.ndarray:
    dtype = np.dtype(dtype.value)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(address))
    return raw.view(dtype).reshape(shape)


class FakeTensorRT:
    """The ``tensorrt`` module, as far as the backend uses it."""

    __version__ = "10.3.0.26"
    DataType = _DataType

    class Logger:
        ERROR, WARNING = 1, 2
        made = 0  # constructions: TensorRT keeps one logger per process, so must fcn-edge

        def __init__(self, level):
            self.level = level
            type(self).made += 1

    class TensorIOMode(enum.Enum):
        INPUT = 1
        OUTPUT = 2

    def __init__(self) -> None:
        self.deserialized = 0
        self.engines: list[FakeEngine] = []
        self.Logger = type("Logger", (FakeTensorRT.Logger,), {"made": 0})  # counted per stand-in

    @staticmethod
    def nptype(dtype):
        return np.dtype(dtype.value).type

    def Runtime(self, logger):  # noqa: N802
        fake = self

        class Runtime:
            def deserialize_cuda_engine(self, plan):
                fake.deserialized += 1
                try:
                    engine = FakeEngine(plan)
                except Exception:  # a real runtime returns None for a plan it cannot load
                    return None
                fake.engines.append(engine)
                return engine

        return Runtime()


GPU = ("Fake GPU 3000", "8.6")


@pytest.fixture
def fake_tensorrt(monkeypatch, tmp_path):
    """Stand-ins installed in the TensorRT backend; ``.engine(onnx, **header)`` writes an
    fcn-edge engine file whose plan the stand-in can run."""
    trt, cudart = FakeTensorRT(), FakeCudart()
    monkeypatch.setattr(trt_backend, "_import_tensorrt", lambda: trt)
    monkeypatch.setattr(trt_backend, "_open_cuda",
                        lambda device_id: trt_backend._CudaRuntime(cudart, device_id))
    monkeypatch.setattr(trt_backend, "query_gpu", lambda device_id=None: GPU)
    monkeypatch.setattr(trt_backend, "probe", lambda path=None, device_id=0:
                        (True, f"TensorRT {trt.__version__} (stand-in)"))

    def engine(onnx_path: Path, name: str = "model.engine", gpu=GPU,
               tensorrt_version: str = FakeTensorRT.__version__) -> Path:
        data = Path(onnx_path).read_bytes()
        meta = FakeEngine(data).meta
        header = {"meta": meta.to_dict(), "tensorrt_version": tensorrt_version,
                  "gpu": {"name": gpu[0], "compute_capability": gpu[1]},
                  "onnx_file": Path(onnx_path).name}
        return write_engine(tmp_path / name, data, header)

    return SimpleNamespace(trt=trt, cudart=cudart, engine=engine, gpu=GPU)
