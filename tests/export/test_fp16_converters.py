"""Why fcn-edge keeps its own fp16 pass: what the libraries' converters get wrong on fcn-edge's
graphs, each test asserting the failing property of their output and the passing property of
ours on the same graph (docs/export.md, "Why fcn-edge has its own FP16 pass";
``benchmarks/fp16_converters.py`` prints the whole comparison).

A test here that starts failing means the library fixed what it shows: run the benchmark again
and reconsider replacing ``fcn_edge.export.fp16``.

* onnxconverter-common (a ``dev`` dependency, so CI runs it) leaves a ``Cast(to=FLOAT)`` casting
  to float32 while it declares the cast's output float16 (microsoft/onnxconverter-common#320,
  a regression of 1.15): every raw-IO or argmax graph comes out invalid.
* onnxruntime's own fork of it (``onnxruntime.transformers.float16``, installed with the core
  dependency) appends the input casts of ``keep_io_types`` after the nodes that read them.
* NVIDIA ModelOpt's AutoCast, TensorRT 11's documented FP16 step, raises the opset past
  TensorRT 8.6's, drops the metadata, cannot invent uint8 frames and breaks the two-headed
  graph. It pins onnx~=1.21 and onnxruntime-gpu, which conflict with fcn-edge's, so its tests
  run only where it is installed (a separate venv: BENCHMARKS.md says how).
"""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto

from fcn_edge.export.fp16 import convert_to_fp16
from fcn_edge.export.onnx_export import simplify
from fcn_edge.export.trt_compat import check_tensorrt_compat

from support import export_onnx, random_score_fcn8s, raw_frames_fcn8s
from support_multi_io import export_artifact, make_multi_checkpoint

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
INVALID = (onnx.checker.ValidationError, onnx.shape_inference.InferenceError)


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


needs_occ = pytest.mark.skipif(not _importable("onnxconverter_common"), reason=(
    "onnxconverter-common is not installed: pip install -e '.[dev]'"))
needs_modelopt = pytest.mark.skipif(not _importable("modelopt.onnx.autocast"), reason=(
    "nvidia-modelopt[onnx] is not installed: it pins onnx~=1.21 and onnxruntime-gpu, which "
    "conflict with fcn-edge's environment; install it in a separate venv to run these"))


@pytest.fixture(scope="module")
def raw_graph(tmp_path_factory) -> onnx.ModelProto:
    """``fcn-edge export --raw-io --argmax``'s graph, traced and simplified as the exporter does
    (which leaves value_info in it): uint8 frames → Cast → … → ArgMax → Cast(float32) →
    Cast(uint8) labels."""
    path = tmp_path_factory.mktemp("raw") / "raw.onnx"
    return simplify(onnx.load(export_onnx(raw_frames_fcn8s(), path, raw=True)))


@pytest.fixture(scope="module")
def plain_graph(tmp_path_factory) -> onnx.ModelProto:
    """The plain export: float32 images in, float32 scores out."""
    path = tmp_path_factory.mktemp("plain") / "fcn.onnx"
    return simplify(onnx.load(export_onnx(random_score_fcn8s(), path)))


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (1, 48, 64, 3), dtype=np.uint8)


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def declared_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    return {v.name: v.type.tensor_type.elem_type
            for v in (*graph.input, *graph.output, *graph.value_info)}


def assert_ours_valid(ours: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    onnx.checker.check_model(ours, full_check=True)
    return session(ours).run(None, feed)


@needs_occ
def test_onnxconverter_common_breaks_the_raw_io_argmax_graph(raw_graph, frames):
    from onnxconverter_common import float16

    theirs = float16.convert_float_to_float16(raw_graph, keep_io_types=True)
    frames_cast = next(n for n in theirs.graph.node if "frames" in n.input)
    assert frames_cast.op_type == "Cast"
    # The cast still makes float32, and its output is declared float16: the model lies.
    assert frames_cast.attribute[0].i == FLOAT
    assert declared_types(theirs)[frames_cast.output[0]] == FLOAT16
    with pytest.raises(INVALID, match="Inferred elem type differs"):
        onnx.checker.check_model(theirs, full_check=True)
    with pytest.raises(Exception, match=r"Type Error: Type \(tensor\(float16\)\)"):
        session(theirs)

    ours = convert_to_fp16(raw_graph)
    ours_cast = next(n for n in ours.graph.node if "frames" in n.input)
    assert ours_cast.attribute[0].i == FLOAT16   # frames go straight to fp16
    labels, = assert_ours_valid(ours, {"frames": frames})
    reference, = session(raw_graph).run(None, {"frames": frames})
    assert labels.dtype == np.uint8 and labels.shape == reference.shape
    assert (labels == reference).mean() >= 0.99


@needs_occ
def test_onnxconverter_common_cannot_block_casts_without_a_detour(raw_graph, frames):
    """Its way to keep a node fp32, node_block_list, makes the exported raw-IO graph valid only
    once value_info is derived again, and then the frames make a full float32 copy first
    (``"Cast"`` in op_block_list never returns: each cast it inserts is blocked in turn)."""
    from onnxconverter_common import float16

    to_float = [n.name for n in raw_graph.graph.node
                if n.op_type == "Cast" and n.attribute[0].i == FLOAT]
    theirs = float16.convert_float_to_float16(raw_graph, keep_io_types=True,
                                              node_block_list=to_float)
    with pytest.raises(INVALID):   # the blocked cast's output is typed float32 and float16
        onnx.checker.check_model(theirs, full_check=True)
    del theirs.graph.value_info[:]
    theirs = onnx.shape_inference.infer_shapes(theirs)
    onnx.checker.check_model(theirs, full_check=True)
    first = next(n for n in theirs.graph.node if "frames" in n.input)
    second = next(n for n in theirs.graph.node if first.output[0] in n.input)
    assert (first.attribute[0].i, second.op_type, second.attribute[0].i) == (FLOAT, "Cast",
                                                                             FLOAT16)
    ours = convert_to_fp16(raw_graph)
    assert sum(n.op_type == "Cast" for n in theirs.graph.node) == \
        sum(n.op_type == "Cast" for n in ours.graph.node) + 2


def test_onnxruntime_fp16_converter_output_is_not_topologically_sorted(plain_graph):
    from onnxruntime.transformers import float16

    theirs = float16.convert_float_to_float16(plain_graph, keep_io_types=True)
    order = {name: i for i, node in enumerate(theirs.graph.node) for name in node.output}
    reader = next(i for i, node in enumerate(theirs.graph.node)
                  if any(name.startswith("graph_input_cast") for name in node.input))
    assert order["graph_input_cast_0"] > reader   # the images' cast comes after its reader
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(theirs, full_check=True)

    ours = convert_to_fp16(plain_graph)
    images = np.random.default_rng(0).standard_normal((1, 3, 48, 64)).astype(np.float32)
    logits, = assert_ours_valid(ours, {"images": images})
    assert logits.dtype == np.float32 and logits.shape == (1, 8, 48, 64)


@needs_modelopt
def test_autocast_f16_raises_the_opset_past_tensorrt_8_6_and_drops_metadata(raw_graph):
    from modelopt.onnx.autocast import convert_to_f16

    theirs = convert_to_f16(raw_graph, keep_io_types=True)
    opset = next(o.version for o in theirs.opset_import if o.domain in ("", "ai.onnx"))
    assert opset == 19 and not theirs.metadata_props
    assert "opset" in {f.rule for f in check_tensorrt_compat(theirs, "8.6").errors}

    ours = convert_to_fp16(raw_graph)
    assert [o.version for o in ours.opset_import] == [17]
    assert ours.metadata_props == raw_graph.metadata_props
    assert not check_tensorrt_compat(ours, "8.6").errors


@needs_modelopt
def test_autocast_mixed_precision_cannot_make_up_uint8_frames(raw_graph, tmp_path):
    """TensorRT 11's documented step (convert_to_mixed_precision, keep_io_types) draws random
    inputs through Polygraphy when given no data, and fails on a uint8 input."""
    from modelopt.onnx.autocast import convert_to_mixed_precision

    path = tmp_path / "raw.onnx"
    onnx.save(raw_graph, str(path))
    with pytest.raises(ValueError, match="low is out of bounds for uint8"):
        convert_to_mixed_precision(str(path), "fp16", keep_io_types=True)


@needs_modelopt
def test_autocast_f16_gives_two_heads_one_shape(tmp_path, frames):
    """On a two-headed export (8 and 3 classes) AutoCast's re-inferred shapes name both heads'
    class dimension alike, and ONNX Runtime fails while running the model."""
    from modelopt.onnx.autocast import convert_to_f16

    checkpoint = make_multi_checkpoint(tmp_path / "heads.pt", inputs=(("rgb", 3),))
    graph = simplify(onnx.load(export_artifact(checkpoint, tmp_path, raw_io=True, argmax=True)))
    feed = {"frames": frames}
    theirs = convert_to_f16(graph, keep_io_types=True)
    with pytest.raises(Exception, match="Shape mismatch attempting to re-use buffer"):
        session(theirs).run(None, feed)

    semantic, geometric = assert_ours_valid(convert_to_fp16(graph), feed)
    reference = session(graph).run(None, feed)
    assert (semantic == reference[0]).mean() >= 0.99 and (geometric == reference[1]).mean() >= 0.99
