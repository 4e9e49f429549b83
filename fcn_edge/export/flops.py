"""FLOPs of one inference of an ONNX graph at a concrete input size (a multiply-add is 2).

Only convolutions and matrix products are counted: the rest (activations, adds, crops,
normalisation, argmax) is elementwise or cheaper, negligible next to the convolutions.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, numpy_helper
from onnx.reference import ReferenceEvaluator

from ..errors import InputError, ModelFormatError

__all__ = ["FlopCount", "count_flops", "node_flops", "shapes_at"]

Shape = tuple[int, ...]
ShapeOf = Callable[[str], "Shape | None"]
#: Tensors larger than this (elements) are weights or activations, never folded.
_FOLD_LIMIT = 1 << 16
_DEFAULT_DOMAINS = ("", "ai.onnx")


@dataclass(frozen=True)
class FlopCount:
    """FLOPs of one inference: ``total`` and its split by ONNX op type."""

    total: int
    by_op: dict[str, int]

    @property
    def gflops(self) -> float:
        """``total`` in units of 10⁹ FLOPs."""
        return self.total / 1e9


def count_flops(model: onnx.ModelProto | str | Path, height: int, width: int,
                batch: int = 1) -> FlopCount:
    """Counts the FLOPs of ``model`` on a ``batch``×``height``×``width`` input.

    Counts Conv, ConvTranspose, QLinearConv, ConvInteger (QDQ graphs hold plain Conv nodes),
    MatMul and Gemm. Shapes come from ONNX shape inference, helped by folding the graph's size
    arithmetic (FCN's dynamic crops) into constants.

    Raises:
        InputError: a size is not a positive integer.
        ModelFormatError: the model cannot be read, or a counted node's shape is unknown.
    """
    proto, shape_of = shapes_at(model, height, width, batch)
    by_op: dict[str, int] = {}
    for node in proto.graph.node:
        if node.op_type in _COUNTERS and node.domain in _DEFAULT_DOMAINS:
            flops = _COUNTERS[node.op_type](node, shape_of)
            by_op[node.op_type] = by_op.get(node.op_type, 0) + flops
    return FlopCount(total=sum(by_op.values()), by_op=by_op)


def node_flops(node: onnx.NodeProto, shape_of: ShapeOf) -> int | None:
    """FLOPs of one node whose tensors' shapes ``shape_of`` gives, by the rules of
    :func:`count_flops`; None for an op type not counted. For graphs other tools rewrote: the
    bench's profile reads ONNX Runtime's optimised graph, whose fused convolutions (FusedConv,
    NCHWc Conv, the NHWC QLinearConv) have a Conv's inputs, and takes shapes from its profiler.

    Raises:
        ModelFormatError: a shape the count needs is unknown.
    """
    counter = _COUNTERS.get(_FUSED_CONVS.get(node.op_type, node.op_type))
    return None if counter is None else counter(node, shape_of)


def shapes_at(model: onnx.ModelProto | str | Path, height: int, width: int, batch: int = 1
              ) -> tuple[onnx.ModelProto, ShapeOf]:
    """A copy of ``model`` with every tensor's shape inferred for a ``batch``×``height``×
    ``width`` input, and the lookup of those shapes (``count_flops``; the int8 calibration's
    memory estimate, ``calib_memory.py``)."""
    for name, value in (("height", height), ("width", width), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    proto = _load(model)
    _set_input_dims(proto.graph, int(batch), int(height), int(width))
    return _infer_shapes(proto)


def _load(model: onnx.ModelProto | str | Path) -> onnx.ModelProto:
    """A deep copy of ``model``, read from disk if it is a path."""
    if isinstance(model, onnx.ModelProto):
        return copy.deepcopy(model)
    try:
        return onnx.load(str(model))
    except Exception as exc:  # DecodeError, OSError, ...: whatever the file is not
        raise ModelFormatError(f"{model} is not a readable ONNX model: {exc}") from exc


def _set_input_dims(graph: onnx.GraphProto, batch: int, height: int, width: int) -> None:
    """Gives the first graph input concrete N×3×H×W (or uint8 N×H×W×3) dims."""
    initializers = {init.name for init in graph.initializer}  # inputs too in old IR versions
    inputs = [i for i in graph.input if i.name not in initializers]
    dims = inputs[0].type.tensor_type.shape.dim if inputs else []
    if len(dims) != 4:
        found = f"rank {len(dims)}" if inputs else "no input"
        raise ModelFormatError("the model's first input must be N×3×H×W images or N×H×W×3 "
                               f"uint8 frames; found {found}")
    nhwc = dims[3].dim_value == 3 and (
        inputs[0].type.tensor_type.elem_type == TensorProto.UINT8 or dims[1].dim_value != 3)
    for dim, value in zip(dims, (batch, height, width, 3) if nhwc else (batch, 3, height, width)):
        dim.Clear()
        dim.dim_value = value


def _infer_shapes(model: onnx.ModelProto) -> tuple[onnx.ModelProto, ShapeOf]:
    """``model`` with inferred shapes, and its shape lookup. ONNX inference cannot follow all
    the size arithmetic torch exports (F.pad's pads go through Transpose; Slice ignores
    propagated ends): it is folded into initializers until nothing more folds."""
    del model.graph.value_info[:]  # torch's symbolic shapes would not give way to ours
    for output in model.graph.output:
        output.type.tensor_type.ClearField("shape")
    while True:
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
        except Exception as exc:  # onnx raises several unrelated types here
            raise ModelFormatError(f"ONNX shape inference failed: {exc}") from exc
        shape_of = _shape_lookup(inferred.graph)
        if not _fold_constants(model, shape_of):
            return inferred, shape_of


def _fold_constants(model: onnx.ModelProto, shape_of: ShapeOf) -> bool:
    """Replaces the nodes whose small outputs are computable now by initializers; True if any."""
    graph, kept, outputs = model.graph, [], {o.name for o in model.graph.output}
    opsets = {o.domain: o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS}
    small = {i.name: i for i in graph.initializer if math.prod(i.dims) <= _FOLD_LIMIT}
    for node in graph.node:
        result = None if outputs.intersection(node.output) else _evaluate(
            node, small, shape_of, opsets)
        if result is None or any(r.size > _FOLD_LIMIT for r in result):
            kept.append(node)
            continue
        small.update((n, numpy_helper.from_array(r, n)) for n, r in zip(node.output, result))
        graph.initializer.extend(small[n] for n in node.output)
    folded = len(kept) < len(graph.node)
    del graph.node[:]
    graph.node.extend(kept)
    return folded


def _evaluate(node: onnx.NodeProto, small: dict[str, TensorProto], shape_of: ShapeOf,
              opsets: dict[str, int]) -> list[np.ndarray] | None:
    """``node``'s outputs if its inputs are constants (or it reads a known shape), else None."""
    if node.domain not in _DEFAULT_DOMAINS or node.op_type in _COUNTERS or any(
            a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute):
        return None
    if node.op_type == "Shape":
        shape = shape_of(node.input[0])
        return None if shape is None else [
            np.array(shape[_attr(node, "start", 0):_attr(node, "end", len(shape))], np.int64)]
    names = [name for name in node.input if name]
    try:  # KeyError: an input is not constant
        feed = {name: numpy_helper.to_array(small[name]) for name in names}
        return [np.asarray(r) for r in ReferenceEvaluator(node, opsets).run(None, feed)]
    except Exception:  # or an op the reference runtime lacks: left to shape inference
        return None


def _shape_lookup(graph: onnx.GraphProto) -> ShapeOf:
    """A function from tensor name to its concrete shape, or None where unknown. (A QDQ weight
    is folded, or if large has the shape inferred for its DequantizeLinear's output.)"""
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            shapes.setdefault(info.name, tuple(d.dim_value for d in tensor.shape.dim))
    return shapes.get


def _need(node: onnx.NodeProto, shape_of: ShapeOf, index: int, what: str) -> Shape:
    """The shape of ``node``'s input ``index`` (-1: its output), or ModelFormatError."""
    name = node.output[0] if index < 0 else node.input[index] if index < len(node.input) else ""
    if (shape := shape_of(name) if name else None) is None:
        raise ModelFormatError(f"{node.op_type} node {node.name or '(unnamed)'!r}: the shape "
                               f"of its {what} {name!r} is unknown")
    return shape


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    """Integer attribute ``name`` of ``node``."""
    return next((a.i for a in node.attribute if a.name == name), default)


def _conv(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    """Conv: 2·N·Cout·Hout·Wout·(Cin/group)·kh·kw; ConvTranspose: 2·N·Cin·Hin·Win·(Cout/group)·
    kh·kw; either plus one add per output element if the node has a bias."""
    w_index, b_index = _CONV_INPUTS.get(node.op_type, (1, 2))
    weight = _need(node, shape_of, w_index, "weight")  # Cout or Cin, then C/group × kh × kw
    out = _need(node, shape_of, -1, "output")
    slid = _need(node, shape_of, 0, "input") if node.op_type == "ConvTranspose" else out
    bias = b_index < len(node.input) and bool(node.input[b_index])
    return 2 * math.prod(slid) * math.prod(weight[1:]) + (math.prod(out) if bias else 0)


def _matmul(node: onnx.NodeProto, shape_of: ShapeOf) -> int:
    """MatMul (numpy semantics) or Gemm (``transA``, ``transB``): 2·batch·M·K·N."""
    a, b = _need(node, shape_of, 0, "input A"), _need(node, shape_of, 1, "input B")
    if node.op_type == "Gemm":
        a = a[::-1] if _attr(node, "transA", 0) else a
        b = b[::-1] if _attr(node, "transB", 0) else b
    a, b = (1, *a) if len(a) == 1 else a, (*b, 1) if len(b) == 1 else b
    return 2 * math.prod(np.broadcast_shapes(a[:-2], b[:-2])) * a[-2] * a[-1] * b[-1]


_COUNTERS: dict[str, Callable[[onnx.NodeProto, ShapeOf], int]] = {
    "Conv": _conv, "QLinearConv": _conv, "ConvInteger": _conv, "ConvTranspose": _conv,
    "MatMul": _matmul, "Gemm": _matmul}
#: (weight, bias) input indices where they are not (1, 2); ConvInteger has no bias.
_CONV_INPUTS = {"QLinearConv": (3, 8), "ConvInteger": (1, 99)}
#: ONNX Runtime's fused convolutions (contrib ops): inputs as Conv's (X, W, B, then a fused Sum).
_FUSED_CONVS = {"FusedConv": "Conv", "NhwcFusedConv": "Conv", "NhwcConv": "Conv"}
