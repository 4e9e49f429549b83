"""Tests of fcn_edge.export.fp16 (the fp16 graph pass) and fcn_edge.export.execute (running it).

The FCN under test is a real export: ResNet18 FCN-8s, 8 classes, random score layers (they are
zero-initialised), run on procedural scenes. ONNX Runtime's CPU provider computes fp16 Conv in
fp32 (it inserts casts), so the fp16 numbers below come from the reference evaluator: numpy
float16 arithmetic. Small graphs built by hand test what an FCN export does not contain.
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference.op_run import OpRun
from onnx.reference.ops.op_conv import Conv as ReferenceConv
from onnx.reference.ops.op_conv_transpose import ConvTranspose as ReferenceConvTranspose

from fcn_edge.data import normalize, open_dataset
from fcn_edge.errors import BackendUnavailable, ModelFormatError
from fcn_edge.export import execute
from fcn_edge.export.execute import check_finite, ort_fp32_fallbacks, run_fp16
from fcn_edge.export.fp16 import FP16_MAX, convert_to_fp16, convert_with_report, to_float16

from support import ONNX_METADATA as METADATA
from support import export_onnx, random_score_fcn8s, raw_frames_fcn8s

FLOAT, FLOAT16, UINT8 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.UINT8


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(fp32 model, fp16 model, fp16 report), exported once for the module."""
    path = export_onnx(random_score_fcn8s(), tmp_path_factory.mktemp("fp16") / "fcn.onnx")
    fp32 = onnx.load(path)
    fp16, report = convert_with_report(fp32)
    return fp32, fp16, report


@pytest.fixture(scope="module")
def scenes() -> np.ndarray:
    """Three procedural scenes, 64×96, as H×W×3 uint8 RGB."""
    data = open_dataset("synthetic", "val", num_images=3, size=(64, 96))
    return np.stack([data[i].image for i in range(len(data))])


def run_fp32(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"]).run(None, feeds)


def elem_type(values, name: str) -> int:
    return next(v.type.tensor_type.elem_type for v in values if v.name == name)


# ---- the FCN export ---------------------------------------------------------------------------

def test_fcn_converted_checked_and_io_kept_fp32(exported):
    fp32, fp16, report = exported
    onnx.checker.check_model(fp16, full_check=True)
    assert elem_type(fp16.graph.input, "images") == FLOAT
    assert elem_type(fp16.graph.output, "logits") == FLOAT
    float_inits = [t.name for t in fp32.graph.initializer if t.data_type == FLOAT]
    assert {t.data_type for t in fp16.graph.initializer if t.name in float_inits} == {FLOAT16}
    # Integer tensors (pads, shapes) are untouched.
    ints = {t.name: t.data_type for t in fp32.graph.initializer if t.data_type != FLOAT}
    assert {t.name: t.data_type for t in fp16.graph.initializer if t.name in ints} == ints
    assert report.converted_tensors == len(float_inits)
    assert report.clipped_values == 0 and report.kept_fp32_nodes == 0
    assert report.inserted_casts == 2   # images → fp16 and fp16 → logits, nothing else
    assert sum(t.data_type == FLOAT for t in fp32.graph.initializer) > 0   # source unchanged


def test_metadata_kept(exported):
    _, fp16, _ = exported
    assert {p.key: p.value for p in fp16.metadata_props} == METADATA


def test_fcn_fp16_agrees_with_fp32_on_scenes(exported, scenes):
    fp32, fp16, _ = exported
    images = np.stack([normalize(image) for image in scenes])
    reference = run_fp32(fp32, {"images": images})[0]
    outputs, executor = run_fp16(fp16, {"images": images})
    # ORT 1.31 on x86 has no fp16 Conv: it would compute in fp32, so the reference runs.
    assert executor == ("onnx.reference" if ort_fp32_fallbacks(fp16) else "onnxruntime")
    logits = outputs["logits"]
    check_finite(outputs)
    assert logits.dtype == np.float32 and logits.shape == reference.shape
    agreement = (logits.argmax(1) == reference.argmax(1)).mean()
    relative = np.abs(logits - reference).max() / np.abs(reference).max()
    print(f"fp16 vs fp32 ({executor}): labels agree {agreement:.4%}, max|Δ|/max|y| {relative:.2e}")
    assert agreement >= 0.99
    assert relative <= 1e-2
    assert relative > 0   # fp16 really ran: an fp32 run would agree to ~1e-7


def test_keep_io_fp32_false_gives_fp16_io(exported):
    fp32, _, _ = exported
    fp16 = convert_to_fp16(fp32, keep_io_fp32=False)
    assert elem_type(fp16.graph.input, "images") == FLOAT16
    assert elem_type(fp16.graph.output, "logits") == FLOAT16
    assert convert_with_report(fp32, keep_io_fp32=False)[1].inserted_casts == 0


def test_raw_io_model(tmp_path, scenes):
    fp32 = onnx.load(export_onnx(raw_frames_fcn8s(), tmp_path / "raw.onnx", raw=True))
    fp16 = convert_to_fp16(fp32)
    assert elem_type(fp16.graph.input, "frames") == UINT8
    assert elem_type(fp16.graph.output, "labels") == UINT8
    # The frames' uint8 → float cast now makes fp16. The one float32 left is the labels' route
    # ArgMax (int64) → float32 → uint8, which TensorRT needs (it casts uint8 only to and from
    # float) and which stays fp32 as integer arithmetic wider than 8 bits does.
    casts = {n.output[0]: n for n in fp16.graph.node if n.op_type == "Cast"}
    assert casts[next(n.output[0] for n in fp16.graph.node if n.input[0] == "frames")] \
        .attribute[0].i == FLOAT16
    to_float = [c for c in casts.values() if c.attribute[0].i == FLOAT]
    assert len(to_float) == 1 and casts["labels"].input[0] == to_float[0].output[0]
    types = {v.name: v.type.tensor_type.elem_type for v in fp16.graph.value_info}
    argmax = next(n for n in fp16.graph.node if n.op_type == "ArgMax")
    assert types[argmax.output[0]] == TensorProto.INT64
    assert types[argmax.input[0]] == FLOAT16
    frames = np.ascontiguousarray(scenes[..., ::-1])   # BGR, as OpenCV delivers
    reference = run_fp32(fp32, {"frames": frames})[0]
    labels = run_fp16(fp16, {"frames": frames})[0]["labels"]
    assert labels.dtype == np.uint8
    assert (labels == reference).mean() >= 0.99


# ---- small graphs for what an FCN export does not contain ---------------------------------

def make_model(nodes, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.helper.set_model_props(model, METADATA)
    onnx.checker.check_model(model, full_check=True)
    return model


def tensor(name: str, elem: int, rank: int):
    return helper.make_tensor_value_info(name, elem, [None] * rank)


def const(name: str, value) -> TensorProto:
    return numpy_helper.from_array(np.asarray(value, np.float32), name)


@pytest.fixture(scope="module")
def mixed():
    """Conv → BN (tiny variance) → Relu → Softmax → Log, shape arithmetic in float feeding a
    Resize's sizes, a Resize with fixed-fp32 scales, ReduceMean, ConstantOfShape, ArgMax."""
    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c", "s", "bb", "mu", "var"], ["bn"]),
        n("Relu", ["bn"], ["r"]),
        n("Softmax", ["r"], ["sm"], axis=1),
        n("Log", ["sm"], ["lg"]),
        n("Constant", [], ["half"], value_float=0.5),
        n("Mul", ["lg", "half"], ["m"]),
        n("Shape", ["c"], ["shape"]),
        n("Cast", ["shape"], ["shape_f"], to=FLOAT),
        n("Constant", [], ["two"], value_floats=[1.0, 1.0, 2.0, 2.0]),
        n("Mul", ["shape_f", "two"], ["size_f"]),
        n("Cast", ["size_f"], ["size"], to=TensorProto.INT64),
        n("Resize", ["m", "", "", "size"], ["up"], mode="linear"),
        n("Resize", ["r", "", "scales"], ["up2"], mode="linear"),
        n("ReduceMean", ["up2"], ["mean"], axes=[2, 3]),
        n("Shape", ["x"], ["xshape"]),
        n("ConstantOfShape", ["xshape"], ["zeros"]),
        n("Add", ["zeros", "x"], ["xz"]),
        n("ArgMax", ["up"], ["am"], axis=1, keepdims=0),
    ]
    inits = [const("w", rng.standard_normal((4, 3, 3, 3)) * 0.3), const("b", np.zeros(4)),
             const("s", [1e-3, 1, 1, 0.03]), const("bb", [0.1] * 4), const("mu", [0.2] * 4),
             const("var", [1e-6, 1, 2, 1e-3]), const("scales", [1, 1, 2, 2])]
    outputs = [tensor("up", FLOAT, 4), tensor("mean", FLOAT, 4), tensor("xz", FLOAT, 4),
               tensor("am", TensorProto.INT64, 3), tensor("sm", FLOAT, 4)]
    model = make_model(nodes, [tensor("x", FLOAT, 4)], outputs, inits)
    return model, *convert_with_report(model)


def test_kept_ops_compute_fp32_without_round_trips(mixed):
    _, fp16, report = mixed
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*fp16.graph.value_info, *fp16.graph.input, *fp16.graph.output)}
    types.update({t.name: t.data_type for t in fp16.graph.initializer})
    ops = {n.op_type: n for n in fp16.graph.node}
    for op in ("Softmax", "Log", "ReduceMean"):
        assert types[ops[op].input[0]] == FLOAT and types[ops[op].output[0]] == FLOAT, op
    for name in ("c", "bn", "r", "lg", "half", "m", "zeros"):
        assert types[name] == FLOAT16, name
    assert ops["Log"].input[0] == ops["Softmax"].output[0]   # Softmax → Log stays fp32
    assert report.kept_fp32_nodes == 3
    # Shape arithmetic stays fp32 (fp16 holds integers exactly only up to 2048); so do the
    # Resize scales, which ONNX fixes to tensor(float).
    assert types["shape_f"] == types["two"] == types["size_f"] == FLOAT
    assert types["scales"] == FLOAT
    # BN was refolded to x·s + b: no 1e-6 variance and 1e-5 epsilon left to fp16.
    bn = ops["BatchNormalization"]
    assert numpy_helper.to_array(next(t for t in fp16.graph.initializer
                                      if t.name == bn.input[4])).tolist() == [1, 1, 1, 1]
    noop = [n.name for n in fp16.graph.node if n.op_type == "Cast"
            and types[n.input[0]] == n.attribute[0].i]
    assert not noop


def test_mixed_graph_values(mixed):
    fp32, fp16, _ = mixed
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 10)).astype(np.float32)
    reference = dict(zip(["up", "mean", "xz", "am", "sm"], run_fp32(fp32, {"x": x})))
    outputs, _ = run_fp16(fp16, {"x": x}, executor="reference")
    assert outputs.keys() == reference.keys()
    check_finite(outputs)
    for name in ("up", "mean", "xz", "sm"):
        assert outputs[name].dtype == np.float32
        scale = np.abs(reference[name]).max()
        assert np.abs(outputs[name] - reference[name]).max() <= 4e-3 * scale, name
    assert (outputs["am"] == reference["am"]).mean() >= 0.99
    assert outputs["am"].dtype == np.int64


def test_to_float16_clips_and_flushes():
    half, clipped, flushed = to_float16(np.array([1e6, -7e4, 65504, 1e-9, -1e-30, 0, 1e-7,
                                                  np.inf, 1.5], np.float32))
    assert half.dtype == np.float16
    assert half[:3].tolist() == [FP16_MAX, -FP16_MAX, FP16_MAX]
    assert (clipped, flushed) == (2, 2)          # 1e-7 survives as a subnormal
    assert half[6] > 0 and np.isposinf(half[7]) and half[8] == 1.5


def overflow_model() -> onnx.ModelProto:
    """y = x · 1e6 + 1: fine in fp32; in fp16 the constant is clipped to 65504 and any
    |x| > 1 overflows to inf."""
    nodes = [helper.make_node("Mul", ["x", "gain"], ["g"]),
             helper.make_node("Add", ["g", "one"], ["y"])]
    return make_model(nodes, [tensor("x", FLOAT, 2)], [tensor("y", FLOAT, 2)],
                      [const("gain", 1e6), const("one", 1.0)])


def test_overflow_is_detected():
    model = overflow_model()
    fp16, report = convert_with_report(model)
    assert report.clipped_values == 1
    x = np.array([[0.5, 2.0, -3.0]], np.float32)
    assert np.isfinite(run_fp32(model, {"x": x})[0]).all()
    outputs, executor = run_fp16(fp16, {"x": x})
    assert executor == "onnx.reference"
    assert outputs["y"][0, 0] == np.float32(np.float16(0.5 * 65504 + 1))
    with pytest.raises(ModelFormatError, match=r"'y' has 2 non-finite values of 3 \(0 NaN, 2 inf"):
        check_finite(outputs)
    # ORT would compute Mul and Add in fp32 and miss the overflow: it is refused, not used.
    assert ort_fp32_fallbacks(fp16) == ["Add", "Mul"]
    with pytest.raises(BackendUnavailable, match="Add, Mul"):
        run_fp16(fp16, {"x": x}, executor="onnxruntime")


def test_check_finite_ignores_integers_and_finite():
    check_finite({"labels": np.zeros(3, np.uint8), "y": np.ones(2, np.float16)})
    with pytest.raises(ModelFormatError, match="'p' has 1 non-finite values of 2 \\(1 NaN"):
        check_finite({"p": np.array([np.nan, 1.0], np.float32)})


def test_onnxruntime_runs_what_it_has_fp16_kernels_for():
    nodes = [helper.make_node("Transpose", ["x"], ["t"], perm=[1, 0]),
             helper.make_node("Concat", ["t", "t"], ["y"], axis=0)]
    model = make_model(nodes, [tensor("x", FLOAT16, 2)], [tensor("y", FLOAT16, 2)])
    x = np.arange(6, dtype=np.float16).reshape(2, 3)
    outputs, executor = run_fp16(model.SerializeToString(), {"x": x})
    assert executor == "onnxruntime"
    assert outputs["y"].dtype == np.float16
    np.testing.assert_array_equal(outputs["y"], np.concatenate([x.T, x.T]))


def test_subgraphs_refused():
    branch = helper.make_graph([helper.make_node("Identity", ["x"], ["z"])], "b", [],
                               [tensor("z", FLOAT, 2)])
    node = helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch)
    model = make_model([node], [tensor("c", TensorProto.BOOL, 0), tensor("x", FLOAT, 2)],
                       [tensor("y", FLOAT, 2)])
    with pytest.raises(ModelFormatError, match="control flow"):
        convert_to_fp16(model)


# ---- the fast reference kernels ------------------------------------------------------------

RUN_PARAMS = {"log": lambda *a: None, "opsets": {"": 17}, "verbose": 0, "new_ops": None}


def run_op(cls: type[OpRun], node: onnx.NodeProto, *inputs: np.ndarray) -> np.ndarray:
    return cls(node, RUN_PARAMS).run(*inputs)[0]


def test_fast_conv_matches_reference_fp16_arithmetic():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 64, 16, 16)).astype(np.float16)
    w = (rng.standard_normal((32, 64, 3, 3)) * 0.05).astype(np.float16)
    b = rng.standard_normal(32).astype(np.float16)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 1])
    ours, theirs = run_op(execute.Conv, node, x, w, b), run_op(ReferenceConv, node, x, w, b)
    assert ours.dtype == theirs.dtype == np.float16 and ours.shape == theirs.shape
    # Both sum in fp32; only the order differs, so a few results differ by one fp16 ulp.
    assert (ours == theirs).mean() > 0.99
    ulp = np.spacing(np.abs(theirs).astype(np.float16)).astype(np.float32)
    assert (np.abs(ours.astype(np.float32) - theirs) <= ulp).all()


@pytest.mark.parametrize("attrs,channels", [
    ({"group": 8, "strides": [8, 8]}, (8, 1, 15, 15)),               # FCN's upscore8
    ({"strides": [2, 2], "pads": [1, 2, 0, 1], "output_padding": [1, 0]}, (8, 3, 4, 4)),
])
def test_fast_conv_transpose_is_bitwise_the_reference(attrs, channels):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 8, 5, 7)).astype(np.float16)
    w = rng.random(channels).astype(np.float16)
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    ours, theirs = run_op(execute.ConvTranspose, node, x, w), run_op(ReferenceConvTranspose,
                                                                     node, x, w)
    assert ours.dtype == np.float16
    np.testing.assert_array_equal(ours, theirs)
