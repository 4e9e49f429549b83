"""The graph edits of ``fcn-edge import`` (``import_onnx.py``): a foreign model's input renamed
``images`` (a Transpose in front of an NHWC one, or with raw IO uint8 BGR ``frames`` cast,
reordered and normalised in the graph), its score output renamed ``logits`` (a coarse grid
resized to the input's size behind it) and optionally ArgMax to ``labels``. Every added node is
one TensorRT's ONNX parser builds (uint8 feeds only a Cast; labels reach uint8 through float32).
onnx only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import ModelFormatError
from ..runtime.metadata import (INPUT_FRAMES, INPUT_IMAGES, NHWC, OUTPUT_LABELS,
                                OUTPUT_LOGITS)


@dataclass(frozen=True)
class ForeignGraph:
    """What the import found in the foreign graph."""

    input: str
    layout: str                        # NCHW | NHWC
    fixed: tuple[int, int] | None      # fixed (H, W), or None when dynamic
    batch: int | None                  # fixed batch, or None
    output: str
    grid: tuple[int, int]              # the score map's (h, w) at the probe size
    probe: tuple[int, int]             # the probe's (H, W)


#: The prefix of the raw-IO nodes' names and tensors.
_RAW = "fcn_edge_raw_io_"
#: The opset the added nodes are written for (Resize with optional roi/scales: opset 13).
EDIT_OPSET = 13


@dataclass(frozen=True)
class RawIO:
    """In-graph preprocessing: ``x * scale + bias`` per channel (``normalization_affine``), in
    the network's channel order, after reversing BGR frames when the network takes RGB."""

    scale: tuple[float, float, float]
    bias: tuple[float, float, float]
    flip: bool


def rewrite(model: onnx.ModelProto, found: ForeignGraph, argmax: int = 0,
            raw: RawIO | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose input is ``images`` (NCHW; with ``raw``, uint8 BGR NHWC
    ``frames`` normalised inside) and whose score output is ``logits`` at the input's size;
    with ``argmax`` (the class count), ``labels`` too."""
    out = at_least_opset(model, EDIT_OPSET)
    graph = out.graph
    inp = next(i for i in graph.input if i.name == found.input)
    dims = list(inp.type.tensor_type.shape.dim)
    if raw is not None:
        _prepend_raw_io(graph, inp, found.layout, raw)
    elif found.layout == NHWC:  # images (NCHW) → Transpose → the original NHWC input
        if found.input == INPUT_IMAGES:  # the Transpose's output takes the original's place
            _rename(graph, INPUT_IMAGES, INPUT_IMAGES + "_nhwc")
        graph.node.insert(0, helper.make_node("Transpose", [INPUT_IMAGES], [inp.name],
                                              perm=[0, 2, 3, 1], name="fcn_edge_nchw_to_nhwc"))
        dims = [dims[0], dims[3], dims[1], dims[2]]
        new = helper.make_tensor_value_info(INPUT_IMAGES, TensorProto.FLOAT, None)
        new.type.tensor_type.shape.dim.extend(dims)
        graph.input.remove(inp)
        graph.input.insert(0, new)
    else:
        _rename(graph, found.input, INPUT_IMAGES)
    scores = score_name(found)
    _rename(graph, found.output, scores)
    if scores != OUTPUT_LOGITS:
        # With raw IO the size is read after the Cast: TensorRT feeds a uint8 input to a Cast only.
        _append_resize(graph, scores, (_RAW + "float", 1, 3) if raw else (INPUT_IMAGES, 2, 4))
    if argmax:
        _append_argmax(graph, argmax)
    return out


def at_least_opset(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """A copy of ``model`` at ``opset`` or above. Older graphs (jetson-inference's were exported
    at torch 1.x's default, opset 9, where Resize does not exist) are converted with onnx's
    version converter, op by op; one that cannot be converted is a ModelFormatError."""
    own = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), opset)
    if own >= opset:
        out = onnx.ModelProto()
        out.CopyFrom(model)
        return out
    try:
        return onnx.version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises RuntimeError/ConvertError with its reason
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFormatError(f"the model is opset {own}, and fcn-edge's added nodes need "
                               f"opset {opset}; onnx could not convert it ({reason}): export "
                               f"it again at opset {opset} or later") from None


def score_name(found: ForeignGraph) -> str:
    """What the score output is called in the imported graph: ``logits`` at full resolution;
    its own name on a coarse grid (``logits_coarse`` if that was ``logits``), resized into
    ``logits``."""
    if found.grid == found.probe:
        return OUTPUT_LOGITS
    return OUTPUT_LOGITS + "_coarse" if found.output == OUTPUT_LOGITS else found.output


def _rename(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename tensor ``old`` everywhere in ``graph`` (its inputs, outputs and node edges)."""
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _append_resize(graph: onnx.GraphProto, scores: str, size_of: tuple[str, int, int]) -> None:
    """``logits`` = ``scores`` resized bilinearly (half-pixel, as torch's ``interpolate`` with
    ``align_corners=False``) to N×C×H×W, H and W those of ``size_of`` (a tensor and where its
    height and width are); ``scores`` stays an output."""
    def const(name: str, values: list[int]) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [name], name=name,
                                value=helper.make_tensor(name, TensorProto.INT64,
                                                         [len(values)], values))
    p = "fcn_edge_upsample_"
    graph.node.extend([
        const(p + "0", [0]), const(p + "2", [2]), const(p + "hw0", [size_of[1]]),
        const(p + "hw1", [size_of[2]]),
        helper.make_node("Shape", [scores], [p + "nc_all"], name=p + "shape_scores"),
        helper.make_node("Slice", [p + "nc_all", p + "0", p + "2"], [p + "nc"], name=p + "nc"),
        helper.make_node("Shape", [size_of[0]], [p + "hw_all"], name=p + "shape_input"),
        helper.make_node("Slice", [p + "hw_all", p + "hw0", p + "hw1"], [p + "hw"],
                         name=p + "hw"),
        helper.make_node("Concat", [p + "nc", p + "hw"], [p + "sizes"], axis=0,
                         name=p + "sizes"),
        helper.make_node("Resize", [scores, "", "", p + "sizes"], [OUTPUT_LOGITS],
                         mode="linear", coordinate_transformation_mode="half_pixel",
                         name=p + "resize")])
    graph.output.append(helper.make_tensor_value_info(OUTPUT_LOGITS, TensorProto.FLOAT,
                                                      ["N", None, "H", "W"]))


def _append_argmax(graph: onnx.GraphProto, classes: int) -> None:
    """``labels`` = ArgMax of ``logits`` over classes, N×H×W: uint8 up to 256 classes, cast
    through float32 as TensorRT needs (exact: every label is below 256), else int32."""
    p = "fcn_edge_argmax_"
    nodes = [helper.make_node("ArgMax", [OUTPUT_LOGITS], [p + "int64"], axis=1, keepdims=0,
                              name=p + "argmax")]
    if classes <= 256:
        nodes += [helper.make_node("Cast", [p + "int64"], [p + "float"], to=TensorProto.FLOAT,
                                   name=p + "float"),
                  helper.make_node("Cast", [p + "float"], [OUTPUT_LABELS], to=TensorProto.UINT8,
                                   name=p + "uint8")]
        dtype = TensorProto.UINT8
    else:
        nodes.append(helper.make_node("Cast", [p + "int64"], [OUTPUT_LABELS],
                                      to=TensorProto.INT32, name=p + "int32"))
        dtype = TensorProto.INT32
    graph.node.extend(nodes)
    graph.output.append(helper.make_tensor_value_info(OUTPUT_LABELS, dtype, ["N", "H", "W"]))


def _prepend_raw_io(graph: onnx.GraphProto, inp, layout: str, raw: RawIO) -> None:
    """``frames`` (N×H×W×3 uint8 BGR) → Cast → channel order → × scale + bias →
    (Transpose, for an NCHW model) → the original input, which stops being a graph input."""
    if inp.name == INPUT_FRAMES:  # the chain's output takes the original's place
        _rename(graph, INPUT_FRAMES, INPUT_FRAMES + "_original")
    dims = list(inp.type.tensor_type.shape.dim)
    nhwc = dims if layout == NHWC else [dims[0], dims[2], dims[3], dims[1]]
    p = _RAW

    def const(name: str, values, dtype) -> onnx.NodeProto:
        return helper.make_node("Constant", [], [p + name], name=p + name,
                                value=onnx.numpy_helper.from_array(np.asarray(values, dtype),
                                                                   p + name))
    pixels = p + "order" if raw.flip else p + "float"
    last = inp.name if layout == NHWC else p + "nhwc"
    nodes = [helper.make_node("Cast", [INPUT_FRAMES], [p + "float"], to=TensorProto.FLOAT,
                              name=p + "cast"),
             const("scale", raw.scale, np.float32), const("bias", raw.bias, np.float32),
             helper.make_node("Mul", [pixels, p + "scale"], [p + "scaled"], name=p + "mul"),
             helper.make_node("Add", [p + "scaled", p + "bias"], [last], name=p + "add")]
    if raw.flip:  # BGR frames, RGB network
        nodes[1:1] = [const("bgr", [2, 1, 0], np.int64),
                      helper.make_node("Gather", [p + "float", p + "bgr"], [pixels], axis=3,
                                       name=p + "rgb")]
    if layout != NHWC:
        nodes.append(helper.make_node("Transpose", [last], [inp.name], perm=[0, 3, 1, 2],
                                      name=p + "nchw"))
    for i, node in enumerate(nodes):
        graph.node.insert(i, node)
    new = helper.make_tensor_value_info(INPUT_FRAMES, TensorProto.UINT8, None)
    new.type.tensor_type.shape.dim.extend(nhwc)
    new.type.tensor_type.shape.dim[3].Clear()
    new.type.tensor_type.shape.dim[3].dim_value = 3
    graph.input.remove(inp)
    graph.input.insert(0, new)
