"""Stand-ins for TensorRT and CUDA (there is no GPU or TensorRT here), named as such.

* The runtime half (``FakeTensorRT``, ``FakeCudart``) runs the native TensorRT backend's own
  code: its "engine" is an ONNX model run by ONNX Runtime on the bound host addresses, its
  "device memory" is host memory, and it speaks exactly the calls the backend makes (TensorRT
  10's named-tensor API, cuda-python's runtime API).
* ``StandInTensorRT`` adds the builder calls ``fcn-edge build`` makes (Builder, OnnxParser,
  BuilderConfig, profiles, timing cache, DLA), with the names of TensorRT's Python bindings
  (NVIDIA/TensorRT python/src/infer/pyCore.cpp, parsers/pyOnnx.cpp). Its "plan" is the ONNX it
  parsed, passed through ``fault`` when one is given, so the runtime half runs what was "built"
  and the accuracy gate meets an engine that returns NaN or wrong labels. What the builder was
  asked for (network flags, builder flags, device type, DLA core, profile) is kept in
  ``.builds``.
"""
from __future__ import annotations

import ctypes
import enum
import sys
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from fcn_edge.runtime.metadata import ArtifactMeta

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
        self.dla_cores: list[int] = []  # each deserialisation's runtime DLA_core (-1: none)
        self.engines: list[FakeEngine] = []
        self.Logger = type("Logger", (FakeTensorRT.Logger,), {"made": 0})  # counted per stand-in

    @staticmethod
    def nptype(dtype):
        return np.dtype(dtype.value).type

    def Runtime(self, logger):  # noqa: N802
        fake = self

        class Runtime:
            DLA_core = -1  # TensorRT's default; a DLA engine needs it set before deserialising

            def deserialize_cuda_engine(self, plan):
                fake.deserialized += 1
                fake.dla_cores.append(self.DLA_core)
                try:
                    engine = FakeEngine(plan)
                except Exception:  # a real runtime returns None for a plan it cannot load
                    return None
                fake.engines.append(engine)
                return engine

        return Runtime()


GPU = ("Fake GPU 3000", "8.6")


# --- the builder ------------------------------------------------------------------------------

class _Members:
    def __init__(self, **members):
        self.__dict__.update(members)


class _Layer:
    def __init__(self, node: onnx.NodeProto) -> None:
        self.name, self.type = node.name or node.output[0], f"LayerType.{node.op_type.upper()}"


class _Network:
    def __init__(self, flags: int) -> None:
        self.flags, self.inputs, self.outputs, self.layers = flags, [], [], []
        self.model: onnx.ModelProto | None = None

    num_inputs = property(lambda self: len(self.inputs))
    num_outputs = property(lambda self: len(self.outputs))
    num_layers = property(lambda self: len(self.layers))

    def get_input(self, i): return self.inputs[i]
    def get_output(self, i): return self.outputs[i]
    def get_layer(self, i): return self.layers[i]


class _Config:
    def __init__(self, gpu_only: frozenset[str]) -> None:
        self.flags, self.profiles, self.cache, self.workspace = [], [], None, None
        self.default_device_type, self.DLA_core, self._gpu_only = "DeviceType.GPU", -1, gpu_only

    def set_memory_pool_limit(self, pool, pool_size): self.workspace = pool_size
    def set_flag(self, flag): self.flags.append(flag)
    def can_run_on_DLA(self, layer): return layer.type not in self._gpu_only  # noqa: N802

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized_timing_cache):
        return _Members(serialize=lambda: serialized_timing_cache + b"+tactics")

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache
        return True

    def get_timing_cache(self): return self.cache


class _Profile:
    def __init__(self): self.shapes = {}
    def set_shape(self, input, min, opt, max): self.shapes[input] = [min, opt, max]  # noqa: A002


class StandInTensorRT(FakeTensorRT):
    """TensorRT's builder and runtime together, as far as fcn-edge calls them (see the module
    docstring). ``fault(model) -> model`` alters the "built" plan; ``dla_cores`` is what
    ``Builder.num_DLA_cores`` says; layers whose type is in ``gpu_only`` cannot run on DLA."""

    def __init__(self, version: str = "10.3.0.26",
                 fault: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None,
                 dla_cores: int = 0, gpu_only: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self.__version__ = version
        major = int(version.split(".")[0])
        self.NetworkDefinitionCreationFlag = (
            _Members(STRONGLY_TYPED=0) if major >= 11
            else _Members(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
        flags = dict(TF32=7, INT8=1, GPU_FALLBACK=3) if major >= 11 else \
            dict(FP16=0, INT8=1, GPU_FALLBACK=3, TF32=7)
        self.BuilderFlag = _Members(**flags)
        self.DeviceType = _Members(GPU="DeviceType.GPU", DLA="DeviceType.DLA")
        self.MemoryPoolType = _Members(WORKSPACE=0)
        self.fault, self.builds, self.parsed = fault, [], []
        self.Builder = self._builder_class(dla_cores)
        self.OnnxParser = self._parser_class(frozenset(gpu_only))

    def _builder_class(self, dla_cores: int):
        trt = self

        class Builder:
            num_DLA_cores = dla_cores

            def __init__(self, logger): pass
            def create_network(self, flags=0): return _Network(flags)
            def create_builder_config(self): return _Config(trt._gpu_only)
            def create_optimization_profile(self): return _Profile()

            def build_serialized_network(self, network, config):
                trt.builds.append({"network_flags": network.flags, "flags": list(config.flags),
                                   "workspace": config.workspace,
                                   "device": config.default_device_type,
                                   "dla_core": config.DLA_core,
                                   "profile": config.profiles[0].shapes})
                model = trt.fault(network.model) if trt.fault else network.model
                return model.SerializeToString()

        return Builder

    def _parser_class(self, gpu_only: frozenset[str]):
        self._gpu_only = gpu_only
        trt = self

        class OnnxParser:
            num_errors = 0

            def __init__(self, network, logger): self.network = network

            def parse_from_file(self, model):
                trt.parsed.append(model)
                loaded = onnx.load(model)
                self.network.model = loaded
                graph = loaded.graph
                self.network.inputs = [_Members(name=v.name) for v in graph.input]
                self.network.outputs = [_Members(name=v.name) for v in graph.output]
                self.network.layers = [_Layer(node) for node in graph.node]
                return True

        return OnnxParser


# --- faults the stand-in's "engine" can have ---------------------------------------------------

def _after_output(model: onnx.ModelProto, op: str, extra: list[str], initializers) -> onnx.ModelProto:
    """``model`` with its first output passed through ``op`` (fed also by ``extra``)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    name = out.graph.output[0].name
    for node in out.graph.node:
        node.output[:] = [f"{name}_clean" if o == name else o for o in node.output]
        node.input[:] = [f"{name}_clean" if i == name else i for i in node.input]
    out.graph.initializer.extend(initializers)
    out.graph.node.append(helper.make_node(op, [f"{name}_clean", *extra], [name],
                                           name=f"stand_in_{op.lower()}"))
    return out


def nan_output(model: onnx.ModelProto) -> onnx.ModelProto:
    """An engine whose first output is NaN everywhere (FP16 overflow gone through a 0 × inf)."""
    nan = helper.make_tensor("stand_in_nan", TensorProto.FLOAT, [1], [float("nan")])
    return _after_output(model, "Add", ["stand_in_nan"], [nan])


def negated_logits(model: onnx.ModelProto) -> onnx.ModelProto:
    """An engine whose logits are negated: finite, every label wrong (argmax becomes argmin)."""
    return _after_output(model, "Neg", [], [])


def install_stand_in(monkeypatch, version: str = "10.3.0.26", **kwargs) -> StandInTensorRT:
    """A StandInTensorRT installed for ``fcn-edge build`` and for the runtime's TensorRT
    backend (which the accuracy gate and the bench open the engine with), on the stand-in GPU;
    ``kwargs`` go to StandInTensorRT (``fault``, ``dla_cores``, ``gpu_only``)."""
    from fcn_edge.export import tensorrt as trt_build
    from fcn_edge.runtime.backends import tensorrt as trt_backend

    trt, cudart = StandInTensorRT(version, **kwargs), FakeCudart()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setattr(trt_build, "query_gpu", lambda: GPU)
    monkeypatch.setattr(trt_backend, "query_gpu", lambda device_id=0: GPU)
    monkeypatch.setattr(trt_backend, "_open_cuda",
                        lambda device_id: trt_backend._CudaRuntime(cudart, device_id))
    # The backend's probe asks whether the modules are installed (find_spec); the stand-in
    # module is not, though it imports.
    monkeypatch.setattr(trt_backend, "_has_module", lambda name: True)
    return trt
