"""``export --fp16 --keep-fp32 ITEMS``: op types and named nodes kept fp32 in the fp16 graph.

Small graphs built by hand show what the fp16 pass does with a kept node (and that keeping one
fixes a real fp16 overflow, run with fp16 arithmetic by ``run_fp16``); a real checkpoint is
exported through the CLI with the flag, and its fp16 artifact read back.
"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fcn_edge.cli import main
from fcn_edge.errors import InputError, ModelFormatError
from fcn_edge.export.execute import check_finite, run_fp16
from fcn_edge.export.exporter import ExportConfig
from fcn_edge.export.fp16 import DEFAULT_KEEP_FP32, convert_with_report
from fcn_edge.export.fp16_keep import parse_keep_fp32
from fcn_edge.runtime.metadata import ArtifactMeta

from support import ONNX_METADATA

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
#: A node of the exported ResNet18 FCN-8s (after onnxslim) and an op type it has twice.
SCORE_POOL4, UPSCORE = "/model/score_pool4/Conv", "ConvTranspose"


def make_model(nodes, inits, out_channels: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", FLOAT, [1, 4, 3, 3])],
        [helper.make_tensor_value_info("y", FLOAT, [1, out_channels, 3, 3])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    helper.set_model_props(model, ONNX_METADATA)
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def chain() -> onnx.ModelProto:
    """x → Conv "first" → Relu "relu" → Conv "second" → Add "shift" → y, ordinary ops all."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1", "b1"], ["c1"], name="first", pads=[1, 1, 1, 1]),
             n("Relu", ["c1"], ["r"], name="relu"),
             n("Conv", ["r", "w2"], ["c2"], name="second"),
             n("Add", ["c2", "one"], ["y"], name="shift")]
    inits = {"w1": rng.standard_normal((4, 4, 3, 3)) * 0.3, "b1": np.zeros(4),
             "w2": rng.standard_normal((2, 4, 1, 1)), "one": np.ones((1, 1, 1, 1))}
    return make_model(nodes, inits, 2)


def types_of(model: onnx.ModelProto) -> dict[str, int]:
    graph = onnx.shape_inference.infer_shapes(model).graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*graph.value_info, *graph.input, *graph.output)}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


def precision_of(model: onnx.ModelProto, name: str) -> int:
    """FLOAT or FLOAT16: the one type of every input and output of node ``name`` (asserted)."""
    types = types_of(model)
    node = next(n for n in model.graph.node if n.name == name)
    found = {types[t] for t in (*node.input, *node.output) if t}
    assert len(found) == 1, f"{name}: mixed types {found}"
    return found.pop()


def cast_to(model: onnx.ModelProto, tensor: str, producer: bool) -> int | None:
    """The ``to`` of the Cast that writes (``producer``) or reads ``tensor``, None if none."""
    for node in model.graph.node:
        if node.op_type == "Cast" and tensor in (node.output if producer else node.input):
            return node.attribute[0].i
    return None


# ---- the conversion --------------------------------------------------------------------------

def test_a_kept_node_alone_computes_fp32_behind_casts(chain):
    fp16, report = convert_with_report(chain, keep_fp32_nodes=frozenset({"second"}))
    assert precision_of(fp16, "second") == FLOAT
    assert [precision_of(fp16, n) for n in ("first", "relu", "shift")] == [FLOAT16] * 3
    second = next(n for n in fp16.graph.node if n.name == "second")
    assert cast_to(fp16, second.input[0], producer=True) == FLOAT     # relu's fp16 → fp32
    assert cast_to(fp16, second.output[0], producer=False) == FLOAT16  # and back for shift
    assert {t.name: t.data_type for t in fp16.graph.initializer}["w2"] == FLOAT
    assert report.requested_fp32_nodes == ["second"] and report.kept_fp32_nodes == 1
    assert "(1 as asked)" in str(report)


def test_without_the_node_everything_is_fp16(chain):
    fp16, report = convert_with_report(chain)
    assert [precision_of(fp16, n) for n in ("first", "relu", "second", "shift")] == [FLOAT16] * 4
    assert report.requested_fp32_nodes == [] and report.kept_fp32_nodes == 0


def test_a_kept_op_type_keeps_all_its_nodes(chain):
    fp16, report = convert_with_report(chain, keep_fp32_ops=DEFAULT_KEEP_FP32 | {"Conv"})
    assert precision_of(fp16, "first") == precision_of(fp16, "second") == FLOAT
    assert precision_of(fp16, "relu") == precision_of(fp16, "shift") == FLOAT16
    assert sorted(report.requested_fp32_nodes) == ["first", "second"]


def test_neighbouring_kept_nodes_share_fp32_tensors(chain):
    fp16, _ = convert_with_report(chain, keep_fp32_nodes=frozenset({"first", "relu"}))
    relu = next(n for n in fp16.graph.node if n.name == "relu")
    assert cast_to(fp16, relu.input[0], producer=True) is None   # first → relu: no round trip
    assert precision_of(fp16, "relu") == FLOAT and precision_of(fp16, "second") == FLOAT16


def test_a_node_name_the_model_lacks_is_refused(chain):
    with pytest.raises(InputError, match="no node named 'secnd'"):
        convert_with_report(chain, keep_fp32_nodes=frozenset({"secnd"}))


@pytest.fixture(scope="module")
def overflowing() -> onnx.ModelProto:
    """x → Conv "big" → Relu → y. The Conv's sum (4 × 1000 × 20 = 80000) exceeds 65504, its
    bias (-60000) brings the output back to 20000: fp16 arithmetic (fp32 sums rounded to fp16,
    then the bias, as GPUs and ``run_fp16`` do) makes it Inf before the bias can help."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "w", "b"], ["c"], name="big"), n("Relu", ["c"], ["y"], name="relu")]
    return make_model(nodes, {"w": np.full((1, 4, 1, 1), 1000.0), "b": [-60000.0]}, 1)


def test_keeping_the_overflowing_node_fixes_the_fp16_graph(overflowing):
    feed = {"x": np.full((1, 4, 3, 3), 20.0, np.float32)}
    reference = run_fp16(overflowing, feed)[0]["y"]   # fp32 model: fp32 arithmetic
    assert np.allclose(reference, 20000.0)
    plain = convert_with_report(overflowing)[0]
    with pytest.raises(ModelFormatError, match="overflows .* export --fp16 --keep-fp32 OPS"):
        check_finite(run_fp16(plain, feed)[0])
    kept, report = convert_with_report(overflowing, keep_fp32_nodes=frozenset({"big"}))
    outputs, _ = run_fp16(kept, feed)
    check_finite(outputs)
    assert np.allclose(outputs["y"], reference, rtol=1e-3)
    assert precision_of(kept, "relu") == FLOAT16   # only the node asked for is fp32
    assert report.requested_fp32_nodes == ["big"]


# ---- reading --keep-fp32 against a graph -----------------------------------------------------

def test_items_are_node_names_or_the_graphs_op_types(chain):
    assert parse_keep_fp32("second, Relu", chain) == ({"Relu"}, {"second"})
    assert parse_keep_fp32(["Conv", "first,shift"], chain) == ({"Conv"}, {"first", "shift"})


@pytest.mark.parametrize("text, message", [
    ("ConvTransposed", r"--keep-fp32 ConvTransposed: neither a node nor an op type of this "
                       r"model; its op types: Add, Conv, Relu; its node names are "),
    ("Softmax", r"--keep-fp32 Softmax: this model has no node of that op type; its op types: "
                r"Add, Conv, Relu; "),
    ("", r"--keep-fp32 '': an empty item"),
    ("Conv,,Relu", r"--keep-fp32 'Conv,,Relu': an empty item"),
])
def test_an_item_that_would_keep_nothing_is_refused(chain, text, message):
    with pytest.raises(InputError, match=message) as error:
        parse_keep_fp32(text, chain)
    assert "\n" not in str(error.value)


def test_the_option_needs_fp16_and_is_normalised():
    with pytest.raises(InputError, match="--keep-fp32 applies to the fp16 artifact: add --fp16"):
        ExportConfig("best.pt", keep_fp32="Conv")
    assert ExportConfig("best.pt", fp16=True, keep_fp32="Conv, /a/Add").keep_fp32 == \
        ("Conv", "/a/Add")
    assert ExportConfig("best.pt", fp16=True, keep_fp32=["Conv"]).keep_fp32 == ("Conv",)
    assert ExportConfig("best.pt").keep_fp32 == ()


# ---- end to end through the CLI --------------------------------------------------------------

@pytest.fixture(scope="module")
def kept_export(checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("keep")
    code = main(["export", str(checkpoint), "-o", str(out), "--fp16", "--no-engine",
                 "--keep-fp32", f"{SCORE_POOL4},{UPSCORE}", "--eval-images", "1",
                 "--parity-sizes", "48x48,33x47,80x100"])
    assert code == 0
    return out


def test_cli_export_keeps_the_nodes_asked_for(kept_export):
    fp16 = onnx.load(str(kept_export / "best.fp16.onnx"))
    upscores = [n.name for n in fp16.graph.node if n.op_type == UPSCORE]
    assert len(upscores) == 2
    for name in (SCORE_POOL4, *upscores):
        assert precision_of(fp16, name) == FLOAT, name
    others = [n.name for n in fp16.graph.node if n.op_type == "Conv" and n.name != SCORE_POOL4]
    assert {precision_of(fp16, name) for name in others} == {FLOAT16}
    meta = ArtifactMeta.from_props({p.key: p.value for p in fp16.metadata_props})
    assert all(s["finite"] and s["agreement"] >= 0.99 for s in meta.parity["sizes"])
    assert meta.parity["keep_fp32"] == {"ops": [UPSCORE], "nodes": [SCORE_POOL4]}
    assert list(meta.export_options["keep_fp32"]) == [SCORE_POOL4, UPSCORE]
    report = json.loads((kept_export / "best.export.json").read_text())
    assert sorted(report["fp16"]["conversion"]["requested_fp32_nodes"]) == \
        sorted([SCORE_POOL4, *upscores])


def test_cli_refuses_a_misspelt_item_and_writes_nothing(checkpoint, tmp_path, capsys):
    code = main(["export", str(checkpoint), "-o", str(tmp_path / "out"), "--fp16",
                 "--keep-fp32", "ConvTransposed", "--parity-sizes", "48x48,33x47,80x100"])
    assert code == 1
    err = capsys.readouterr().err
    assert "--keep-fp32 ConvTransposed: neither a node nor an op type of this model; its op " \
           "types: Add, Conv, ConvTranspose," in err
    assert not (tmp_path / "out").exists()


def test_cli_refuses_the_flag_without_fp16(checkpoint, tmp_path, capsys):
    assert main(["export", str(checkpoint), "-o", str(tmp_path), "--keep-fp32", "Conv"]) == 1
    assert "--keep-fp32 applies to the fp16 artifact: add --fp16" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
