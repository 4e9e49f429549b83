"""The native TensorRT backend with several inputs and heads (paper §5): its decisions (which
tensors to bind, the profile the inputs share, the shapes to set) as plain functions, and its
``run`` on a stand-in engine that speaks TensorRT 10's named-tensor API over the real exported
ONNX (run by ONNX Runtime; conftest.py's ``fake_tensorrt`` stands in for CUDA)."""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from fcn_edge.errors import ModelFormatError
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.backends import input_specs
from fcn_edge.runtime.backends.tensorrt import (TensorRTBackend, check_io, common_profile,
                                                profile_shapes)
from fcn_edge.runtime.metadata import ArtifactMeta, parse_shapes
from fcn_edge.runtime.onnx_file import read_onnx_metadata

from support_multi_io import export_artifact, make_multi_checkpoint, scene_depth

F32, U8 = np.dtype(np.float32), np.dtype(np.uint8)
PATH = Path("two.engine")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("rgbd_trt")
    checkpoint = make_multi_checkpoint(tmp / "two.pt")
    return {"plain": export_artifact(checkpoint, tmp / "plain", shapes="32x32:48x48:64x64"),
            "rawio_argmax": export_artifact(checkpoint, tmp / "raw", raw_io=True, argmax=True,
                                            shapes="32x32:48x48:64x64")}


# --- the decisions, plainly ------------------------------------------------------------------

def test_check_io_binds_every_input_and_head_output(artifacts):
    meta = read_onnx_metadata(artifacts["rawio_argmax"])
    io = [("frames", True, U8), ("depth", True, F32), ("labels_semantic", False, U8),
          ("labels_geometric", False, U8)]
    dtypes, outputs = check_io(io, meta, PATH)
    assert outputs == ["labels_semantic", "labels_geometric"]
    assert dtypes == {"frames": U8, "depth": F32, "labels_semantic": U8,
                      "labels_geometric": U8}
    assert check_io(list(reversed(io)), meta, PATH)[1] == ["labels_geometric",
                                                           "labels_semantic"]  # any order
    for broken, message in [(io[:1] + io[2:], r"inputs \['frames'\].*frames, depth →"),
                            (io[:3], "outputs.*labels_semantic, labels_geometric"),
                            (io + [("hha", True, F32)], "inputs .*'hha'"),
                            ([io[0], ("depth", True, np.dtype(np.float16))] + io[2:],
                             "takes float16 'depth'; fcn-edge engines take float32")]:
        with pytest.raises(ModelFormatError, match=message):
            check_io(broken, meta, PATH)


def test_the_inputs_share_one_profile_and_each_gets_its_own_shape(artifacts):
    meta = read_onnx_metadata(artifacts["rawio_argmax"])
    small, large = parse_shapes("32x32:48x48:64x64"), parse_shapes("32x32:48x48:96x96")
    assert common_profile({"frames": small, "depth": small}, PATH) == small
    with pytest.raises(ModelFormatError, match="profiles differ.*frames 1x32x32.*depth .*96x96"):
        common_profile({"frames": small, "depth": large}, PATH)
    assert profile_shapes(input_specs(meta), (2, 32, 48)) == {"frames": (2, 32, 48, 3),
                                                             "depth": (2, 1, 32, 48)}
    plain = input_specs(read_onnx_metadata(artifacts["plain"]))
    assert profile_shapes(plain, (1, 64, 40)) == {"images": (1, 3, 64, 40),
                                                  "depth": (1, 1, 64, 40)}


# --- run, on a stand-in engine -----------------------------------------------------------------

class MultiEngine:
    """An "engine" whose plan is an fcn-edge ONNX with any inputs and outputs; shapes come from
    the ONNX graph's own (batch/height/width symbolic, channels fixed), not from fcn-edge."""

    def __init__(self, plan: bytes, trt) -> None:
        self.trt = trt
        self.session = ort.InferenceSession(plan, providers=["CPUExecutionProvider"])
        props = self.session.get_modelmeta().custom_metadata_map
        self.shapes = ArtifactMeta.from_props(props).shapes  # the profile it was "built" for
        self.io = {t.name: t for t in self.session.get_inputs() + self.session.get_outputs()}
        self.inputs = [t.name for t in self.session.get_inputs()]
        self.names = list(self.io)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i):
        return self.names[i]

    def get_tensor_mode(self, name):
        mode = self.trt.TensorIOMode
        return mode.INPUT if name in self.inputs else mode.OUTPUT

    def get_tensor_dtype(self, name):
        return {"tensor(float)": self.trt.DataType.FLOAT,
                "tensor(uint8)": self.trt.DataType.UINT8}[self.io[name].type]

    def get_tensor_shape(self, name):  # as the graph states it: -1 where dynamic
        return tuple(d if isinstance(d, int) else -1 for d in self.io[name].shape)

    def shape(self, name, n, h, w):
        sizes = {"batch": n, "height": h, "width": w}
        return tuple(sizes.get(d, d) for d in self.io[name].shape)

    def get_tensor_profile_shape(self, name, profile):
        s = self.shapes
        return tuple(self.shape(name, *dims) for dims in (s.min, s.opt, s.max))

    def create_execution_context(self):
        return MultiContext(self)


class MultiContext:
    def __init__(self, engine: MultiEngine) -> None:
        self.engine, self.set, self.addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        template = self.engine.io[name].shape
        dims = {d: v for d, v in zip(template, shape) if isinstance(d, str)}
        self.set[name] = tuple(shape)
        self.dims = (dims["batch"], dims["height"], dims["width"])
        return self.engine.shapes.covers(*self.dims)

    def get_tensor_shape(self, name):
        return self.engine.shape(name, *self.dims)

    def set_tensor_address(self, name, address):
        self.addresses[name] = int(address)

    def execute_async_v3(self, stream_handle):
        engine = self.engine
        dtype = {n: np.dtype(engine.trt.nptype(engine.get_tensor_dtype(n))) for n in engine.names}
        feed = {n: _at(self.addresses[n], dtype[n], self.set[n]).copy() for n in engine.inputs}
        outputs = [n for n in engine.names if n not in engine.inputs]
        for name, value in zip(outputs, engine.session.run(outputs, feed)):
            _at(self.addresses[name], dtype[name], value.shape)[...] = value
        return True


def _at(address: int, dtype: np.dtype, shape) -> np.ndarray:
    nbytes = int(np.prod(shape)) * dtype.itemsize
    return np.ctypeslib.as_array((ctypes.c_ubyte * nbytes).from_address(address)) \
        .view(dtype).reshape(shape)


@pytest.fixture
def multi_trt(fake_tensorrt, monkeypatch):
    """conftest's TensorRT and CUDA stand-ins, deserialising plans into MultiEngine."""
    trt = fake_tensorrt.trt

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            return MultiEngine(plan, trt)

    monkeypatch.setattr(trt, "Runtime", Runtime, raising=False)
    return fake_tensorrt


@pytest.mark.parametrize("kind", ["plain", "rawio_argmax"])
def test_a_two_input_two_head_engine_runs_like_onnxruntime(multi_trt, artifacts, scene, kind):
    onnx_path = artifacts[kind]
    engine = multi_trt.engine(onnx_path)
    cudart = multi_trt.cudart
    frames = [scene(48, 48, seed=1), scene(97, 131, seed=2)]  # the second resized into 64×64
    with Segmenter(onnx_path, "onnxruntime:cpu", profile="artifact") as reference, \
            Segmenter(engine) as seg:
        assert seg.backend.name == "tensorrt" and seg.profile == reference.profile
        assert list(seg.backend.input_specs) == list(reference.backend.input_specs)
        probed = cudart.transfers  # an argmax engine's labels are probed once on opening
        assert probed == (4 if "argmax" in kind else 0)
        for frame in frames:
            depth = scene_depth(frame)
            got, expected = seg(frame, depth=depth), reference(frame, depth=depth)
            assert set(got) == {"semantic", "geometric"}
            assert all(np.array_equal(got[t], expected[t]) for t in got)
        assert cudart.transfers - probed == 2 * 4  # per run: two inputs in, two heads out
    assert cudart.live == {}  # every pinned and device buffer freed


def test_preallocating_reserves_every_input_and_output(multi_trt, artifacts):
    cudart = multi_trt.cudart
    with TensorRTBackend(multi_trt.engine(artifacts["rawio_argmax"]), preallocate=True) as backend:
        assert cudart.allocations == 2 * 4  # pinned + device for frames, depth and two heads
        outputs = backend.run({"frames": np.zeros((1, 64, 64, 3), np.uint8),
                               "depth": np.zeros((1, 1, 64, 64), np.float32)})
        assert cudart.allocations == 8  # the profile's maximum fitted
        assert {k: v.shape for k, v in outputs.items()} == {"labels_semantic": (1, 64, 64),
                                                            "labels_geometric": (1, 64, 64)}
    assert cudart.live == {}
