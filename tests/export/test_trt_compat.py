"""The TensorRT compatibility check: one small graph per rule that breaks it (and its mended
twin that passes), the support tables as read from onnx-tensorrt, and `fcn-edge build
--check-only`. Every artifact fcn-edge exports passing it: test_trt_compat_artifacts.py."""
from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcn_edge.cli import main
from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.export.trt_compat import (RULES, check_tensorrt_compat, check_tensorrt_targets,
                                        parse_versions, require_tensorrt_compat)
from fcn_edge.export.trt_support import TRT_VERSIONS, load_table, parse_operators_md, trt_family
from fcn_edge.runtime.metadata import ArtifactMeta

F, F16, U8, I8, I32, I64 = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8,
                            TensorProto.INT8, TensorProto.INT32, TensorProto.INT64)


def model(nodes, inputs, outputs, initializers=(), opset=17, meta=None) -> onnx.ModelProto:
    """A checked ONNX model of ``nodes``; ``inputs``/``outputs`` as (name, type, shape)."""
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs], list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    if meta is not None:
        for key, value in meta.to_props().items():
            m.metadata_props.add(key=key, value=value)
    return m


def conv_weight(out=2, cin=3) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones((out, cin, 1, 1), np.float32), "w")


def verdicts(m, version, **kwargs) -> dict[str, str]:
    report = check_tensorrt_compat(m, version, **kwargs)
    return {rule: report.verdict(rule) for rule in RULES}


def failing(m, version, **kwargs) -> set[str]:
    return {rule for rule, v in verdicts(m, version, **kwargs).items() if v == "FAIL"}


def only_error(m, version, **kwargs):
    (finding,) = check_tensorrt_compat(m, version, **kwargs).errors
    return finding


def meta_of(**changes) -> ArtifactMeta:
    values = dict(model="fcn8s", backbone="resnet18", num_classes=2, classes=("a", "b"),
                  palette=((0, 0, 0), (9, 9, 9)), mean=(0.5,) * 3, std=(0.25,) * 3)
    values.update(changes)
    return ArtifactMeta(**values)


CONV = model([helper.make_node("Conv", ["images", "w"], ["logits"], name="score")],
             [("images", F, ["N", 3, "H", "W"])], [("logits", F, ["N", 2, "H", "W"])],
             [conv_weight()])


def test_a_plain_convolution_builds_everywhere():
    for version in TRT_VERSIONS:
        report = check_tensorrt_compat(CONV, version)
        assert report.ok and not report.findings, report.findings
        assert set(report.checked) == set(RULES)


# --- opset ------------------------------------------------------------------------------------

def test_opset_outside_a_release_fails_only_there():
    relu = lambda opset: model([helper.make_node("Relu", ["x"], ["y"], name="r")],  # noqa: E731
                               [("x", F, [1, 3])], [("y", F, [1, 3])], opset=opset)
    assert failing(relu(18), "8.6") == {"opset"} and not failing(relu(18), "10")
    assert failing(relu(21), "10") == {"opset"} and not failing(relu(21), "11")
    finding = only_error(relu(18), "8.6")
    assert "opset 18" in finding.message and "1–17" in finding.message
    assert "--opset 17" in finding.fix


# --- operators --------------------------------------------------------------------------------

def test_an_unsupported_operator_is_named():
    m = model([helper.make_node("Unique", ["x"], ["y"], name="uniq")],
              [("x", F, [4])], [("y", F, [None])], opset=17)
    for version in TRT_VERSIONS:
        finding = only_error(m, version)
        assert (finding.rule, finding.node) == ("operators", "'uniq' (Unique)")
        assert "not supported" in finding.message and finding.fix


def test_a_custom_domain_needs_a_plugin():
    m = model([helper.make_node("FusedConv", ["x"], ["y"], name="fc", domain="com.microsoft")],
              [("x", F, [1, 3])], [("y", F, [1, 3])])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    finding = only_error(m, "10")
    assert finding.rule == "operators" and "com.microsoft::FusedConv" in finding.message
    assert "plugin" in finding.fix


def _slice(axes_computed: bool) -> onnx.ModelProto:
    consts = [numpy_helper.from_array(np.array(v, np.int64), n)
              for n, v in (("starts", [0]), ("ends", [2]), ("axes", [1]))]
    nodes = [helper.make_node("Slice", ["x", "starts", "ends", "axes2" if axes_computed
                                        else "axes"], ["y"], name="cut")]
    if axes_computed:  # the axes come out of arithmetic instead of an initializer
        nodes.insert(0, helper.make_node("Identity", ["axes"], ["axes2"], name="id"))
    return model(nodes, [("x", F, [1, 4])], [("y", F, [1, 2])], consts)


def test_an_input_the_table_wants_constant_must_be_an_initializer():
    assert not check_tensorrt_compat(_slice(False), "10").findings
    finding = only_error(_slice(True), "10")  # 10.1-GA: Slice "`axes` must be an initializer"
    assert finding.rule == "operators" and finding.node == "'cut' (Slice)"
    assert "`axes`" in finding.message and "initializer" in finding.message


@pytest.mark.parametrize("attribute, value", [("mode", "cubic"),
                                              ("coordinate_transformation_mode",
                                               "tf_crop_and_resize")])
def test_resize_attributes_tensorrt_does_not_have(attribute, value):
    scales = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")
    node = helper.make_node("Resize", ["x", "", "scales"], ["y"], name="up",
                            **{attribute: value})
    m = model([node], [("x", F, [1, 3, 4, 4])], [("y", F, [1, 3, 8, 8])], [scales])
    finding = only_error(m, "11")
    assert finding.rule == "operators" and value in finding.message


def test_dilated_pooling_is_refused():
    node = helper.make_node("MaxPool", ["x"], ["y"], name="pool", kernel_shape=[2, 2],
                            dilations=[2, 2])
    m = model([node], [("x", F, [1, 3, 8, 8])], [("y", F, [1, 3, 6, 6])])
    assert only_error(m, "10").rule == "operators"


# --- types ------------------------------------------------------------------------------------

def test_bf16_arithmetic_needs_tensorrt_9_or_later():
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")],
              [("x", TensorProto.BFLOAT16, [1, 3])], [("y", TensorProto.BFLOAT16, [1, 3])])
    assert failing(m, "8.6") == {"types"} and not failing(m, "10")
    messages = [f.message for f in check_tensorrt_compat(m, "8.6").errors]
    assert any("Relu takes FP32, FP16" in text and "BF16" in text for text in messages)
    assert any("network input 'x' is BF16" in text for text in messages)


def test_double_network_inputs_are_never_bound():
    m = model([helper.make_node("Cast", ["x"], ["y"], name="c", to=F)],
              [("x", TensorProto.DOUBLE, [1, 3])], [("y", F, [1, 3])])
    finding = only_error(m, "11")
    assert finding.rule == "types" and "network input 'x' is DOUBLE" in finding.message


def test_int64_is_cast_down_on_8_6_and_native_later():
    m = model([helper.make_node("Add", ["x", "x"], ["y"], name="add")],
              [("x", I64, [1, 3])], [("y", I64, [1, 3])])
    report = check_tensorrt_compat(m, "8.6")
    assert report.ok  # 8.6 reads INT64 arithmetic as INT32 (operators.md's note)...
    assert {f.severity for f in report.findings} == {"warning"}  # ...and binds INT64 I/O so
    assert "binds as INT32" in report.findings[0].message
    assert not check_tensorrt_compat(m, "10").findings


# --- uint8 ------------------------------------------------------------------------------------

def _frames(cast_first: bool) -> onnx.ModelProto:
    """raw IO as fcn-edge exported it before (Transpose → Cast) and as it does now."""
    transpose = lambda i, o: helper.make_node("Transpose", [i], [o], name="/Transpose",  # noqa
                                              perm=[0, 3, 1, 2])
    cast = lambda i, o: helper.make_node("Cast", [i], [o], name="/Cast", to=F)  # noqa: E731
    nodes = [cast("frames", "f"), transpose("f", "x")] if cast_first else \
        [transpose("frames", "t"), cast("t", "x")]
    nodes.append(helper.make_node("Conv", ["x", "w"], ["logits"], name="score"))
    return model(nodes, [("frames", U8, ["N", "H", "W", 3])], [("logits", F, ["N", 2, "H", "W"])],
                 [conv_weight()])


def test_a_uint8_input_must_feed_a_cast_first():
    for version in TRT_VERSIONS:
        assert not failing(_frames(cast_first=True), version)
        assert failing(_frames(cast_first=False), version) == {"uint8-input", "uint8-cast"}
    finding = next(f for f in check_tensorrt_compat(_frames(False), "8.6").errors
                   if f.rule == "uint8-input")
    assert finding.node == "'/Transpose' (Transpose)"
    assert "'frames' feeds Transpose" in finding.message and "3985" in finding.message
    assert "cast the input to float first" in finding.fix


def _labels(through_float: bool, out=U8) -> onnx.ModelProto:
    nodes = [helper.make_node("ArgMax", ["logits"], ["idx"], name="/ArgMax", axis=1, keepdims=0)]
    if through_float:
        nodes += [helper.make_node("Cast", ["idx"], ["f"], name="/Cast_1", to=F),
                  helper.make_node("Cast", ["f"], ["labels"], name="/Cast_2", to=out)]
    else:
        nodes += [helper.make_node("Cast", ["idx"], ["labels"], name="/Cast_1", to=out)]
    return model(nodes, [("logits", F, ["N", 5, "H", "W"])], [("labels", out, ["N", "H", "W"])])


def test_integer_labels_reach_uint8_only_through_float():
    for version in TRT_VERSIONS:
        assert not failing(_labels(through_float=True), version)
        assert not failing(_labels(through_float=False, out=I32), version)  # int32 labels
        finding = only_error(_labels(through_float=False), version)
        assert (finding.rule, finding.node) == ("uint8-cast", "'/Cast_1' (Cast)")
        assert "Cast from INT64 to UINT8" in finding.message
        assert "--labels-dtype int32" in finding.fix


def test_uint8_inside_the_network_is_refused():
    nodes = [helper.make_node("Cast", ["x"], ["u"], name="down", to=U8),
             helper.make_node("Cast", ["u"], ["y"], name="up", to=F)]
    m = model(nodes, [("x", F, [1, 3])], [("y", F, [1, 3])])
    finding = only_error(m, "10")
    assert finding.rule == "uint8-cast" and "'u' lies inside the network" in finding.message


# --- dynamic dims -----------------------------------------------------------------------------

def test_only_batch_height_and_width_may_vary():
    dynamic = model([helper.make_node("Conv", ["images", "w"], ["logits"], name="score")],
                    [("images", F, ["N", "C", "H", "W"])], [("logits", F, ["N", 2, "H", "W"])],
                    [conv_weight()], meta=meta_of())
    found = check_tensorrt_compat(dynamic, "10").errors
    assert {f.rule for f in found} == {"dynamic-dims"}
    assert any("input 'images' (NCHW) has a dynamic channel" in f.message for f in found)
    assert any(f.node == "'score' (Conv)" and "channel count" in f.message for f in found)
    assert not check_tensorrt_compat(CONV, "10").findings


def test_a_foreign_input_with_no_fixed_channel_axis_is_refused():
    m = model([helper.make_node("Relu", ["x"], ["y"], name="r")],
              [("x", F, ["N", "C", "H", "D"])], [("y", F, ["N", "C", "H", "D"])])
    assert only_error(m, "11").rule == "dynamic-dims"


# --- int8 -------------------------------------------------------------------------------------

def _qdq(zero_point=None, bias_int32=False, zp_value=0) -> onnx.ModelProto:
    """x → Q → DQ → Conv (weights through DQ too): explicit quantization as TensorRT reads it."""
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.ones((2, 3, 1, 1), np.int8), "wq"),
             numpy_helper.from_array(np.full(2, 0.1, np.float32), "ws")]
    q_in = ["x", "s"]
    if zero_point is not None:
        inits.append(numpy_helper.from_array(np.array(zp_value, zero_point), "zp"))
        q_in.append("zp")
    nodes = [helper.make_node("QuantizeLinear", q_in, ["xq"], name="q"),
             helper.make_node("DequantizeLinear", ["xq"] + q_in[1:], ["xd"], name="dq"),
             helper.make_node("DequantizeLinear", ["wq", "ws"], ["w"], name="wdq", axis=0)]
    conv = ["xd", "w"]
    if bias_int32:
        inits += [numpy_helper.from_array(np.ones(2, np.int32), "bq"),
                  numpy_helper.from_array(np.full(2, 0.01, np.float32), "bs")]
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "bs"], ["b"], name="bdq",
                                      axis=0))
        conv.append("b")
    nodes.append(helper.make_node("Conv", conv, ["y"], name="conv"))
    return model(nodes, [("x", F, [1, 3, 4, 4])], [("y", F, [1, 2, 4, 4])], inits,
                 meta=meta_of(precision="int8"))


def test_symmetric_int8_qdq_builds_everywhere():
    for version in TRT_VERSIONS:
        assert check_tensorrt_compat(_qdq(np.int8), version).ok


def test_uint8_quantization_and_zero_points_are_refused():
    # ONNX Runtime's CPU scheme: uint8, and a missing zero point means uint8 too.
    for dtype in (np.uint8, None):
        found = [f for f in check_tensorrt_compat(_qdq(dtype), "10").errors]
        assert {f.rule for f in found} == {"int8"} and found[0].node == "'q' (QuantizeLinear)"
        assert "--int8-target tensorrt" in found[0].fix
    finding = next(iter(check_tensorrt_compat(_qdq(np.int8, zp_value=3), "8.6").errors))
    assert "zero point" in finding.message or "zero_point" in finding.message


def test_int32_biases_are_not_dequantized_by_tensorrt():
    finding = only_error(_qdq(np.int8, bias_int32=True), "10")
    assert finding.rule == "int8" and finding.node == "'bdq' (DequantizeLinear)"
    assert "INT32" in finding.message and "QuantizeBias=False" in finding.fix


def test_int8_without_qdq_is_gone_in_tensorrt_11():
    plain = model(CONV.graph.node, [("images", F, ["N", 3, "H", "W"])],
                  [("logits", F, ["N", 2, "H", "W"])], [conv_weight()],
                  meta=meta_of(precision="int8"))
    assert failing(plain, "11") == {"int8"}
    assert "TensorRT 11 removed" in only_error(plain, "11").message
    for version in ("8.6", "10"):  # a calibrator could still do it there: a warning
        report = check_tensorrt_compat(plain, version)
        assert report.ok and [f.severity for f in report.findings] == ["warning"]
    assert check_tensorrt_compat(CONV, "11", precision="fp16").ok


# --- the tables, versions and the error ----------------------------------------------------

def test_the_tables_cite_the_commit_they_were_read_at():
    for version in TRT_VERSIONS:
        table = load_table(version)
        assert re.fullmatch(r"[0-9a-f]{40}", table.source["commit"])
        assert table.source["repo"] == "onnx/onnx-tensorrt"
        ours = {"Conv", "ConvTranspose", "Relu", "MaxPool", "Add", "Slice", "Concat", "Cast",
                "Transpose", "Mul", "ArgMax", "Pad", "Shape", "Gather", "Unsqueeze",
                "QuantizeLinear", "DequantizeLinear"}
        assert all(table.operators[op].supported for op in ours)
    assert load_table("8.6").opset == (1, 17) and load_table("10").opset == (9, 20)
    assert "BF16" not in load_table("8.6").operators["Relu"].types
    assert not load_table("10").operators["Unique"].supported


def test_parse_operators_md_reads_both_header_styles():
    rows = ("| Operator | Supported | Supported Types | Restrictions |\n|---|---|---|---|\n"
            "| Conv | Y | FP32, FP16 | 2D or 3D convolutions only\\. |\n| Unique | N |\n"
            "| TopK | Y | FP32 | `K` input must be an initializer\n")
    opset, ops = parse_operators_md("TensorRT 8.6 supports operators up to Opset 17.\n" + rows)
    assert opset == (1, 17)
    assert ops["Conv"].types == ("FP32", "FP16") and ops["Conv"].restrictions.endswith("only.")
    assert not ops["Unique"].supported and ops["TopK"].restrictions.startswith("`K`")
    opset, _ = parse_operators_md(
        "TensorRT 10.0 supports operators in the inclusive range of opset 9 to opset 20.\n" + rows)
    assert opset == (9, 20)
    with pytest.raises(InputError):
        parse_operators_md("# something else\n")


def test_versions_map_to_families():
    assert [trt_family(v) for v in ("8.6.1.6", "9.3", "10.3.0.26", "10", "11.4.0")] == \
        ["8.6", "8.6", "10", "10", "11"]
    assert parse_versions("10.3, 10, 8.6") == ("10", "8.6")
    for bad in ("8.5", "seven", ""):
        with pytest.raises(InputError):
            parse_versions(bad)


def test_require_names_node_rule_and_fix_per_release():
    with pytest.raises(ModelFormatError) as info:
        require_tensorrt_compat(_labels(False), ["8.6", "11"], "the fp32 artifact",
                                hint="nothing was written")
    text = str(info.value)
    assert text.startswith("the fp32 artifact would not build with TensorRT 8.6, 11:")
    assert "[uint8-cast] node '/Cast_1' (Cast)" in text and "fix: cast through float32" in text
    assert text.endswith("(nothing was written)") and "\n" not in text
    assert [r.ok for r in check_tensorrt_targets(_labels(True), ["8.6", "11"])] == [True, True]


# --- fcn-edge build --check-only ---------------------------------------------------------------

def test_check_only_prints_a_verdict_per_rule_and_exits_1_on_failure(tmp_path, capsys):
    bad, good = tmp_path / "bad.onnx", tmp_path / "good.onnx"
    onnx.save(_frames(cast_first=False), str(bad))
    onnx.save(_frames(cast_first=True), str(good))
    assert main(["build", str(bad), "--check-only", "--trt-version", "10"]) == 1
    out = capsys.readouterr().out
    assert "TensorRT 10 (operator table onnx/onnx-tensorrt@96e7811 (10.1-GA)): FAILS" in out
    assert re.search(r"uint8-input\s+FAIL", out) and re.search(r"opset\s+pass", out)
    assert "node '/Transpose' (Transpose)" in out and "fix: cast the input" in out
    assert "TensorRT 8.6" not in out
    assert main(["build", str(good), "--check-only"]) == 0  # no TensorRT here: all three
    out = capsys.readouterr().out
    assert all(f"TensorRT {v} (" in out for v in TRT_VERSIONS) and "FAIL" not in out


def test_check_only_json_and_bad_input(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    onnx.save(_labels(False), str(bad))
    assert main(["build", str(bad), "--check-only", "--json", "--trt-version", "8.6,11"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["builds"] is False and set(report["tensorrt"]) == {"8.6", "11"}
    rule = report["tensorrt"]["11"]["rules"]["uint8-cast"]
    assert rule["verdict"] == "FAIL" and rule["findings"][0]["node"] == "'/Cast_1' (Cast)"
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    assert main(["build", str(tmp_path / "junk.onnx"), "--check-only"]) == 1
    assert "not a readable ONNX model" in capsys.readouterr().err
    assert main(["build", str(bad), "--check-only", "--trt-version", "7"]) == 1
    assert "older than 8.6" in capsys.readouterr().err
    assert main(["build", str(bad), "--trt-version", "10"]) == 1  # without --check-only
    assert "--trt-version goes with --check-only" in capsys.readouterr().err


def test_the_tables_ship_in_the_wheel(tmp_path):
    """The check reads its tables at run time: a wheel (not only an editable install) has them."""
    import shutil
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    root, source = Path(__file__).resolve().parents[2], tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(root / name, source / name)
    shutil.copytree(root / "fcn_edge", source / "fcn_edge",
                    ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(source), "-w", str(tmp_path / "wheel")], check=True)
    (wheel,) = (tmp_path / "wheel").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert all(f"fcn_edge/export/trt_support/tensorrt-{v}.json" in names for v in TRT_VERSIONS)


def test_check_only_defaults_to_the_installed_tensorrt(monkeypatch):
    """No TensorRT can be installed here: the version it would report is stood in for."""
    from fcn_edge.export.trt_compat import default_versions
    from fcn_edge.runtime.backends import tensorrt as trt_backend

    for installed, expected in (("10.3.0.26", ("10",)), ("8.6.2", ("8.6",)),
                                (None, TRT_VERSIONS), ("8.5.1", TRT_VERSIONS)):
        monkeypatch.setattr(trt_backend, "installed_tensorrt_version", lambda v=installed: v)
        assert default_versions() == expected
