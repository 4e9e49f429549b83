"""The rules of the TensorRT check, one function each: ``(graph, table, precision) → (findings,
what was checked)``. What each rule checks and where it comes from: ``trt_compat``'s docstring
and docs/edge-workflow.md ("Will it build?").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

import onnx
from onnx import TensorProto

from ..runtime.metadata import NCHW
from .trt_graph import DEFAULT_DOMAINS, OnnxGraph, type_name, where
from .trt_support import SupportTable

_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16}
#: Operators whose data inputs are not just the first (Where's first is its condition).
_DATA_INPUTS = {"Where": lambda n: (1, 2), "Concat": lambda n: range(len(n.input))}
#: Operators with rules of their own (uint8-cast, int8) instead of the types table.
_OWN_RULES = {"Cast", "CastLike", "QuantizeLinear", "DequantizeLinear"}
_MUST_BE_CONSTANT = re.compile(r"`(\w+)`(?: input)? must be (?:an initializer|a constant tensor)")
_RESIZE = {"mode": ("nearest", "linear"),
           "coordinate_transformation_mode": ("half_pixel", "pytorch_half_pixel",
                                              "tf_half_pixel_for_nn", "asymmetric",
                                              "align_corners")}
_UINT8_SOURCE = "NVIDIA/TensorRT#3985; tensorrt.DataType.UINT8"


@dataclass(frozen=True)
class Finding:
    """One broken (``error``) or doubtful (``warning``) place: which rule, where, what to do."""

    rule: str
    message: str
    fix: str
    node: str = ""                 # "'/Transpose' (Transpose)", or "" for the whole model
    severity: str = "error"

    def text(self) -> str:
        place = f"node {self.node}: " if self.node else ""
        return f"[{self.rule}] {place}{self.message}; fix: {self.fix}"


# --- the rules ----------------------------------------------------------------------------

Check = Callable[[OnnxGraph, SupportTable, "str | None"], "tuple[list[Finding], str]"]


def _check_opset(g: OnnxGraph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    low, high = table.opset
    what = f"opset {g.opset}; TensorRT {table.tensorrt} reads {low}–{high}"
    if low <= g.opset <= high:
        return [], what
    return [Finding("opset", f"the model imports ONNX opset {g.opset}, outside the {low}–{high} "
                             f"that TensorRT {table.tensorrt}'s parser reads",
                    f"export with --opset {min(high, 17)} (fcn-edge) or convert it with "
                    f"onnx.version_converter")], what


def _check_operators(g: OnnxGraph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    found = []
    for node in g.nodes:
        if node.domain not in DEFAULT_DOMAINS:
            found.append(Finding("operators", f"custom operator {node.domain}::{node.op_type} "
                                              f"is not an ONNX operator", "give TensorRT a plugin "
                                              "for it, or export without it", where(node)))
            continue
        row = table.operators.get(node.op_type)
        if row is None or not row.supported:
            found.append(Finding("operators", f"{node.op_type} is not supported by TensorRT "
                                              f"{table.tensorrt}'s ONNX parser ({table.cited})",
                                 "rewrite it with supported operators or export without it",
                                 where(node)))
            continue
        found.extend(_constant_inputs(g, node, row.restrictions))
        found.extend(_attributes(node, table))
    ops = sorted({n.op_type for n in g.nodes})
    return found, f"{len(g.nodes)} nodes of {len(ops)} operator types"


def _constant_inputs(g: OnnxGraph, node: onnx.NodeProto, restrictions: str) -> list[Finding]:
    """Inputs the table says "must be an initializer" that come from other nodes instead."""
    names = _MUST_BE_CONSTANT.findall(restrictions)
    if not names:
        return []
    try:
        schema = onnx.defs.get_schema(node.op_type, max(g.opset, 1))
    except Exception:  # noqa: BLE001 — an operator onnx does not know: nothing to map
        return []
    formal = [i.name for i in schema.inputs]
    found = []
    for name in names:
        index = formal.index(name) if name in formal else -1
        if 0 <= index < len(node.input) and node.input[index] and \
                node.input[index] not in g.constants:
            found.append(Finding("operators", f"its input `{name}` ('{node.input[index]}') is "
                                              f"computed, but TensorRT needs it as an initializer",
                                 "fold it to a constant (onnxslim or polygraphy surgeon sanitize "
                                 "--fold-constants)", where(node)))
    return found


def _attributes(node: onnx.NodeProto, table: SupportTable) -> list[Finding]:
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    found = []
    if node.op_type == "Resize":
        for name, allowed in _RESIZE.items():
            value = attributes.get(name)
            value = value.decode() if isinstance(value, bytes) else value
            if value is not None and value not in allowed:
                found.append(Finding("operators", f"Resize {name}={value!r}; TensorRT "
                                                  f"{table.tensorrt} takes {', '.join(allowed)}",
                                     f"export with a supported {name}", where(node)))
    if node.op_type in ("MaxPool", "AveragePool", "LpPool") and \
            any(d != 1 for d in attributes.get("dilations", [])):
        found.append(Finding("operators", f"{node.op_type} with dilations "
                                          f"{list(attributes['dilations'])}: TensorRT pools "
                                          f"without dilation", "use dilations of 1", where(node)))
    return found


def _check_types(g: OnnxGraph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    found = [f for v in g.inputs + g.outputs for f in _io_type(g, v.name, table)]
    doubles = False
    for node in g.nodes:
        row = table.operators.get(node.op_type)
        if node.domain not in DEFAULT_DOMAINS or row is None or not row.supported or \
                not row.types or node.op_type in _OWN_RULES:
            continue
        for index in _DATA_INPUTS.get(node.op_type, lambda n: (0,))(node):
            if index >= len(node.input) or not node.input[index]:
                continue
            name = type_name(g.types.get(node.input[index]))
            if name in ("unknown", "UINT8"):  # unknown: nothing to judge; UINT8: its own rules
                continue
            if name == "DOUBLE":
                doubles = True
                continue
            if not _type_listed(name, row.types, table):
                found.append(Finding("types", f"{node.op_type} takes {', '.join(row.types)} on "
                                              f"TensorRT {table.tensorrt}, and its input "
                                              f"'{node.input[index]}' is {name}",
                                     "compute it in a listed type (cast it, or export in "
                                     "float32)", where(node)))
    if doubles:
        found.append(Finding("types", "DOUBLE tensors inside the graph: TensorRT casts them down "
                                      "to FLOAT, clamping to ±FLT_MAX", "export in float32",
                             severity="warning"))
    return found, "each operator's data inputs, the network's inputs and outputs"


def _type_listed(name: str, types: Sequence[str], table: SupportTable) -> bool:
    if name in types:
        return True
    # 8.6's parser casts INT64 down to INT32 wherever INT32 is taken (operators.md's note).
    return table.tensorrt == "8.6" and name == "INT64" and "INT32" in types


def _io_type(g: OnnxGraph, name: str, table: SupportTable) -> list[Finding]:
    kind = "input" if name in {v.name for v in g.inputs} else "output"
    kind_of = type_name(g.types.get(name))
    if kind_of == "unknown" or kind_of in table.io_types:
        return []
    if table.tensorrt == "8.6" and kind_of == "INT64":
        return [Finding("types", f"network {kind} '{name}' is INT64, which TensorRT 8.6 binds "
                                 f"as INT32", "feed and read it as int32", severity="warning")]
    return [Finding("types", f"network {kind} '{name}' is {kind_of}; TensorRT "
                             f"{table.tensorrt} binds {', '.join(table.io_types)}",
                    f"make the {kind} float32 (or another bound type)")]


def _check_uint8_input(g: OnnxGraph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    found = []
    uint8 = [v.name for v in g.inputs if g.types.get(v.name) == TensorProto.UINT8]
    for name in uint8:
        for node in g.consumers.get(name, []):
            if node.op_type != "Cast" or _cast_to(node) not in _FLOATS:
                found.append(Finding(
                    "uint8-input", f"the uint8 network input '{name}' feeds {node.op_type}; "
                                   f"TensorRT takes a uint8 input only into a Cast to "
                                   f"float32/float16 ({_UINT8_SOURCE})",
                    "cast the input to float first and do the rest after the Cast (fcn-edge "
                    "raw-IO exports do this: export it again)", where(node)))
    return found, (f"{len(uint8)} uint8 input(s): " + ", ".join(uint8)) if uint8 else \
        "no uint8 inputs"


def _check_uint8_cast(g: OnnxGraph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    found = []
    for node in g.nodes:
        if node.op_type not in ("Cast", "CastLike") or not node.input:
            continue
        source, target = g.types.get(node.input[0]), _cast_to(node, g)
        pair = {source, target}
        if TensorProto.UINT8 in pair and source != target and not pair - {TensorProto.UINT8} <= _FLOATS:
            found.append(Finding(
                "uint8-cast", f"Cast from {type_name(source)} to {type_name(target)}; TensorRT "
                              f"converts uint8 only to and from float32/float16 ({_UINT8_SOURCE})",
                "cast through float32 (exact for labels below 256), or make the output int32 "
                "(`fcn-edge export --argmax --labels-dtype int32`)", where(node)))
    for name, elem_type in g.types.items():
        if elem_type == TensorProto.UINT8 and name not in g.io and name not in g.constants \
                and name in g.producer and g.producer[name].op_type != "QuantizeLinear":
            found.append(Finding("uint8-cast", f"the uint8 tensor '{name}' lies inside the "
                                               f"network; TensorRT has uint8 only as network "
                                               f"input or output", "keep it float32/float16",
                                 where(g.producer[name])))
    return found, "every Cast to or from uint8, and where uint8 tensors lie (uint8 Q/DQ: int8)"


def _cast_to(node: onnx.NodeProto, g: OnnxGraph | None = None) -> int | None:
    if node.op_type == "CastLike":
        return g.types.get(node.input[1]) if g is not None and len(node.input) > 1 else None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _check_dynamic_dims(g: OnnxGraph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    found = []
    layouts = {name: layout for name, layout, _, _ in g.meta.input_tensors()} if g.meta else {}
    for value in g.inputs:
        dims = g.shapes.get(value.name)
        if not dims or len(dims) != 4:
            continue
        layout = layouts.get(value.name)
        if layout is not None:
            channel = 1 if layout == NCHW else 3
            if not isinstance(dims[channel], int):
                found.append(Finding("dynamic-dims", f"input '{value.name}' ({layout}) has a "
                                                     f"dynamic channel dimension",
                                     "export with a fixed channel count; only N, H and W may "
                                     "vary"))
        elif not isinstance(dims[1], int) and not isinstance(dims[3], int):
            found.append(Finding("dynamic-dims", f"input '{value.name}' has no fixed channel "
                                                 f"dimension (dims 1 and 3 both dynamic)",
                                 "fix the channel count when exporting; only N, H and W may "
                                 "vary"))
    for node in g.nodes:
        if node.op_type in ("Conv", "ConvTranspose") and node.input:
            dims = g.shapes.get(node.input[0])
            if dims and len(dims) >= 2 and isinstance(dims[1], str):
                found.append(Finding("dynamic-dims", f"its input '{node.input[0]}' has a dynamic "
                                                     f"channel count; TensorRT needs a "
                                                     f"convolution's input channels at build "
                                                     f"time", "make the channel dimension static",
                                     where(node)))
    return found, "only batch, height and width vary" + (" (layouts from fcn-edge metadata)"
                                                         if layouts else "")


def _check_int8(g: OnnxGraph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    q = [n for n in g.nodes if n.op_type == "QuantizeLinear"]
    dq = [n for n in g.nodes if n.op_type == "DequantizeLinear"]
    found: list[Finding] = []
    if precision == "int8" and not (q or dq):
        eleven = table.tensorrt == "11"
        found.append(Finding(
            "int8", "an INT8 model without Q/DQ nodes needs implicit quantization, "
                    + ("which TensorRT 11 removed (no calibrator, no INT8 builder flag)" if eleven
                       else "a calibrator at build time, which fcn-edge builds do not run"),
            "quantize explicitly: `fcn-edge export --int8 --int8-target tensorrt`",
            severity="error" if eleven else "warning"))
    for node in q:
        found.extend(_zero_point(g, node, 2, "y_zero_point", quantize=True))
    for node in dq:
        found.extend(_zero_point(g, node, 2, "x_zero_point", quantize=False))
        source = type_name(g.types.get(node.input[0]))
        allowed = table.operators["DequantizeLinear"].types
        if source not in ("unknown", "UINT8") and source not in allowed:
            found.append(Finding(
                "int8", f"DequantizeLinear of the {source} tensor '{node.input[0]}'; TensorRT "
                        f"{table.tensorrt} dequantizes {', '.join(allowed)} only",
                "keep biases in float (ONNX Runtime: extra_options QuantizeBias=False, which "
                "`--int8-target tensorrt` sets)" if source == "INT32" else
                "quantize to int8", where(node)))
    what = f"{len(q)} QuantizeLinear, {len(dq)} DequantizeLinear" if q or dq else "no Q/DQ nodes"
    return found, what + (f"; meant for {precision}" if precision else "")


def _zero_point(g: OnnxGraph, node: onnx.NodeProto, index: int, name: str,
                quantize: bool) -> list[Finding]:
    """TensorRT quantizes symmetrically to int8: a zero point of 0, of type INT8. A missing
    zero point means uint8 (the ONNX default), which TensorRT does not take either."""
    point = node.input[index] if len(node.input) > index and node.input[index] else None
    elem = g.types.get(point) if point else (TensorProto.UINT8 if quantize else None)
    if elem == TensorProto.UINT8:
        return [Finding("int8", f"{node.op_type} to uint8 (asymmetric, ONNX Runtime's CPU "
                                f"scheme); TensorRT quantizes symmetrically to int8",
                        "export with `--int8-target tensorrt` (symmetric int8, zero point 0)",
                        where(node))]
    values = _constant_values(g, point) if point else None
    if values is not None and any(v != 0 for v in values):
        return [Finding("int8", f"{node.op_type} {name} is not 0; TensorRT takes zero points "
                                f"of 0 only", "quantize symmetrically (zero point 0)",
                        where(node))]
    return []


def _constant_values(g: OnnxGraph, name: str) -> list | None:
    tensor = g.initializers.get(name)
    return None if tensor is None else onnx.numpy_helper.to_array(tensor).ravel().tolist()


CHECKS: dict[str, Check] = {  # in the order reports list them
    "opset": _check_opset, "operators": _check_operators, "types": _check_types,
    "uint8-input": _check_uint8_input, "uint8-cast": _check_uint8_cast,
    "dynamic-dims": _check_dynamic_dims, "int8": _check_int8,
}
RULES = tuple(CHECKS)
