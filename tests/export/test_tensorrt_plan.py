"""The TensorRT builder's plain decisions (typing per release, profiles, cache keys, paths),
and, where TensorRT and a GPU are present, a real engine build."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from fcn_edge.errors import BackendUnavailable, InputError, ModelFormatError
from fcn_edge.export import tensorrt as trt_build
from fcn_edge.export.tensorrt import BuildOptions, build_engine
from fcn_edge.export.trt_options import (builder_flags, cached_engine_path, default_output_path,
                                         engine_cache_key, find_cached_engine, fp16_strategy,
                                         network_flags, optimisation_profile, precision_strategy,
                                         tensorrt_version_info)
from fcn_edge.runtime.engine_file import read_engine, write_engine
from fcn_edge.runtime.metadata import ArtifactMeta, Shapes, parse_shapes
from fcn_edge.runtime.onnx_file import read_onnx_metadata

SHAPES = Shapes((1, 32, 32), (1, 64, 64), (2, 128, 128))


def make_meta(**changes) -> ArtifactMeta:
    values = dict(model="fcn8s", backbone="resnet18", num_classes=3, classes=("bg", "a", "b"),
                  palette=((0, 0, 0), (128, 0, 0), (0, 128, 0)), mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), shapes=SHAPES)
    values.update(changes)
    return ArtifactMeta(**values)


def make_onnx(path: Path, meta: ArtifactMeta) -> Path:
    """A 1×1 convolution ``images`` (N×3×H×W) → ``logits`` (N×C×H×W), dynamic N/H/W,
    carrying ``meta`` in its metadata_props as fcn-edge exports do."""
    weight = np.random.default_rng(0).normal(size=(meta.num_classes, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "weight"], ["logits"], name="score")], "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["N", meta.num_classes, "H", "W"])],
        [onnx.numpy_helper.from_array(weight, "weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # loadable by older ONNX Runtime and TensorRT parsers
    onnx.checker.check_model(model)
    for key, value in meta.to_props().items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
    return path


# --- TensorRT releases ----------------------------------------------------------------------

def test_version_info():
    info = tensorrt_version_info("10.3.0.26")
    assert (info["version"], info["major"], info["minor"], info["patch"]) == ("10.3.0", 10, 3, 0)
    assert info["fp16_flag"] and info["strongly_typed"] and not info["explicit_batch_flag"]
    info11 = tensorrt_version_info("11.0.0")
    assert info11["always_strongly_typed"] and not info11["fp16_flag"]
    assert tensorrt_version_info("8.6.1")["explicit_batch_flag"]
    with pytest.raises(InputError):
        tensorrt_version_info("unknown")


@pytest.mark.parametrize("version, onnx_is_fp16, expected", [
    ("10.3.0", False, "builder_flag"),
    ("10.3.0", True, "strongly_typed"),
    ("10.13.0", False, "builder_flag"),     # FP16 flag deprecated in 10.12, still there
    ("10.13.0", True, "strongly_typed"),
    ("11.0.0", True, "strongly_typed"),
    ("8.6.1", False, "builder_flag"),
    ("8.6.1", True, "builder_flag"),        # no strongly typed networks before 9.1
])
def test_fp16_strategy(version, onnx_is_fp16, expected):
    assert fp16_strategy(version, onnx_is_fp16) == expected


def test_fp16_on_tensorrt_11_needs_an_fp16_onnx():
    with pytest.raises(InputError, match=r"fcn-edge export --fp16"):
        fp16_strategy("11.0.0", False)


@pytest.mark.parametrize("onnx_is_fp16", [False, True])
def test_tensorrt_before_8_6_is_refused(onnx_is_fp16):
    with pytest.raises(BackendUnavailable, match=r"8\.5\.0 is too old.*fcn-edge\[trt\]"):
        fp16_strategy("8.5.0", onnx_is_fp16)


@pytest.mark.parametrize("version, precision, onnx_precision, expected", [
    ("10.3.0", "fp32", "fp32", "builder_flag"),
    ("11.0.0", "fp32", "fp32", "strongly_typed"),
    ("10.3.0", "fp16", "fp16", "strongly_typed"),
    ("8.6.1", "fp16", "fp32", "builder_flag"),
])
def test_precision_strategy(version, precision, onnx_precision, expected):
    assert precision_strategy(version, precision, onnx_precision) == expected


def test_precision_strategy_refusals():
    with pytest.raises(InputError, match="--fp16"):
        precision_strategy("10.3.0", "fp32", "fp16")
    with pytest.raises(InputError, match="int8"):
        precision_strategy("10.3.0", "fp32", "int8")


@pytest.mark.parametrize("version, strategy, expected", [
    ("8.6.1", "builder_flag", ("EXPLICIT_BATCH",)),
    ("10.3.0", "builder_flag", ()),                 # explicit batch is the default from 10
    ("10.3.0", "strongly_typed", ("STRONGLY_TYPED",)),
    ("10.13.0", "strongly_typed", ("STRONGLY_TYPED",)),
    ("11.0.0", "strongly_typed", ()),               # always strongly typed; flag ignored
])
def test_network_flags(version, strategy, expected):
    assert network_flags(version, strategy) == expected


def test_network_flags_refusals():
    with pytest.raises(InputError, match="no weakly typed"):
        network_flags("11.0.0", "builder_flag")
    with pytest.raises(BackendUnavailable, match="no strongly typed"):
        network_flags("8.6.1", "strongly_typed")
    with pytest.raises(BackendUnavailable):
        network_flags("8.5.0", "builder_flag")


def test_builder_flags():
    assert builder_flags("fp16", "builder_flag") == ("FP16",)
    assert builder_flags("fp16", "strongly_typed") == ()
    assert builder_flags("fp32", "builder_flag") == ()


# --- profiles -------------------------------------------------------------------------------

def test_profile_plain_is_nchw():
    assert optimisation_profile(make_meta(), SHAPES) == {
        "images": ((1, 3, 32, 32), (1, 3, 64, 64), (2, 3, 128, 128))}


def test_profile_raw_io_is_nhwc():
    assert optimisation_profile(make_meta(raw_io=True, argmax=True), SHAPES) == {
        "frames": ((1, 32, 32, 3), (1, 64, 64, 3), (2, 128, 128, 3))}


def test_profile_checks_the_size_multiple():
    meta = make_meta(size_multiple=32)
    assert optimisation_profile(meta, SHAPES)["images"][2] == (2, 3, 128, 128)
    with pytest.raises(InputError, match="multiple of 32"):
        optimisation_profile(meta, parse_shapes("32x32:48x48:128x128"))


@pytest.mark.parametrize("text", ["512x512:256x256:1024x1024", "4x64x64:2x64x64:8x64x64",
                                  "64x64:64x64:32x32"])
def test_profile_refuses_min_above_opt_or_opt_above_max(text):
    with pytest.raises(InputError, match="min ≤ opt ≤ max"):
        parse_shapes(text)


# --- cache keys and paths -------------------------------------------------------------------

KEY_ARGS = dict(onnx_sha256="a" * 64, trt_version="10.3.0", gpu_name="NVIDIA A100-SXM4-40GB",
                compute_capability="8.0", precision="fp16", shapes=SHAPES)


def test_cache_key_is_stable_and_canonical():
    key, fields = engine_cache_key(**KEY_ARGS)
    assert len(key) == 64 and int(key, 16) >= 0
    assert engine_cache_key(**KEY_ARGS) == (key, fields)
    # Same plan format: build numbers and a tuple capability change nothing.
    assert engine_cache_key(**{**KEY_ARGS, "trt_version": "10.3.0.26"})[0] == key
    assert engine_cache_key(**{**KEY_ARGS, "compute_capability": (8, 0)})[0] == key
    assert fields["shapes"] == SHAPES.to_json() and fields["tensorrt_version"] == "10.3.0"


@pytest.mark.parametrize("field, value", [
    ("onnx_sha256", "b" * 64), ("trt_version", "10.3.1"), ("trt_version", "11.0.0"),
    ("gpu_name", "NVIDIA A100-SXM4-80GB"), ("compute_capability", "8.6"),
    ("precision", "fp32"), ("shapes", Shapes((1, 32, 32), (1, 64, 64), (4, 128, 128))),
    ("shapes", Shapes((1, 32, 32), (1, 96, 96), (2, 128, 128))),
])
def test_cache_key_changes_with_every_field(field, value):
    key, _ = engine_cache_key(**KEY_ARGS)
    changed, fields = engine_cache_key(**{**KEY_ARGS, field: value})
    assert changed != key
    assert fields != engine_cache_key(**KEY_ARGS)[1]


def test_find_cached_engine(tmp_path):
    key, _ = engine_cache_key(**KEY_ARGS)
    assert find_cached_engine(tmp_path, key) is None
    path = cached_engine_path(tmp_path, key)
    assert path == tmp_path / f"{key}.engine"
    write_engine(path, b"plan", {"meta": make_meta().to_dict(), "tensorrt_version": "10.3.0",
                                 "gpu": {}})
    assert find_cached_engine(tmp_path, key) == path


def test_default_output_path():
    assert default_output_path("/m/model.onnx", "fp16") == Path("/m/model.fp16.engine")
    assert default_output_path("/m/model.fp16.onnx", "fp16") == Path("/m/model.fp16.engine")
    assert default_output_path("/m/model.onnx", "fp32") == Path("/m/model.fp32.engine")


def test_build_options(tmp_path, monkeypatch):
    monkeypatch.setenv("FCN_EDGE_CACHE", str(tmp_path / "c"))
    options = BuildOptions(output=str(tmp_path / "x.engine"))
    assert options.cache_dir == tmp_path / "c" / "engines"
    assert options.output == tmp_path / "x.engine" and options.precision is None
    assert options.workspace_gb == 4.0 and not options.force
    monkeypatch.delenv("FCN_EDGE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert BuildOptions().cache_dir == tmp_path / "xdg" / "fcn-edge" / "engines"
    assert BuildOptions(precision="int8").precision == "int8"  # from an int8 Q/DQ ONNX
    with pytest.raises(InputError):
        BuildOptions(precision="bf16")
    with pytest.raises(InputError):
        BuildOptions(workspace_gb=0)


# --- ONNX metadata and the build entry point ------------------------------------------------

def test_read_onnx_metadata_with_and_without_the_onnx_package(tmp_path, monkeypatch):
    meta = make_meta(raw_io=False, precision="fp32")
    path = make_onnx(tmp_path / "model.onnx", meta)
    assert read_onnx_metadata(path) == meta
    monkeypatch.setitem(sys.modules, "onnx", None)  # an edge box without the onnx package
    assert read_onnx_metadata(path) == meta


def test_read_onnx_metadata_refuses_other_files(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x07garbage that is not protobuf \xff\xff")
    with pytest.raises(ModelFormatError):
        read_onnx_metadata(junk)


def test_build_engine_refuses_missing_file_and_bad_shapes_before_tensorrt(tmp_path):
    with pytest.raises(InputError, match="no such ONNX"):
        build_engine(tmp_path / "absent.onnx")
    path = make_onnx(tmp_path / "model.onnx", make_meta(size_multiple=32))
    with pytest.raises(InputError, match="multiple of 32"):
        build_engine(path, BuildOptions(shapes=parse_shapes("32x32:48x48:64x64"),
                                        cache_dir=tmp_path / "cache"))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None,
                    reason="TensorRT is installed here")
def test_build_engine_without_tensorrt_names_the_extra(tmp_path):
    path = make_onnx(tmp_path / "model.onnx", make_meta())
    with pytest.raises(BackendUnavailable, match=r'pip install "fcn-edge\[trt\]"') as info:
        build_engine(path, BuildOptions(cache_dir=tmp_path / "cache"))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "model.fp32.engine").exists()


@pytest.mark.tensorrt
def test_build_a_real_engine(tmp_path, capsys):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    try:
        trt_build.query_gpu()
    except BackendUnavailable as exc:
        pytest.skip(f"no CUDA GPU for TensorRT: {exc}")
    meta = make_meta()
    onnx_path = make_onnx(tmp_path / "model.onnx", meta)
    options = BuildOptions(precision="fp32", workspace_gb=0.5, cache_dir=tmp_path / "cache")
    out = build_engine(onnx_path, options)
    assert out == tmp_path / "model.fp32.engine"
    header, plan = read_engine(out)
    assert header["meta"]["shapes"] == SHAPES.to_json() and header["precision"] == "fp32"
    assert header["tensorrt_version"] == trt.__version__
    assert list((tmp_path / "cache").glob("timing-*.cache"))
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan)
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    assert sorted(names) == ["images", "logits"]
    assert tuple(engine.get_tensor_profile_shape("images", 0)[2]) == (2, 3, 128, 128)
    capsys.readouterr()
    # Same ONNX, TensorRT, GPU, precision and shapes: served from the cache, not rebuilt.
    again = build_engine(onnx_path, BuildOptions(precision="fp32", cache_dir=tmp_path / "cache",
                                                 output=tmp_path / "copy.engine"))
    assert "building" not in capsys.readouterr().err
    assert read_engine(again) == (header, plan)


# --- the builder's orchestration, against a stand-in for the TensorRT API -------------------
# TensorRT cannot run in CI (no GPU), so this stand-in implements just the calls the builder
# makes, with the names and signatures of TensorRT's Python bindings (python/src/infer/
# pyCore.cpp, parsers/pyOnnx.cpp). Its "plan" records what the builder asked for, so the tests
# check the flags, profile and workspace per release, the caching and the error reporting.

class _Enum:
    def __init__(self, **members):
        self.__dict__.update(members)


class _ParserError:
    def __init__(self, node, name, op, desc):
        self._node, self._name, self._op, self._desc = node, name, op, desc

    def node(self): return self._node
    def node_name(self): return self._name
    def node_operator(self): return self._op
    def code(self): return "ErrorCode.UNSUPPORTED_NODE"
    def desc(self): return self._desc


class _Tensor:
    def __init__(self, name):
        self.name = name


class FakeTensorRT:
    def __init__(self, version, parse_errors=(), build_fails=False):
        self.__version__ = version
        major = int(version.split(".")[0])
        self.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda s, sev: None})
        self.NetworkDefinitionCreationFlag = (
            _Enum(STRONGLY_TYPED=0) if major >= 11 else _Enum(EXPLICIT_BATCH=0, STRONGLY_TYPED=1))
        self.BuilderFlag = _Enum(TF32=7) if major >= 11 else _Enum(FP16=0, TF32=7)
        self.MemoryPoolType = _Enum(WORKSPACE=0)
        self.parse_errors, self.build_fails, self.builds = list(parse_errors), build_fails, 0
        trt = self

        class Builder:
            def __init__(self, logger): pass
            def create_network(self, flags=0): return _Enum(flags=flags, inputs=[], outputs=[],
                                                            num_inputs=0, num_outputs=0)
            def create_builder_config(self): return Config()
            def create_optimization_profile(self): return Profile()

            def build_serialized_network(self, network, config):
                trt.builds += 1
                if trt.build_fails:
                    return None
                return json.dumps({"network_flags": network.flags, "flags": config.flags,
                                   "workspace": config.workspace,
                                   "profile": config.profiles[0].shapes}).encode()

        class Profile:
            def __init__(self): self.shapes = {}
            def set_shape(self, input, min, opt, max): self.shapes[input] = [min, opt, max]

        class Config:
            def __init__(self): self.flags, self.profiles, self.cache = [], [], None
            def set_memory_pool_limit(self, pool, pool_size): self.workspace = pool_size
            def set_flag(self, flag): self.flags.append(flag)
            def add_optimization_profile(self, profile):
                self.profiles.append(profile)
                return len(self.profiles) - 1
            def create_timing_cache(self, serialized_timing_cache):
                return _Enum(serialize=lambda: serialized_timing_cache + b"+tactics")
            def set_timing_cache(self, cache, ignore_mismatch):
                self.cache = cache
                return True
            def get_timing_cache(self): return self.cache

        class OnnxParser:
            def __init__(self, network, logger):
                self.network, self.errors = network, trt.parse_errors
            num_errors = property(lambda self: len(self.errors))
            def get_error(self, index): return self.errors[index]
            def parse_from_file(self, model):
                graph = onnx.load(model).graph
                self.network.inputs = [_Tensor(v.name) for v in graph.input]
                self.network.outputs = [_Tensor(v.name) for v in graph.output]
                self.network.num_inputs = len(graph.input)
                self.network.num_outputs = len(graph.output)
                self.network.get_input = lambda i: self.network.inputs[i]
                self.network.get_output = lambda i: self.network.outputs[i]
                return not self.errors

        self.Builder, self.OnnxParser = Builder, OnnxParser


@pytest.fixture
def fake_trt(monkeypatch):
    def install(version, **kwargs):
        fake = FakeTensorRT(version, **kwargs)
        monkeypatch.setitem(sys.modules, "tensorrt", fake)
        monkeypatch.setattr(trt_build, "query_gpu", lambda: ("NVIDIA A100-SXM4-40GB", "8.0"))
        return fake
    return install


def _plan(path: Path) -> dict:
    return json.loads(read_engine(path)[1])


@pytest.mark.parametrize("version, onnx_precision, network_bits, flags", [
    ("10.3.0", "fp32", 0, [0]),            # weakly typed + BuilderFlag.FP16
    ("10.3.0", "fp16", 1 << 1, []),        # STRONGLY_TYPED, no precision flag
    ("8.6.1", "fp32", 1 << 0, [0]),        # EXPLICIT_BATCH + FP16
    ("11.0.0", "fp16", 0, []),             # always strongly typed
])
def test_fp16_build_per_release(tmp_path, fake_trt, version, onnx_precision, network_bits, flags):
    fake_trt(version)
    onnx_path = make_onnx(tmp_path / "model.onnx", make_meta(precision=onnx_precision))
    # verify=False: this stand-in's plan records the flags and cannot run (the accuracy
    # gate is tested end to end in test_build_gate.py, with a stand-in whose plan runs).
    out = build_engine(onnx_path, BuildOptions(precision="fp16", workspace_gb=0.5,
                                               cache_dir=tmp_path / "cache", verify=False))
    assert out == tmp_path / "model.fp16.engine"
    plan = _plan(out)
    assert (plan["network_flags"], plan["flags"]) == (network_bits, flags)
    assert plan["workspace"] == 1 << 29
    assert plan["profile"] == {"images": [[1, 3, 32, 32], [1, 3, 64, 64], [2, 3, 128, 128]]}
    header = read_engine(out)[0]
    assert header["meta"]["precision"] == "fp16" and header["precision"] == "fp16"
    assert header["gpu"] == {"name": "NVIDIA A100-SXM4-40GB", "compute_capability": "8.0"}
    assert header["key_fields"]["onnx_sha256"] == header["onnx_sha256"]
    assert header["cache_key"] == engine_cache_key(
        header["onnx_sha256"], version, "NVIDIA A100-SXM4-40GB", "8.0", "fp16", SHAPES)[0]


def test_fp16_from_fp32_onnx_on_tensorrt_11_is_refused(tmp_path, fake_trt):
    fake_trt("11.0.0")
    onnx_path = make_onnx(tmp_path / "model.onnx", make_meta())
    with pytest.raises(InputError, match="fcn-edge export --fp16"):
        build_engine(onnx_path, BuildOptions(precision="fp16", cache_dir=tmp_path / "cache"))


def test_cache_reuse_force_and_damaged_cache(tmp_path, fake_trt, capsys):
    fake = fake_trt("10.3.0.26")
    onnx_path = make_onnx(tmp_path / "model.onnx", make_meta())
    options = BuildOptions(cache_dir=tmp_path / "cache", timing_cache=tmp_path / "t.cache",
                           verify=False)
    first = build_engine(onnx_path, options)
    assert fake.builds == 1 and first == tmp_path / "model.fp32.engine"
    assert (tmp_path / "t.cache").read_bytes() == b"+tactics"
    build_engine(onnx_path, options)
    assert fake.builds == 1  # served from the cache
    build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache", force=True,
                                         timing_cache=tmp_path / "t.cache", verify=False))
    assert fake.builds == 2 and (tmp_path / "t.cache").read_bytes() == b"+tactics+tactics"
    (cached,) = (tmp_path / "cache").glob("*.engine")
    cached.write_bytes(cached.read_bytes()[:-3])  # a cache file cut short
    capsys.readouterr()
    build_engine(onnx_path, options)
    assert fake.builds == 3
    assert "rebuilding: the cached engine" in capsys.readouterr().err
    assert read_engine(first)[1] == read_engine(cached)[1]


def test_parser_errors_are_all_reported(tmp_path, fake_trt):
    fake_trt("10.3.0", parse_errors=[_ParserError(0, "score", "Conv", "weights are odd"),
                                     _ParserError(-1, "", "", "graph is odd")])
    onnx_path = make_onnx(tmp_path / "model.onnx", make_meta())
    with pytest.raises(ModelFormatError) as info:
        build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache"))
    assert "node 0 'score' (Conv): UNSUPPORTED_NODE: weights are odd" in str(info.value)
    assert "; UNSUPPORTED_NODE: graph is odd" in str(info.value)


def test_failed_build_and_mismatched_tensor_names(tmp_path, fake_trt):
    fake_trt("10.3.0", build_fails=True)
    onnx_path = make_onnx(tmp_path / "model.onnx", make_meta())
    with pytest.raises(ModelFormatError, match="could not build an engine"):
        build_engine(onnx_path, BuildOptions(cache_dir=tmp_path / "cache"))
    raw = make_onnx(tmp_path / "raw.onnx", make_meta(raw_io=True))  # says frames, has images
    with pytest.raises(ModelFormatError,
                       match=r"inputs \['images'\].*metadata says frames → logits"):
        build_engine(raw, BuildOptions(cache_dir=tmp_path / "cache"))
    assert not list((tmp_path / "cache").glob("*.engine"))
