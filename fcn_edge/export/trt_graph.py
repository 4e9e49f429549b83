"""An ONNX model as the TensorRT rules (``trt_rules``) read it: every node, subgraphs included,
each tensor's type and shape (onnx's shape inference, run without the weights), which tensors
are constants, who produces and who consumes each, and the fcn-edge metadata when it has some.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto

from ..runtime.metadata import ArtifactMeta
from .onnx_props import get_metadata

DEFAULT_DOMAINS = ("", "ai.onnx")
TYPE_NAMES = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16",
              TensorProto.BFLOAT16: "BF16", TensorProto.DOUBLE: "DOUBLE",
              TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8", TensorProto.INT32: "INT32",
              TensorProto.INT64: "INT64", TensorProto.BOOL: "BOOL"}


class OnnxGraph:
    """Nodes (subgraphs included), tensor types and shapes, constants, producers/consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.opset = next((o.version for o in model.opset_import
                           if o.domain in DEFAULT_DOMAINS), 0)
        self.meta = _fcn_edge_meta(model)
        inferred = _infer(model)
        self.types: dict[str, int] = {}
        #: dims: an int, a named dynamic dim ("height"), or None where inference lost track
        self.shapes: dict[str, list[int | str | None]] = {}
        for value in _values(inferred.graph):
            tensor = value.type.tensor_type
            if tensor.elem_type:
                self.types[value.name] = tensor.elem_type
            if tensor.HasField("shape"):
                self.shapes[value.name] = [_dim(d) for d in tensor.shape.dim]
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.constants = set(self.initializers)
        for t in model.graph.initializer:
            self.types[t.name] = t.data_type
            self.shapes[t.name] = list(t.dims)
        self.nodes = list(_walk(model.graph))
        for node in self.nodes:
            if node.op_type == "Constant":
                self.constants.update(node.output)
        self.inputs = [v for v in model.graph.input if v.name not in self.constants]
        self.outputs = list(model.graph.output)
        self.io = {v.name for v in self.inputs} | {v.name for v in self.outputs}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        self.producer: dict[str, onnx.NodeProto] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            for name in node.output:
                self.producer[name] = node


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(_weightless(model), check_type=False,
                                                 strict_mode=False)
    except Exception:  # noqa: BLE001 — a model onnx cannot infer is judged by what it declares
        return model


def _weightless(model: onnx.ModelProto, keep: int = 4096) -> onnx.ModelProto:
    """``model`` with its large initializers declared as inputs (type and shape only): shape
    inference needs no weights, and copying VGG16's 500 MB of them took seconds. Small ones
    (shape constants, zero points) stay, so values still propagate."""
    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.value_info.extend(model.graph.value_info)
    declared = {v.name for v in model.graph.input}
    for tensor in model.graph.initializer:
        if int(np.prod(tensor.dims, dtype=np.int64)) <= keep:
            graph.initializer.append(tensor)
        elif tensor.name not in declared:
            graph.input.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type,
                                                                  list(tensor.dims)))
    return light


def _dim(dim) -> int | str | None:
    """A dimension as the rules read it. onnx names the dims it cannot infer ``unk__N``: those
    are unknown, not dynamic (TensorRT's own shape analysis may well fix them)."""
    if dim.HasField("dim_value"):
        return dim.dim_value
    if dim.HasField("dim_param") and not dim.dim_param.startswith("unk__"):
        return dim.dim_param
    return None


def _values(graph: onnx.GraphProto) -> Iterator[onnx.ValueInfoProto]:
    yield from graph.input
    yield from graph.output
    yield from graph.value_info


def _walk(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node, and the nodes of If/Loop/Scan bodies."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from _walk(sub)


def _fcn_edge_meta(model: onnx.ModelProto) -> ArtifactMeta | None:
    props = get_metadata(model)
    if "format" not in props:
        return None
    try:
        return ArtifactMeta.from_props(props)
    except Exception:  # noqa: BLE001 — judged as a foreign model
        return None


def where(node: onnx.NodeProto) -> str:
    """How a finding names a node: ``'/Transpose' (Transpose)``."""
    return f"{node.name!r} ({node.op_type})" if node.name else f"({node.op_type})"


def type_name(elem_type: int | None) -> str:
    if elem_type is None:
        return "unknown"
    return TYPE_NAMES.get(elem_type, TensorProto.DataType.Name(elem_type))
