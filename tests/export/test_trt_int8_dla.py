"""The plain decisions for INT8 engines from Q/DQ exports and for Jetson DLA (trt_options):
every choice per TensorRT release, each refusal's one line, cache keys and output paths, and
which int8 ONNX files TensorRT can build (real ones, quantised by ``quantize_int8``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcn_edge.errors import InputError
from fcn_edge.export.int8 import quantize_int8
from fcn_edge.export.onnx_props import set_metadata
from fcn_edge.export.trt_options import (BUILD_PRECISIONS, KEY_FORMAT, BuildOptions, DlaPlan,
                                         builder_flags, default_output_path, dla_layer_report,
                                         dla_plan, dla_report_lines, engine_cache_key,
                                         int8_source_problem, network_flags, precision_strategy,
                                         tensorrt_version_info)
from fcn_edge.runtime.metadata import ArtifactMeta, Shapes

RELEASES = ("8.6.1", "10.3.0", "10.13.0", "11.0.0")
SHAPES = Shapes((1, 32, 32), (1, 64, 64), (2, 128, 128))
INT8_EXPORT = "`fcn-edge export --int8 --int8-target tensorrt`"


# --- INT8: typing and flags per release -----------------------------------------------------

@pytest.mark.parametrize("version, strategy, net_flags, flags", [
    ("8.6.1", "builder_flag", ("EXPLICIT_BATCH",), ("INT8",)),
    ("10.3.0", "builder_flag", (), ("INT8",)),
    ("10.13.0", "builder_flag", (), ("INT8",)),
    ("11.0.0", "strongly_typed", (), ()),        # no INT8 flag in 11: the Q/DQ types decide
])
def test_int8_from_a_qdq_onnx_per_release(version, strategy, net_flags, flags):
    assert precision_strategy(version, "int8", "int8") == strategy
    assert precision_strategy(version, "int8", "int8", dla=True) == strategy
    assert network_flags(version, strategy) == net_flags
    assert builder_flags("int8", strategy) == flags
    assert "FP16" not in builder_flags("int8", strategy, dla=True)  # fp32 head stays fp32
    assert tensorrt_version_info(version)["int8_flag"] == (version != "11.0.0")


@pytest.mark.parametrize("version", RELEASES)
@pytest.mark.parametrize("onnx_precision", ["fp32", "fp16"])
def test_int8_from_a_float_onnx_is_refused(version, onnx_precision):
    with pytest.raises(InputError) as error:
        precision_strategy(version, "int8", onnx_precision)
    assert str(error.value) == ("TensorRT int8 engines are built from an int8 Q/DQ ONNX: "
                                f"export one with {INT8_EXPORT}")


@pytest.mark.parametrize("version", RELEASES)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_an_int8_onnx_is_built_as_int8_only(version, precision):
    with pytest.raises(InputError, match=r"^this ONNX is int8 \(Q/DQ\), not fp\d\d: build it as "
                                         r"it is, without --fp16$"):
        precision_strategy(version, precision, "int8")


def test_float_strategies_are_unchanged_and_bad_precisions_refused():
    assert BUILD_PRECISIONS == ("fp32", "fp16", "int8")
    assert precision_strategy("10.3.0", "fp16", "fp32") == "builder_flag"
    assert precision_strategy("10.3.0", "fp16", "fp16") == "strongly_typed"
    assert builder_flags("fp16", "builder_flag") == ("FP16",)
    assert builder_flags("fp32", "strongly_typed", dla=True) == ("GPU_FALLBACK",)
    with pytest.raises(InputError, match="TensorRT builds take"):
        precision_strategy("10.3.0", "bf16", "fp32")
    with pytest.raises(InputError, match="fp32, fp16 or int8 ONNX"):
        precision_strategy("10.3.0", "fp32", "bf16")


@pytest.mark.parametrize("version, expected", [
    ("8.6.1", "builder_flag"), ("10.3.0", "builder_flag"), ("10.13.0", "builder_flag"),
    ("11.0.0", "strongly_typed"),
])
def test_an_fp16_onnx_for_dla_is_weakly_typed_before_11(version, expected):
    """DLA on 10.x takes the precision flags (trtexec sets FP16 for DLA); 11 is typed."""
    assert precision_strategy(version, "fp16", "fp16", dla=True) == expected
    assert builder_flags("fp16", expected, dla=True) == \
        (("FP16",) if expected == "builder_flag" else ()) + ("GPU_FALLBACK",)


# --- build options ----------------------------------------------------------------------------

def test_build_options_take_int8_the_gate_and_a_dla_core(tmp_path):
    options = BuildOptions(precision="int8", verify_data=str(tmp_path), dla_core=1)
    assert options.precision == "int8" and options.verify and options.verify_data == tmp_path
    assert BuildOptions().dla_core is None and BuildOptions().verify_data is None
    assert not BuildOptions(verify=False).verify
    for core in (-1, 16, 1.0, True, "0"):
        with pytest.raises(InputError, match=r"^dla_core must be an integer from 0 to 15"):
            BuildOptions(dla_core=core)


# --- DLA ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, precision, strategy", [
    ("8.6.1", "fp16", "builder_flag"), ("8.6.1", "int8", "builder_flag"),
    ("10.3.0", "fp16", "builder_flag"), ("10.3.0", "int8", "builder_flag"),
    ("10.7.0", "int8", "builder_flag"),
    ("11.4.1", "fp16", "strongly_typed"), ("11.4.1", "int8", "strongly_typed"),
])
def test_dla_plan_on_releases_with_dla(version, precision, strategy):
    plan = dla_plan(version, 1, precision, strategy, num_dla_cores=2, gpu_name="Orin")
    assert plan == DlaPlan(core=1, flags=("GPU_FALLBACK",), device_type="DLA")
    assert dla_plan(version, None, precision, strategy, num_dla_cores=2) is None


@pytest.mark.parametrize("version", ["10.13.0", "10.8.0", "11.0.0", "11.3.0"])
def test_releases_without_dla_are_refused(version):
    strategy = "strongly_typed" if version.startswith("11") else "builder_flag"
    with pytest.raises(InputError) as error:
        dla_plan(version, 0, "fp16", strategy, num_dla_cores=2)
    message = str(error.value)
    assert message.startswith(f"TensorRT {version} has no DLA support (10.7 was the last 10.x")
    assert message.endswith("or leave out --dla-core") and "\n" not in message
    assert not tensorrt_version_info(version)["dla"]


def test_dla_refusals_say_what_to_do():
    with pytest.raises(InputError) as error:
        dla_plan("10.3.0", 0, "fp16", "builder_flag", num_dla_cores=0,
                 gpu_name="NVIDIA GeForce RTX 4090")
    assert str(error.value) == ("NVIDIA GeForce RTX 4090 has no DLA (DLA cores are on Jetson "
                                "AGX Orin, Orin NX, Xavier and DRIVE): leave out --dla-core")
    with pytest.raises(InputError) as error:
        dla_plan("10.3.0", 2, "fp16", "builder_flag", num_dla_cores=2)
    assert str(error.value) == "--dla-core 2: this device has 2 DLA cores (0..1)"
    with pytest.raises(InputError, match=r"^--dla-core 1: this device has 1 DLA core \(0\)$"):
        dla_plan("10.3.0", 1, "int8", "builder_flag", num_dla_cores=1)
    for version, strategy in (("10.3.0", "builder_flag"), ("11.4.1", "strongly_typed")):
        with pytest.raises(InputError) as error:
            dla_plan(version, 0, "fp32", strategy, num_dla_cores=2)
        assert str(error.value) == ("DLA runs fp16 and int8 layers only: build with --fp16 or "
                                    "from an int8 ONNX")
    with pytest.raises(InputError, match="builds DLA engines from precision flags"):
        dla_plan("10.3.0", 0, "fp16", "strongly_typed", num_dla_cores=2)


LAYERS = [("conv1", "LayerType.CONVOLUTION", True), ("relu1", "LayerType.ACTIVATION", True),
          ("up8", "LayerType.RESIZE", False), ("argmax", "LayerType.TOPK", False)]


def test_dla_layer_report_and_lines():
    report = dla_layer_report(LAYERS, core=0)
    assert report == {"core": 0, "layers": 4, "on_dla": 2,
                      "gpu_fallback": [{"name": "up8", "type": "RESIZE"},
                                       {"name": "argmax", "type": "TOPK"}]}
    assert dla_report_lines(report) == [
        "DLA core 0: 2 of 4 layers on DLA; GPU fallback: 'up8' (RESIZE), 'argmax' (TOPK)"]
    assert dla_report_lines(report, limit=1) == [
        "DLA core 0: 2 of 4 layers on DLA; GPU fallback: 'up8' (RESIZE), +1 more"]
    everything = dla_layer_report(LAYERS[:2])
    assert "core" not in everything and everything["gpu_fallback"] == []
    assert dla_report_lines(everything) == ["DLA: 2 of 2 layers on DLA"]


# --- cache keys and paths -------------------------------------------------------------------

KEY_ARGS = dict(onnx_sha256="a" * 64, trt_version="10.3.0", gpu_name="Orin",
                compute_capability="8.7", precision="int8", shapes=SHAPES)


def test_the_dla_core_is_part_of_the_cache_key():
    gpu, fields = engine_cache_key(**KEY_ARGS)
    assert fields["dla_core"] is None and fields["format"] == KEY_FORMAT == "fcn-edge/engine-key/2"
    assert engine_cache_key(**KEY_ARGS, dla_core=None) == (gpu, fields)  # stable across calls
    core0, fields0 = engine_cache_key(**KEY_ARGS, dla_core=0)
    core1, _ = engine_cache_key(**KEY_ARGS, dla_core=1)
    assert len({gpu, core0, core1}) == 3 and fields0["dla_core"] == 0
    assert engine_cache_key(**KEY_ARGS, dla_core=0)[0] == core0


def test_default_output_paths():
    m = Path("/m")
    assert default_output_path(m / "model.onnx", "fp16") == m / "model.fp16.engine"
    assert default_output_path(m / "model.fp16.onnx", "fp16", 0) == m / "model.fp16.dla0.engine"
    assert default_output_path(m / "model.int8.onnx", "int8") == m / "model.int8.engine"
    assert default_output_path(m / "model.int8.onnx", "int8", 1) == m / "model.int8.dla1.engine"


# --- which int8 ONNX TensorRT can build: real quantised files -------------------------------

def make_meta(**changes) -> ArtifactMeta:
    values = dict(model="fcn8s", backbone="resnet18", num_classes=3, classes=("bg", "a", "b"),
                  palette=((0, 0, 0), (128, 0, 0), (0, 128, 0)), mean=(0.485, 0.456, 0.406),
                  std=(0.229, 0.224, 0.225), shapes=SHAPES)
    return ArtifactMeta(**{**values, **changes})


def trunk_and_head_onnx(path: Path, meta: ArtifactMeta) -> Path:
    """``images`` → a 3×3 trunk convolution (quantised) → ReLU → a 1×1 ``score`` (the head,
    kept fp32 by ``fp32_nodes``) → ``logits``, dynamic N/H/W, with fcn-edge metadata."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(0, 0.3, (8, 3, 3, 3)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (meta.num_classes, 8, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w1"], ["c1"], name="backbone/conv1", pads=[1] * 4),
         helper.make_node("Relu", ["c1"], ["r1"], name="backbone/relu1"),
         helper.make_node("Conv", ["r1", "w2"], ["logits"], name="score_fr")], "trunk_head",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT,
                                       ["N", meta.num_classes, "H", "W"])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    set_metadata(model, meta.to_props())
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory):
    """``{target: (int8 ArtifactMeta as export_int8 records it, ModelProto)}`` for both."""
    root = tmp_path_factory.mktemp("int8-sources")
    fp32 = trunk_and_head_onnx(root / "model.onnx", make_meta())
    calibration = [{"images": np.random.default_rng(1).normal(size=(4, 3, 32, 32))
                    .astype(np.float32)}]
    made = {}
    for target in ("tensorrt", "cpu"):
        path = quantize_int8(fp32, root / f"model-{target}.int8.onnx", calibration, target=target)
        model = onnx.load(str(path))
        assert any(n.op_type == "QuantizeLinear" for n in model.graph.node)
        made[target] = (make_meta(precision="int8", parity={"target": target}), model)
    return made


def test_a_tensorrt_int8_export_is_buildable(int8_models):
    meta, model = int8_models["tensorrt"]
    assert int8_source_problem(meta) is None
    for version in ("8.6", "10", "11"):
        assert int8_source_problem(meta, model, version) is None
        assert int8_source_problem(meta.with_(parity={}), model, version) is None


def test_a_cpu_int8_export_is_refused_from_its_metadata(int8_models):
    meta, _ = int8_models["cpu"]
    expected = ("this int8 ONNX was quantised for ONNX Runtime's CPU (`--int8-target cpu`: "
                "asymmetric uint8 activations), which TensorRT cannot build: export it again "
                f"with {INT8_EXPORT}")
    assert int8_source_problem(meta) == expected
    options_only = meta.with_(parity={}, export_options={"int8_target": "cpu"})
    assert int8_source_problem(options_only) == expected


def test_a_cpu_int8_graph_without_metadata_is_refused_by_its_zero_points(int8_models):
    meta, model = int8_models["cpu"]
    bare = meta.with_(parity={})
    assert int8_source_problem(bare) is None  # nothing to go on without the graph
    problem = int8_source_problem(bare, model)
    assert problem.startswith("this int8 ONNX is not TensorRT's int8: QuantizeLinear to uint8")
    assert problem.endswith(f": export it again with {INT8_EXPORT}") and "\n" not in problem


def test_other_precisions_have_no_int8_problem(int8_models):
    _, model = int8_models["cpu"]
    assert int8_source_problem(make_meta(precision="fp16", parity={"target": "cpu"}),
                               model) is None
