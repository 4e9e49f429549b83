"""Triton model repositories: files, and config.pbtxt parsed by protobuf's own strict
text-format parser into Triton's own ModelConfig message (``tritonclient.grpc.model_config_pb2``,
generated from triton-inference-server/common's model_config.proto): a field or enum value
Triton does not know fails the parse, as it fails the server's load."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper

from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.export.staging import Staging
from fcn_edge.export.triton import check_export_options, stage_model, triton_config, \
    write_triton_repo
from fcn_edge.runtime.engine_file import write_engine
from fcn_edge.runtime.metadata import ArtifactMeta, Shapes
from fcn_edge.serve.repository import ServeModel
from faults import small_filesystem

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2",
                                       reason="the serve extra (tritonclient) is not installed")
ModelConfig = model_config_pb2.ModelConfig
SHAPES = Shapes((1, 32, 32), (1, 64, 64), (2, 128, 128))


def parse_text(text: str):
    return text_format.Parse(text, ModelConfig())


def parse_config(path: Path):
    return parse_text(path.read_text("utf-8"))


def tensor(t) -> tuple:
    return t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)


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
    config = parse_text(text)
    assert config.max_batch_size == 8
    assert [tensor(t) for t in config.input] == [("frames", "TYPE_UINT8", [-1, -1, 3])]
    assert [tensor(t) for t in config.output] == [("labels", "TYPE_UINT8", [-1, -1])]


def test_many_classes_give_int32_labels():
    n = 300
    meta = make_meta(num_classes=n, classes=tuple(f"c{i}" for i in range(n)),
                     palette=tuple((i % 256, 0, 0) for i in range(n)), argmax=True,
                     labels_dtype="int32")
    config = parse_text(triton_config("big", meta, "onnxruntime_onnx"))
    assert [tensor(t) for t in config.output] == [("labels", "TYPE_INT32", [-1, -1, -1])]


def test_awkward_class_names_survive_the_text_format(tmp_path):
    names = ('say "hi"', "back\\slash", "café", "tab\there", "new\nline")
    meta = make_meta(num_classes=5, classes=names, palette=((0, 0, 0),) * 5)
    config = parse_text(triton_config("m", meta, "onnxruntime_onnx"))
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


def _stage(repo: Path, *args, **kwargs) -> Path:
    with Staging() as staging:
        final = stage_model(staging, repo, *args, **kwargs)
        staging.commit()
    return final


def test_python_model_config_is_tritons_own(tmp_path):
    """The Python-backend folder ``export --triton-platform python`` writes: its config parses
    strictly into Triton's ModelConfig, with batching, instances and the metadata."""
    meta = make_meta()
    source = make_onnx(tmp_path / "best.onnx", meta)
    model_dir = _stage(tmp_path / "repo", "best", source, meta, "python", max_batch=4,
                       instances=2)
    assert model_dir == tmp_path / "repo" / "best"
    assert sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")) == \
        ["1", "1/best.onnx", "1/model.py", "config.pbtxt"]
    config = parse_config(model_dir / "config.pbtxt")
    assert (config.name, config.backend, config.platform, config.max_batch_size) == \
        ("best", "python", "", 4)
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000
    assert [(g.count, g.kind) for g in config.instance_group] == \
        [(2, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert [tensor(t) + (t.optional,) for t in config.input] == \
        [("frame", "TYPE_UINT8", [-1, -1, 3], True), ("image", "TYPE_STRING", [1], True)]
    assert [tensor(t) for t in config.output] == [("labels", "TYPE_UINT8", [-1, -1])]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["fcn_edge_artifact"] == "best.onnx"
    assert ArtifactMeta.from_props(params) == meta


def test_python_model_without_batching(tmp_path):
    meta = make_meta()
    source = make_onnx(tmp_path / "best.onnx", meta)
    config = parse_config(_stage(tmp_path / "repo", "best", source, meta, "python",
                                 max_batch=1) / "config.pbtxt")
    assert config.max_batch_size == 1 and not config.HasField("dynamic_batching")
    default = parse_config(_stage(tmp_path / "repo2", "best", source, meta, "python")
                           / "config.pbtxt")
    assert default.max_batch_size == ServeModel.max_batch_size
    assert default.HasField("dynamic_batching")
    onnx_default = parse_config(_stage(tmp_path / "repo3", "best", source, meta)
                                / "config.pbtxt")
    assert (onnx_default.platform, onnx_default.max_batch_size) == ("onnxruntime_onnx", 0)


@pytest.mark.parametrize("platform, max_batch, instances, match", [
    ("tensorrt_plan", None, None, "--triton-platform 'tensorrt_plan'"),
    ("python", 0, None, "--triton-max-batch 0 with --triton-platform python"),
    ("onnxruntime_onnx", None, 2, "--triton-instances goes with --triton-platform python")])
def test_export_options_are_refused_before_any_work(platform, max_batch, instances, match):
    with pytest.raises(InputError, match=match):
        check_export_options(platform, max_batch, instances)
    with pytest.raises(InputError, match="--triton-threads goes with --triton-platform python"):
        check_export_options("onnxruntime_onnx", None, None, 1)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_repository_never_holds_a_staging_folder(tmp_path):
    """Triton takes every subfolder of a repository for a model, a hidden one too (a live
    server logs a failed load and is not ready while one exists; tests/serve shows it): the
    model folder is staged beside the repository, and an old one is moved aside there too."""
    repo = tmp_path / "repo"
    for text in ("old", "new"):
        with Staging() as staging:
            staging.scanned(repo)
            staged = staging.path(repo / "m")
            staged.mkdir()
            (staged / "config.pbtxt").write_text(text)
            assert staged.parent.parent == tmp_path  # beside the repository
            assert not repo.exists() or _hidden(repo) == []
            staging.commit()
            assert _hidden(repo) == []
        assert (repo / "m" / "config.pbtxt").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo"]  # nothing left beside it


def test_a_mounted_repository_stages_inside_itself(tmp_path):
    """A repository that is a mount point: its parent is another file system, where a rename
    cannot reach, so its staging folder stays inside it (and the export still succeeds)."""
    with small_filesystem(tmp_path / "repo", "1m") as repo:
        meta = make_meta()
        model_dir = _stage(repo, "m", make_onnx(tmp_path / "m.onnx", meta), meta)
        assert sorted(p.name for p in repo.iterdir()) == ["m"]
        assert (model_dir / "1" / "model.onnx").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "repo"]


def test_export_writes_the_python_model(checkpoint, tmp_path):
    """``fcn-edge export --triton-platform python``: the Python-backend folder, staged and
    moved into the repository with the rest of the export; nothing hidden left anywhere."""
    from fcn_edge.cli import main

    repo = tmp_path / "repo"
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "out"), "--argmax",
                 "--parity-sizes", "64x64", "--triton-repo", str(repo), "--triton-platform",
                 "python", "--triton-max-batch", "4", "--triton-instances", "2",
                 "--triton-threads", "1"]) == 0
    model_dir = repo / "best_argmax"
    assert (model_dir / "1" / "best_argmax.onnx").read_bytes() == \
        (tmp_path / "out" / "best_argmax.onnx").read_bytes()
    config = parse_config(model_dir / "config.pbtxt")
    assert (config.backend, config.max_batch_size, config.instance_group[0].count) == \
        ("python", 4, 2)
    assert config.parameters["fcn_edge_threads"].string_value == "1"
    assert not [p for p in tmp_path.rglob(".*")]
