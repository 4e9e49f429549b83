"""A DLA engine (``fcn-edge build --dla-core N``) opened by the native TensorRT backend: the
runtime names the engine's DLA core before deserialising, on the TensorRT stand-in
(conftest.py), whose runtime records its ``DLA_core`` at each deserialisation."""
from __future__ import annotations

import numpy as np
import pytest

from fcn_edge.errors import ModelFormatError
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.backends.tensorrt import TensorRTBackend
from fcn_edge.runtime.engine_file import (engine_dla_core, read_engine, read_engine_header,
                                          write_engine)

DLA_REPORT = {"core": 1, "layers": 4, "on_dla": 3,
              "gpu_fallback": [{"name": "argmax", "type": "TOPK"}]}


def with_dla(path, dla):
    """The engine at ``path`` with its header's ``dla`` entry set as ``fcn-edge build`` does."""
    header, plan = read_engine(path)
    return write_engine(path, plan, {**header, "dla": dla})


def test_the_runtime_names_the_dla_core_before_deserialising(fake_tensorrt, onnx_artifact,
                                                             scene):
    onnx_path = onnx_artifact("rawio_argmax")
    engine = with_dla(fake_tensorrt.engine(onnx_path, name="dla.engine"), DLA_REPORT)
    frame = scene(64, 80)
    with Segmenter(onnx_path) as reference, Segmenter(engine) as seg:
        assert np.array_equal(seg(frame), reference(frame))
    assert fake_tensorrt.trt.dla_cores == [1]  # set before deserialise_cuda_engine ran
    TensorRTBackend(fake_tensorrt.engine(onnx_path, name="gpu.engine")).close()
    assert fake_tensorrt.trt.dla_cores == [1, -1]  # a GPU engine leaves the runtime alone


@pytest.mark.parametrize("dla", [{"core": -1}, {"core": 16}, {"core": "0"}, {"core": True},
                                 {"layers": 4}, 3])
def test_a_damaged_dla_entry_is_refused_before_deserialising(fake_tensorrt, onnx_artifact, dla):
    engine = with_dla(fake_tensorrt.engine(onnx_artifact("plain"), name="bad.engine"), dla)
    with pytest.raises(ModelFormatError) as error:
        TensorRTBackend(engine)
    message = str(error.value)
    assert message.startswith(f"{engine}: metadata field 'dla") and "\n" not in message
    assert message.endswith("rebuild it with `fcn-edge build MODEL.onnx`")
    assert fake_tensorrt.trt.deserialized == 0 and fake_tensorrt.cudart.live == {}
    with pytest.raises(ModelFormatError, match="metadata field 'dla"):  # any reader refuses it
        read_engine_header(engine)


def test_engine_dla_core():
    assert engine_dla_core({}) is None and engine_dla_core({"dla": None}) is None
    assert engine_dla_core({"dla": DLA_REPORT}) == 1
    assert engine_dla_core({"dla": {"core": 0}}) == 0
    with pytest.raises(ModelFormatError, match=r"^x.engine: metadata field 'dla.core' must be "
                                               r"an integer from 0 to 15, got 99"):
        engine_dla_core({"dla": {"core": 99}}, "x.engine")
