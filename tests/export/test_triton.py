"""Triton model repositories: files, and config.pbtxt parsed by protobuf's own text-format parser
against a descriptor that mirrors Triton's ModelConfig (field names, numbers and types from
triton-inference-server/common protobuf/model_config.proto)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format
from onnx import TensorProto, helper

from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.export.triton import triton_config, write_triton_repo
from fcn_edge.runtime.engine_file import write_engine
from fcn_edge.runtime.metadata import ArtifactMeta, Shapes

SHAPES = Shapes((1, 32, 32), (1, 64, 64), (2, 128, 128))
F = descriptor_pb2.FieldDescriptorProto
DATA_TYPES = ["TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32",
              "TYPE_UINT64", "TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16",
              "TYPE_FP32", "TYPE_FP64", "TYPE_STRING", "TYPE_BF16"]


def _model_config_class():
    """``inference.ModelConfig`` restricted to the fields fcn-edge writes."""
    file = descriptor_pb2.FileDescriptorProto(name="model_config_subset.proto",
                                              package="inference", syntax="proto3")
    enum = file.enum_type.add(name="DataType")
    for number, name in enumerate(DATA_TYPES):
        enum.value.add(name=name, number=number)

    def message(name, fields, parent=None):
        msg = (parent.nested_type if parent else file.message_type).add(name=name)
        for fname, number, ftype, repeated, type_name in fields:
            msg.field.add(name=fname, number=number, type=ftype, type_name=type_name,
                          label=F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL)
        return msg

    message("ModelInput", [("name", 1, F.TYPE_STRING, False, None),
                           ("data_type", 2, F.TYPE_ENUM, False, ".inference.DataType"),
                           ("dims", 4, F.TYPE_INT64, True, None)])
    message("ModelOutput", [("name", 1, F.TYPE_STRING, False, None),
                            ("data_type", 2, F.TYPE_ENUM, False, ".inference.DataType"),
                            ("dims", 3, F.TYPE_INT64, True, None)])
    message("ModelParameter", [("string_value", 1, F.TYPE_STRING, False, None)])
    config = message("ModelConfig", [
        ("name", 1, F.TYPE_STRING, False, None), ("platform", 2, F.TYPE_STRING, False, None),
        ("max_batch_size", 4, F.TYPE_INT32, False, None),
        ("input", 5, F.TYPE_MESSAGE, True, ".inference.ModelInput"),
        ("output", 6, F.TYPE_MESSAGE, True, ".inference.ModelOutput"),
        ("parameters", 14, F.TYPE_MESSAGE, True, ".inference.ModelConfig.ParametersEntry")])
    entry = message("ParametersEntry", [
        ("key", 1, F.TYPE_STRING, False, None),
        ("value", 2, F.TYPE_MESSAGE, False, ".inference.ModelParameter")], parent=config)
    entry.options.map_entry = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("inference.ModelConfig"))


ModelConfig = _model_config_class()


def parse_config(path: Path):
    return text_format.Parse(path.read_text("utf-8"), ModelConfig())


def tensor(t) -> tuple:
    return t.name, DATA_TYPES[t.data_type], list(t.dims)


def make_meta(**changes) -> ArtifactMeta:
    values = dict(model="fcn8s", backbone="resnet18", num_classes=3, classes=("bg", "a", "b"),
                  palette=((0, 0, 0), (128, 0, 0), (0, 128, 0)), mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), shapes=SHAPES, color_order="bgr")
    values.update(changes)
    return ArtifactMeta(**values)


def make_onnx(path: Path, meta: ArtifactMeta) -> Path:
    """A 1×1 convolution ``images`` → ``logits`` carrying ``meta`` in metadata_props."""
    weight = np.ones((meta.num_classes, 3, 1, 1), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "weight"], ["logits"])], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["N", meta.num_classes, "H", "W"])],
        [onnx.numpy_helper.from_array(weight, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


def test_onnx_repository_without_triton_batching(tmp_path):
    meta = make_meta()
    source = make_onnx(tmp_path / "model.onnx", meta)
    model_dir = write_triton_repo(tmp_path / "repo", "fcn8s_voc", source, meta)
    assert model_dir == tmp_path / "repo" / "fcn8s_voc"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == \
        ["1", "1/model.onnx", "config.pbtxt"]
    assert (model_dir / "1" / "model.onnx").read_bytes() == source.read_bytes()
    config = parse_config(model_dir / "config.pbtxt")
    assert (config.name, config.platform, config.max_batch_size) == \
        ("fcn8s_voc", "onnxruntime_onnx", 0)
    assert [tensor(t) for t in config.input] == [("images", "TYPE_FP32", [-1, 3, -1, -1])]
    assert [tensor(t) for t in config.output] == [("logits", "TYPE_FP32", [-1, 3, -1, -1])]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert json.loads(params["classes"]) == ["bg", "a", "b"]
    assert json.loads(params["palette"]) == [[0, 0, 0], [128, 0, 0], [0, 128, 0]]
    assert json.loads(params["mean"]) == [0.485, 0.456, 0.406]
    assert json.loads(params["std"]) == [0.229, 0.224, 0.225]
    assert params["color_order"] == "bgr"
    assert ArtifactMeta.from_props(params) == meta  # a client rebuilds the whole description


def test_raw_io_argmax_with_triton_batching(tmp_path):
    meta = make_meta(raw_io=True, argmax=True)
    text = triton_config("seg", meta, "onnxruntime_onnx", max_batch_size=8)
    config = text_format.Parse(text, ModelConfig())
    assert config.max_batch_size == 8
    assert [tensor(t) for t in config.input] == [("frames", "TYPE_UINT8", [-1, -1, 3])]
    assert [tensor(t) for t in config.output] == [("labels", "TYPE_UINT8", [-1, -1])]


def test_many_classes_give_int32_labels():
    n = 300
    meta = make_meta(num_classes=n, classes=tuple(f"c{i}" for i in range(n)),
                     palette=tuple((i % 256, 0, 0) for i in range(n)), argmax=True,
                     labels_dtype="int32")
    config = text_format.Parse(triton_config("big", meta, "onnxruntime_onnx"), ModelConfig())
    assert [tensor(t) for t in config.output] == [("labels", "TYPE_INT32", [-1, -1, -1])]


def test_awkward_class_names_survive_the_text_format(tmp_path):
    names = ('say "hi"', "back\\slash", "café", "tab\there", "new\nline")
    meta = make_meta(num_classes=5, classes=names, palette=((0, 0, 0),) * 5)
    config = text_format.Parse(triton_config("m", meta, "onnxruntime_onnx"), ModelConfig())
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert tuple(json.loads(params["classes"])) == names
    assert ArtifactMeta.from_props(params) == meta


def _engine(tmp_path: Path, meta: ArtifactMeta, plan: bytes) -> Path:
    return write_engine(tmp_path / "model.fp16.engine", plan,
                        {"meta": meta.to_dict(), "tensorrt_version": "10.3.0",
                         "gpu": {"name": "NVIDIA A100", "compute_capability": "8.0"}})


def test_tensorrt_repository_holds_the_bare_plan(tmp_path):
    meta = make_meta()
    plan = b"\x00TRT-PLAN" + bytes(range(256)) * 8
    engine = _engine(tmp_path, meta.with_(precision="fp16"), plan)
    model_dir = write_triton_repo(tmp_path / "repo", "fcn8s_trt", engine, meta,
                                  platform="tensorrt_plan", version=3, max_batch_size=2)
    assert (model_dir / "3" / "model.plan").read_bytes() == plan
    text = (model_dir / "config.pbtxt").read_text("utf-8")
    assert "onnxruntime" not in text and "optimization" not in text
    config = parse_config(model_dir / "config.pbtxt")
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 2)
    assert [tensor(t) for t in config.input] == [("images", "TYPE_FP32", [3, -1, -1])]
    assert [tensor(t) for t in config.output] == [("logits", "TYPE_FP32", [3, -1, -1])]
    # The engine's own description wins: it says fp16.
    assert config.parameters["precision"].string_value == "fp16"


def test_tensorrt_batch_beyond_the_profile_is_refused(tmp_path):
    engine = _engine(tmp_path, make_meta(), b"plan")
    with pytest.raises(InputError, match="batch ≤ 2"):
        write_triton_repo(tmp_path / "repo", "m", engine, make_meta(), "tensorrt_plan",
                          max_batch_size=4)


def test_wrong_artifact_for_the_platform(tmp_path):
    bare = tmp_path / "model.plan"
    bare.write_bytes(b"not an fcn-edge engine")
    with pytest.raises(ModelFormatError, match="not an fcn-edge engine"):
        write_triton_repo(tmp_path / "repo", "m", bare, make_meta(), "tensorrt_plan")
    engine = _engine(tmp_path, make_meta(), b"plan")
    with pytest.raises(InputError, match="tensorrt_plan"):
        write_triton_repo(tmp_path / "repo", "m", engine, make_meta(), "onnxruntime_onnx")


def test_onnx_metadata_is_preferred_and_must_match(tmp_path):
    own = make_meta(precision="fp16")
    source = make_onnx(tmp_path / "model.fp16.onnx", own)
    model_dir = write_triton_repo(tmp_path / "repo", "m", source, make_meta())
    assert parse_config(model_dir / "config.pbtxt").parameters["precision"].string_value == "fp16"
    other = make_meta(num_classes=2, classes=("x", "y"))
    with pytest.raises(InputError, match="3 classes"):
        write_triton_repo(tmp_path / "repo2", "m", source, other)


@pytest.mark.parametrize("name", ["", "../up", "a b", "x/y", ".hidden", "-dash", "a" * 129])
def test_model_name_is_validated(tmp_path, name):
    source = make_onnx(tmp_path / "model.onnx", make_meta())
    with pytest.raises(InputError, match="model name"):
        write_triton_repo(tmp_path / "repo", name, source, make_meta())
    assert not (tmp_path / "repo").exists()


def test_other_arguments_are_validated(tmp_path):
    source = make_onnx(tmp_path / "model.onnx", make_meta())
    write_triton_repo(tmp_path / "repo", "fcn8s_voc-v1.2", source, make_meta())  # valid name
    for kwargs, match in [({"platform": "pytorch_libtorch"}, "platform"),
                          ({"version": 0}, "version"), ({"max_batch_size": -1}, "max_batch")]:
        with pytest.raises(InputError, match=match):
            write_triton_repo(tmp_path / "repo", "m", source, make_meta(), **kwargs)
    with pytest.raises(InputError, match="no such artifact"):
        write_triton_repo(tmp_path / "repo", "m", tmp_path / "absent.onnx", make_meta())
