"""The modality registry: adding an input modality is one ``register_modality`` call plus the
module that holds its encoder and reader. Here a 1-channel ``thermal`` modality is registered
in the test, and a model config, the Segmenter (``seg(frame, thermal=t)``) and ``fcn-edge run``
(``--thermal DIR``, ``--input thermal=DIR``) take it with no other change; then it goes."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from fcn_edge.cli import main
from fcn_edge.config import MODALITY_CHANNELS, ModelConfig
from fcn_edge.data import read_palette_png
from fcn_edge.errors import InputError
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.metadata import ArtifactMeta
from fcn_edge.runtime.modalities import (MODALITIES, Modality, decode_file, encode_batch,
                                         get_modality, register_modality, resize_nearest,
                                         unregister_modality)

H, W = 24, 32
STEMS = ("a", "b")


# --- the new modality's own module: an encoder and a reader ---------------------------------

def encode_thermal(array, mean, std, out=None):
    """H×W or N×H×W uint8 intensity → N×1×H×W float32 ``(t − 128) / 64``."""
    array = np.asarray(array)
    array = array[None] if array.ndim == 2 else array
    if out is None:
        out = np.empty((array.shape[0], 1) + array.shape[1:], np.float32)
    np.subtract(array, np.float32(128), out=out[:, 0], dtype=np.float32)
    out /= np.float32(64)
    return out


def read_thermal(path: Path) -> np.ndarray:
    image = decode_file(path)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise InputError(f"{path}: thermal must be an 8-bit grey image")
    return image


THERMAL = Modality("thermal", 1, ("uint8",), "H×W uint8 intensity", "8-bit thermal PNGs",
                   encode_thermal, resize_nearest, read_thermal, encoding="(t - 128) / 64")


@pytest.fixture
def thermal():
    register_modality(THERMAL)
    yield THERMAL
    unregister_modality("thermal")


def thermal_onnx(path: Path) -> Path:
    """An fcn-edge artifact taking ``images`` and ``thermal``: its logits are 0 for class 0
    and the encoded thermal for class 1, so a pixel is "warm" exactly where t > 128."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    weight = np.zeros((2, 4, 1, 1), np.float32)
    weight[1, 3] = 1.0  # class 1 sees channel 3, the thermal one; the RGB channels count 0
    dims = ["N", None, "H", "W"]
    graph = helper.make_graph(
        [helper.make_node("Concat", ["images", "thermal"], ["x"], axis=1),
         helper.make_node("Conv", ["x", "weight"], ["logits"])],
        "thermal",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, dims[:1] + [3] + dims[2:]),
         helper.make_tensor_value_info("thermal", TensorProto.FLOAT, dims[:1] + [1] + dims[2:])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, dims[:1] + [2] + dims[2:])],
        [numpy_helper.from_array(weight, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = ArtifactMeta.from_dict({
        "model": "fcn32s", "backbone": "resnet18", "num_classes": 2,
        "classes": ["cold", "warm"], "palette": [[0, 0, 0], [255, 64, 0]],
        "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
        "inputs": [{"name": "images", "modality": "rgb", "channels": 3, "layout": "NCHW",
                    "dtype": "float32"},
                   {"name": "thermal", "modality": "thermal", "channels": 1, "layout": "NCHW",
                    "dtype": "float32", "encoding": THERMAL.encoding}]})
    helper.set_model_props(model, meta.to_props())
    onnx.save(model, str(path))
    return path


def _thermal_image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.resize(rng.integers(0, 256, (3, 4), dtype=np.uint8), (W, H),
                      interpolation=cv2.INTER_NEAREST)


def test_a_registered_modality_is_a_model_input_a_keyword_and_a_run_flag(thermal, tmp_path,
                                                                         capsys):
    # config validation reads the registry: thermal is a known modality now
    assert MODALITY_CHANNELS["thermal"] == 1
    config = ModelConfig(name="fcn32s", backbone="resnet18", num_classes=2,
                         inputs=(("rgb", 3), ("thermal", 1)))
    assert config.in_channels == 4
    pytest.importorskip("onnxruntime")
    model = thermal_onnx(tmp_path / "thermal.onnx")
    frame = np.full((H, W, 3), 90, np.uint8)
    temps = [_thermal_image(seed) for seed in range(2)]
    with Segmenter(model, "onnxruntime:cpu", threads=1) as seg:
        assert seg.inputs == ("rgb", "thermal")
        labels = seg(frame, thermal=temps[0])
        assert np.array_equal(labels, (temps[0] > 128).astype(np.uint8))
        assert 0 < labels.mean() < 1  # both classes occur: the check above can fail
        batch = seg.batch([frame, frame], thermal=temps)
        assert all(np.array_equal(b, (t > 128).astype(np.uint8)) for b, t in zip(batch, temps))
        with pytest.raises(InputError, match=r"pass thermal= \(H×W uint8 intensity\)"):
            seg(frame)
        with pytest.raises(InputError, match="thermal must be H×W uint8 intensity"):
            seg(frame, thermal=temps[0].astype(np.float32))
        with pytest.raises(InputError, match="not depth"):
            seg(frame, thermal=temps[0], depth=np.ones((H, W), np.float32))
    # fcn-edge run: --thermal DIR (a flag made from the registry) and --input thermal=DIR
    for stem, temp in zip(STEMS, temps):
        (tmp_path / "rgb").mkdir(exist_ok=True)
        (tmp_path / "thermal").mkdir(exist_ok=True)
        assert cv2.imwrite(str(tmp_path / "rgb" / f"{stem}.png"), frame)
        assert cv2.imwrite(str(tmp_path / "thermal" / f"{stem}.png"), temp)
    for flags in (["--thermal", str(tmp_path / "thermal")],
                  ["--input", f"thermal={tmp_path / 'thermal'}"]):
        masks = tmp_path / f"masks{len(flags[0])}"
        assert main(["run", str(tmp_path / "rgb"), "--model", str(model), "--backend",
                     "onnxruntime:cpu", "--progress-every", "0", "--save-masks", str(masks),
                     *flags]) == 0
        for stem, temp in zip(STEMS, temps):
            assert np.array_equal(read_palette_png(masks / f"{stem}.png")[0], temp > 128)
    capsys.readouterr()
    assert main(["run", str(tmp_path / "rgb"), "--model", str(model)]) == 1
    assert "takes rgb + thermal: pass --thermal DIR, a folder of 8-bit thermal PNGs" in \
        capsys.readouterr().err
    # unregistered, it is gone everywhere at once
    unregister_modality("thermal")
    assert "thermal" not in MODALITY_CHANNELS and "thermal" not in MODALITIES
    with pytest.raises(InputError, match="not a known modality"):
        ModelConfig(inputs=(("rgb", 3), ("thermal", 1)))


def test_the_built_in_modalities_and_their_records():
    assert list(MODALITIES) == ["rgb", "depth", "hha"]
    assert dict(MODALITY_CHANNELS) == {"rgb": 3, "depth": 1, "hha": 3}
    depth, hha = get_modality("depth"), get_modality("hha")
    assert depth.accepts(np.dtype(np.uint16)) and depth.accepts(np.dtype(np.float16))
    assert not depth.accepts(np.dtype(np.uint8)) and not hha.accepts(np.dtype(np.float32))
    assert depth.read is not None and get_modality("rgb").read is None
    # depth resizes by nearest neighbour: no depth between a near object and the wall
    edge = np.array([[1000, 1000, 5000, 5000]], np.uint16)
    assert set(np.unique(depth.resize(edge, (1, 7)))) == {1000, 5000}
    assert len(np.unique(hha.resize(np.tile(edge.astype(np.uint8)[..., None], 3), (1, 7)))) > 2
    # the batch encoder writes each modality's channels
    assert encode_batch("hha", [np.zeros((2, 3, 3), np.uint8)], (0.5,) * 3,
                        (0.25,) * 3).shape == (1, 3, 2, 3)


@pytest.mark.parametrize("name,message", [
    ("depth", "already registered"), ("Thermal", "lower-case"), ("shape", "lower-case"),
    ("class", "keyword"), ("two words", "identifier")])
def test_bad_registrations_are_refused(name, message):
    with pytest.raises(InputError, match=message):
        register_modality(Modality(name, 1, ("uint8",), "", "", encode_thermal,
                                   resize_nearest))
    with pytest.raises(InputError, match="built in"):
        unregister_modality("depth")
    with pytest.raises(InputError, match=r"unknown input modality 'thermal'; registered: "
                                         r"rgb, depth, hha"):
        get_modality("thermal")
