"""The wire contract of a served model (fcn_edge.serve.protocol) and the Python-backend model
folder (fcn_edge.serve.repository), without a server: the configs are checked with Triton's
own protobuf schema (tritonclient's model_config_pb2), the artifacts are real exports.
The same code answers real requests in tests/serve/test_serving.py."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from google.protobuf import text_format

from fcn_edge.errors import InputError
from fcn_edge.runtime import Segmenter
from fcn_edge.runtime.metadata import ArtifactMeta
from fcn_edge.serve.protocol import (FRAME, IMAGE, Limits, decode_request, input_specs,
                                     output_specs, response_arrays)
from fcn_edge.serve.repository import ServeModel, python_config, write_python_model
from support_multi_io import export_artifact, make_multi_checkpoint

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="tritonclient is in the serve extra")


@pytest.fixture(scope="module")
def one_head(tmp_path_factory):
    """An RGB, one-task raw-IO + argmax artifact (8 classes)."""
    out = tmp_path_factory.mktemp("one")
    ckpt = make_multi_checkpoint(out / "one.pt", inputs=(("rgb", 3),), heads=())
    return export_artifact(ckpt, out, raw_io=True, argmax=True)


@pytest.fixture(scope="module")
def rgbd_two_heads(tmp_path_factory):
    """An RGB-D artifact with two heads (semantic 8 classes, geometric 3)."""
    out = tmp_path_factory.mktemp("two")
    return export_artifact(make_multi_checkpoint(out / "two.pt"), out)


def _meta(path) -> ArtifactMeta:
    with Segmenter(path) as seg:
        return seg.meta


def _parse(text: str):
    """Triton's own ModelConfig parser: an unknown field or a malformed value fails."""
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _frame(h=32, w=40, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# --- tensors ---------------------------------------------------------------------------------

def test_specs_of_a_one_task_artifact(one_head):
    meta = _meta(one_head)
    assert [(s.name, s.data_type, s.dims, s.optional) for s in input_specs(meta)] == [
        (FRAME, "TYPE_UINT8", (-1, -1, 3), True), (IMAGE, "TYPE_STRING", (1,), True)]
    assert [(s.name, s.data_type) for s in output_specs(meta)] == [("labels", "TYPE_UINT8")]


def test_specs_of_an_rgbd_two_head_artifact(rgbd_two_heads):
    meta = _meta(rgbd_two_heads)
    assert [(s.name, s.data_type, s.optional) for s in input_specs(meta)][2:] == [
        ("depth", "TYPE_FP32", False)]
    assert [s.name for s in output_specs(meta)] == ["labels_semantic", "labels_geometric"]


# --- decoding requests -----------------------------------------------------------------------

def test_a_bgr_frame_passes_as_it_is_and_an_rgb_one_is_reversed(one_head):
    meta, frame = _meta(one_head), _frame()
    bgr = decode_request({FRAME: frame[None]}, {}, meta).frames[0]
    rgb = decode_request({FRAME: frame[None, ..., ::-1]}, {"color_order": "rgb"}, meta)
    assert np.array_equal(bgr, frame) and np.array_equal(rgb.frames[0], frame)


@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_an_encoded_image_decodes_as_opencv_reads_its_file(one_head, ext, tmp_path):
    meta, frame = _meta(one_head), _frame()
    data = cv2.imencode(ext, frame)[1].tobytes()
    (tmp_path / f"f{ext}").write_bytes(data)
    decoded = decode_request({IMAGE: np.array([[data]], dtype=object)}, {}, meta).frames[0]
    assert np.array_equal(decoded, cv2.imread(str(tmp_path / f"f{ext}")))


def _refused(meta, inputs, params=None, limits=Limits()) -> str:
    with pytest.raises(InputError) as info:
        decode_request(inputs, params or {}, meta, limits)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_requests_that_cannot_be_served_are_refused_in_one_line(one_head):
    meta, frame = _meta(one_head), _frame()
    png = cv2.imencode(".png", frame)[1].tobytes()
    assert "exactly one" in _refused(meta, {})
    assert "not both" in _refused(meta, {FRAME: frame[None],
                                         IMAGE: np.array([[png]], dtype=object)})
    assert "empty" in _refused(meta, {FRAME: np.zeros((1, 0, 40, 3), np.uint8)})
    assert "no frame" in _refused(meta, {FRAME: np.zeros((0, 32, 40, 3), np.uint8)})
    assert "resize it first" in _refused(meta, {FRAME: np.zeros((1, 20, 40, 3), np.uint8)},
                                         limits=Limits(max_side=32))
    assert "color_order" in _refused(meta, {FRAME: frame[None]}, {"color_order": "yuv"})
    assert "N×H×W×3 uint8" in _refused(meta, {FRAME: frame[None].astype(np.float32)})


def test_images_that_cannot_be_served_are_refused_in_one_line(one_head):
    meta, frame = _meta(one_head), _frame()
    jpeg = cv2.imencode(".jpg", frame)[1].tobytes()

    def image(*items):
        return {IMAGE: np.array([[i] for i in items], dtype=object)}

    assert "not a readable JPEG or PNG" in _refused(meta, image(b"\xff\xd8\xff" + b"junk" * 50))
    assert "not a readable JPEG or PNG" in _refused(meta, image(jpeg[:20]))
    assert "is empty" in _refused(meta, image(b""))
    assert "bytes; at most 100" in _refused(meta, image(jpeg), limits=Limits(max_image_bytes=100))
    assert "BMP image" in _refused(meta, image(cv2.imencode(".bmp", frame)[1].tobytes()))
    assert "share one size" in _refused(meta, image(jpeg, cv2.imencode(".jpg", frame[:16])[1]
                                                    .tobytes()))


def test_a_small_file_claiming_a_huge_picture_is_refused_before_decoding(one_head):
    """A 9000-pixel-wide PNG of zeros is a few hundred bytes; its header alone refuses it."""
    data = cv2.imencode(".png", np.zeros((2, 9000, 3), np.uint8))[1].tobytes()
    assert len(data) < 2000
    message = _refused(_meta(one_head), {IMAGE: np.array([[data]], dtype=object)})
    assert "9000×2 pixels" in message and "8192" in message


def test_extra_modalities_are_required_and_counted(rgbd_two_heads):
    meta, frame = _meta(rgbd_two_heads), _frame()
    assert "also takes 'depth'" in _refused(meta, {FRAME: frame[None]})
    assert "one array per frame" in _refused(
        meta, {FRAME: frame[None], "depth": np.ones((2, 32, 40), np.float32)})
    decoded = decode_request({FRAME: frame[None], "depth": np.ones((1, 32, 40), np.float32)},
                             {}, meta)
    assert decoded.extras["depth"][0].shape == (32, 40)


def test_responses_stack_each_heads_labels(rgbd_two_heads):
    meta = _meta(rgbd_two_heads)
    results = [{"semantic": np.full((4, 5), i, np.uint8), "geometric": np.zeros((4, 5), np.uint8)}
               for i in range(3)]
    arrays = response_arrays(results, meta)
    assert arrays["labels_semantic"].shape == (3, 4, 5)
    assert arrays["labels_semantic"][2, 0, 0] == 2


# --- the model folder ------------------------------------------------------------------------

def test_the_config_is_triton_s_and_carries_the_artifact_s_metadata(one_head):
    meta = _meta(one_head)
    config = _parse(python_config(meta, ServeModel(name="seg", max_batch_size=8,
                                                   max_delay_us=500, instances=2), "m.onnx"))
    assert (config.name, config.backend, config.max_batch_size) == ("seg", "python", 8)
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [
        (2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert [(i.name, list(i.dims), i.optional) for i in config.input] == [
        (FRAME, [-1, -1, 3], True), (IMAGE, [1], True)]
    props = {k: v.string_value for k, v in config.parameters.items()}
    assert ArtifactMeta.from_props(props) == meta
    assert props["fcn_edge_artifact"] == "m.onnx"


def test_one_frame_per_call_has_no_dynamic_batcher(one_head):
    config = _parse(python_config(_meta(one_head), ServeModel(max_batch_size=1), "m.onnx"))
    assert config.max_batch_size == 1 and not config.HasField("dynamic_batching")


def test_the_model_folder_holds_config_model_py_and_the_artifact(one_head, tmp_path):
    folder = write_python_model(tmp_path / "repo", one_head, ServeModel(name="seg", version=3))
    assert folder == tmp_path / "repo" / "seg"
    assert sorted(p.name for p in (folder / "3").iterdir()) == sorted([one_head.name,
                                                                       "model.py"])
    assert (folder / "3" / one_head.name).read_bytes() == one_head.read_bytes()
    assert "fcn_edge.serve.python_model import TritonPythonModel" in \
        (folder / "3" / "model.py").read_text()
    _parse((folder / "config.pbtxt").read_text())


@pytest.mark.parametrize("settings, field", [
    (dict(name=".hidden"), "model name"), (dict(max_batch_size=0), "max_batch_size"),
    (dict(instances=65), "instances"), (dict(max_delay_us=-1), "max_delay_us"),
    (dict(version=0), "version"), (dict(max_side=4), "max_side")])
def test_serving_settings_out_of_range_are_one_line(settings, field):
    with pytest.raises(InputError, match=field):
        ServeModel(**settings)


def test_a_missing_or_foreign_artifact_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(InputError, match="no such artifact"):
        write_python_model(tmp_path / "repo", tmp_path / "none.onnx")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError):
        write_python_model(tmp_path / "repo", tmp_path / "notes.txt")
    assert not (tmp_path / "repo").exists()
