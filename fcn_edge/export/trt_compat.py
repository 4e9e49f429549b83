"""Will this ONNX build with TensorRT 8.6, 10 or 11? The parser's and builder's documented rules,
checked on a laptop, without TensorRT.

TensorRT's ONNX parser accepts some graphs it cannot build (a uint8 input feeding a Transpose
parses, then the build ends with no outputs: NVIDIA/TensorRT#3985), and each release reads its
own opsets, operators and types. ``fcn-edge export`` runs :func:`require_tensorrt_compat` on
every artifact meant for TensorRT before writing it, ``fcn-edge build`` before parsing, and
``fcn-edge build MODEL.onnx --check-only`` on any ONNX file, ours or not. The rules:

``opset``         the default domain's opset is one the release's parser reads;
``operators``     every node is an operator the parser supports (custom domains need a
                  plugin), with the inputs its restrictions say must be initializers, and the
                  attributes that matter (Resize modes, pooling dilations);
``types``         every node's data input has a type the release lists for that operator
                  (8.6 casts INT64 down to INT32, DOUBLE down to FLOAT), and every network
                  input and output a type TensorRT binds;
``uint8-input``   a uint8 network input feeds Cast nodes (to float32/float16) only;
``uint8-cast``    uint8 converts only to and from float32/float16 (``tensorrt.DataType.UINT8``,
                  8.6 and later), and exists only as network input/output;
``dynamic-dims``  channel counts are fixed: dynamic dimensions only on batch, height and width
                  (a convolution's input channels must be known when the engine is built);
``int8``          INT8 through explicit, symmetric, 8-bit Q/DQ (TensorRT 11 removed the
                  calibrator; every release needs zero points of 0 and dequantizes only 8-bit
                  (and FP8/INT4) tensors, so ONNX Runtime's uint8 scheme and int32 biases fail).

The operator tables come from onnx/onnx-tensorrt's ``docs/operators.md``, kept as data with
the commit they were read at (``trt_support``).
"""
from __future__ import annotations

import importlib.metadata as md
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from ..errors import InputError, ModelFormatError
from ..runtime.metadata import ArtifactMeta
from .trt_support import TRT_VERSIONS, SupportTable, load_table, trt_family

RULES = ("opset", "operators", "types", "uint8-input", "uint8-cast", "dynamic-dims", "int8")
_DEFAULT_DOMAINS = ("", "ai.onnx")
_FLOATS = {TensorProto.FLOAT, TensorProto.FLOAT16}
_TYPE_NAMES = {TensorProto.FLOAT: "FP32", TensorProto.FLOAT16: "FP16",
               TensorProto.BFLOAT16: "BF16", TensorProto.DOUBLE: "DOUBLE",
               TensorProto.INT8: "INT8", TensorProto.UINT8: "UINT8", TensorProto.INT32: "INT32",
               TensorProto.INT64: "INT64", TensorProto.BOOL: "BOOL"}
#: Operators whose data inputs are not the first one (Where's first is its condition).
_DATA_INPUTS = {"Where": (1, 2)}
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
        where = f"node {self.node}: " if self.node else ""
        return f"[{self.rule}] {where}{self.message}; fix: {self.fix}"


@dataclass(frozen=True)
class CompatReport:
    """One TensorRT release family's verdict on one model: every rule's findings."""

    tensorrt: str
    source: str                          # the table's citation
    findings: tuple[Finding, ...]
    checked: dict = field(default_factory=dict)   # rule → what was checked, for the printout

    @property
    def errors(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def ok(self) -> bool:
        return not self.errors

    def verdict(self, rule: str) -> str:
        severities = {f.severity for f in self.findings if f.rule == rule}
        return "FAIL" if "error" in severities else "warn" if severities else "pass"


# --- entry points --------------------------------------------------------------------------

def check_tensorrt_compat(model: onnx.ModelProto, version: str, *,
                          precision: str | None = None) -> CompatReport:
    """Every rule of TensorRT ``version`` (8.6, 10, 11 or a full release number) on ``model``.

    ``precision`` is what the model is meant to build as (``int8`` needs Q/DQ on 11); by
    default the fcn-edge metadata's, else ``int8`` when the graph has Q/DQ nodes."""
    return _judge(_Graph(model), load_table(version), precision)


def _judge(graph: "_Graph", table: SupportTable, precision: str | None) -> CompatReport:
    precision = precision or (graph.meta.precision if graph.meta else None)
    findings: list[Finding] = []
    checked = {}
    for rule, check in _CHECKS.items():
        found, what = check(graph, table, precision)
        findings.extend(found)
        checked[rule] = what
    return CompatReport(table.tensorrt, table.cited, tuple(findings), checked)


def check_tensorrt_targets(model: onnx.ModelProto, versions: Iterable[str] = TRT_VERSIONS, *,
                           precision: str | None = None) -> list[CompatReport]:
    graph = _Graph(model)  # read once, judged by each release's table
    return [_judge(graph, load_table(v), precision) for v in parse_versions(versions)]


def check_onnx_file(path: str | Path, versions: Iterable[str] = TRT_VERSIONS, *,
                    precision: str | None = None) -> list[CompatReport]:
    """:func:`check_tensorrt_targets` on an ONNX file (weights in external files not read)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends: not an ONNX model
        raise ModelFormatError(f"{path} is not a readable ONNX model: {exc}") from None
    return check_tensorrt_targets(model, versions, precision=precision)


def require_tensorrt_compat(model: onnx.ModelProto, versions: Iterable[str], what: str, *,
                            precision: str | None = None,
                            hint: str = "") -> list[CompatReport]:
    """The reports; a ModelFormatError naming every failing node, rule and fix if any fails."""
    reports = check_tensorrt_targets(model, versions, precision=precision)
    failed = [r for r in reports if not r.ok]
    if failed:
        lines = [(f"on {r.tensorrt}: " if len(failed) > 1 else "") + f.text()
                 for r in failed for f in r.errors[:5]]
        more = sum(len(r.errors) for r in failed) - len(lines)
        raise ModelFormatError(
            f"{what} would not build with TensorRT {', '.join(r.tensorrt for r in failed)}: "
            + " | ".join(lines) + (f" | and {more} more" if more > 0 else "")
            + (f" ({hint})" if hint else ""))
    return reports


def parse_versions(versions: Iterable[str] | str) -> tuple[str, ...]:
    """``"8.6,10"`` or ``["10.3.0", "11"]`` → ``("8.6", "10")``: families, in order, once."""
    items = versions.split(",") if isinstance(versions, str) else list(versions)
    families = []
    for item in items:
        family = trt_family(str(item).strip())
        if family not in families:
            families.append(family)
    if not families:
        raise InputError(f"no TensorRT version given: choose from {', '.join(TRT_VERSIONS)}")
    return tuple(families)


def default_versions() -> tuple[str, ...]:
    """The installed TensorRT's family (pip's or JetPack's), else every family we know."""
    for dist in ("tensorrt", "tensorrt-cu13", "tensorrt-cu12", "tensorrt-cu11", "tensorrt-lean"):
        try:
            return (trt_family(md.version(dist)),)
        except (md.PackageNotFoundError, InputError):
            continue
    try:  # JetPack installs TensorRT's Python module with apt: no pip metadata
        import tensorrt
        return (trt_family(tensorrt.__version__),)
    except (ImportError, OSError, AttributeError, InputError):
        return TRT_VERSIONS


def reports_to_json(reports: Sequence[CompatReport], name: str) -> dict:
    """The verdicts as JSON: per release, ``builds`` and every rule's verdict and findings."""
    return {"model": str(name), "builds": all(r.ok for r in reports), "tensorrt": {
        r.tensorrt: {"builds": r.ok, "operator_table": r.source, "rules": {
            rule: {"verdict": r.verdict(rule), "checked": r.checked.get(rule, ""),
                   "findings": [{"severity": f.severity, "node": f.node, "message": f.message,
                                 "fix": f.fix} for f in r.findings if f.rule == rule]}
            for rule in RULES}} for r in reports}}


def format_reports(reports: Sequence[CompatReport], name: str, limit: int = 8) -> str:
    """The verdict per release and rule, each finding on its own line (``limit`` per rule)."""
    lines = [f"TensorRT compatibility of {name}"]
    for report in reports:
        lines.append(f"  TensorRT {report.tensorrt} (operator table {report.source}): "
                     + ("builds" if report.ok else _failed_rules(report)))
        for rule in RULES:
            lines.append(f"    {rule:<13} {report.verdict(rule):<5} {report.checked.get(rule, '')}")
            found = [f for f in report.findings if f.rule == rule]
            lines.extend(f"      {f.severity}: {f.text()[len(rule) + 3:]}" for f in found[:limit])
            if len(found) > limit:
                lines.append(f"      … and {len(found) - limit} more")
    return "\n".join(lines)


def _failed_rules(report: CompatReport) -> str:
    rules = [rule for rule in RULES if report.verdict(rule) == "FAIL"]
    return (f"FAILS {len(rules)} of {len(RULES)} rules ({', '.join(rules)}; "
            f"{len(report.errors)} error(s))")


# --- the graph as the rules read it -------------------------------------------------------

class _Graph:
    """Nodes (subgraphs included), tensor types and shapes, constants, producers/consumers."""

    def __init__(self, model: onnx.ModelProto) -> None:
        self.model = model
        self.opset = next((o.version for o in model.opset_import
                           if o.domain in _DEFAULT_DOMAINS), 0)
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
    props = {p.key: p.value for p in model.metadata_props}
    if "format" not in props:
        return None
    try:
        return ArtifactMeta.from_props(props)
    except Exception:  # noqa: BLE001 — judged as a foreign model
        return None


def _where(node: onnx.NodeProto) -> str:
    return f"{node.name!r} ({node.op_type})" if node.name else f"({node.op_type})"


def _type_name(elem_type: int | None) -> str:
    if elem_type is None:
        return "unknown"
    return _TYPE_NAMES.get(elem_type, TensorProto.DataType.Name(elem_type))


# --- the rules ----------------------------------------------------------------------------

Check = Callable[[_Graph, SupportTable, "str | None"], "tuple[list[Finding], str]"]


def _check_opset(g: _Graph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    low, high = table.opset
    what = f"opset {g.opset}; TensorRT {table.tensorrt} reads {low}–{high}"
    if low <= g.opset <= high:
        return [], what
    return [Finding("opset", f"the model imports ONNX opset {g.opset}, outside the {low}–{high} "
                             f"that TensorRT {table.tensorrt}'s parser reads",
                    f"export with --opset {min(high, 17)} (fcn-edge) or convert it with "
                    f"onnx.version_converter")], what


def _check_operators(g: _Graph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    found = []
    for node in g.nodes:
        if node.domain not in _DEFAULT_DOMAINS:
            found.append(Finding("operators", f"custom operator {node.domain}::{node.op_type} "
                                              f"is not an ONNX operator", "give TensorRT a plugin "
                                              "for it, or export without it", _where(node)))
            continue
        row = table.operators.get(node.op_type)
        if row is None or not row.supported:
            found.append(Finding("operators", f"{node.op_type} is not supported by TensorRT "
                                              f"{table.tensorrt}'s ONNX parser ({table.cited})",
                                 "rewrite it with supported operators or export without it",
                                 _where(node)))
            continue
        found.extend(_constant_inputs(g, node, row.restrictions))
        found.extend(_attributes(node, table))
    ops = sorted({n.op_type for n in g.nodes})
    return found, f"{len(g.nodes)} nodes of {len(ops)} operator types"


def _constant_inputs(g: _Graph, node: onnx.NodeProto, restrictions: str) -> list[Finding]:
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
                                 "--fold-constants)", _where(node)))
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
                                     f"export with a supported {name}", _where(node)))
    if node.op_type in ("MaxPool", "AveragePool", "LpPool") and \
            any(d != 1 for d in attributes.get("dilations", [])):
        found.append(Finding("operators", f"{node.op_type} with dilations "
                                          f"{list(attributes['dilations'])}: TensorRT pools "
                                          f"without dilation", "use dilations of 1", _where(node)))
    return found


def _check_types(g: _Graph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    found = [f for v in g.inputs + g.outputs for f in _io_type(g, v.name, table)]
    doubles = False
    for node in g.nodes:
        row = table.operators.get(node.op_type)
        if node.domain not in _DEFAULT_DOMAINS or row is None or not row.supported or \
                not row.types or node.op_type in _OWN_RULES:
            continue
        for index in _DATA_INPUTS.get(node.op_type, range(len(node.input))
                                      if node.op_type == "Concat" else (0,)):
            if index >= len(node.input) or not node.input[index]:
                continue
            name = _type_name(g.types.get(node.input[index]))
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
                                     "float32)", _where(node)))
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


def _io_type(g: _Graph, name: str, table: SupportTable) -> list[Finding]:
    kind = "input" if name in {v.name for v in g.inputs} else "output"
    type_name = _type_name(g.types.get(name))
    if type_name == "unknown" or type_name in table.io_types:
        return []
    if table.tensorrt == "8.6" and type_name == "INT64":
        return [Finding("types", f"network {kind} '{name}' is INT64, which TensorRT 8.6 binds "
                                 f"as INT32", "feed and read it as int32", severity="warning")]
    return [Finding("types", f"network {kind} '{name}' is {type_name}; TensorRT "
                             f"{table.tensorrt} binds {', '.join(table.io_types)}",
                    f"make the {kind} float32 (or another bound type)")]


def _check_uint8_input(g: _Graph, table: SupportTable, precision) -> tuple[list[Finding], str]:
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
                    "raw-IO exports do this: export it again)", _where(node)))
    return found, (f"{len(uint8)} uint8 input(s): " + ", ".join(uint8)) if uint8 else \
        "no uint8 inputs"


def _check_uint8_cast(g: _Graph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    found = []
    for node in g.nodes:
        if node.op_type not in ("Cast", "CastLike") or not node.input:
            continue
        source, target = g.types.get(node.input[0]), _cast_to(node, g)
        pair = {source, target}
        if TensorProto.UINT8 in pair and source != target and not pair - {TensorProto.UINT8} <= _FLOATS:
            found.append(Finding(
                "uint8-cast", f"Cast from {_type_name(source)} to {_type_name(target)}; TensorRT "
                              f"converts uint8 only to and from float32/float16 ({_UINT8_SOURCE})",
                "cast through float32 (exact for labels below 256), or make the output int32 "
                "(`fcn-edge export --argmax --labels-dtype int32`)", _where(node)))
    for name, elem_type in g.types.items():
        if elem_type == TensorProto.UINT8 and name not in g.io and name not in g.constants \
                and name in g.producer and g.producer[name].op_type != "QuantizeLinear":
            found.append(Finding("uint8-cast", f"the uint8 tensor '{name}' lies inside the "
                                               f"network; TensorRT has uint8 only as network "
                                               f"input or output", "keep it float32/float16",
                                 _where(g.producer[name])))
    return found, "every Cast to or from uint8, and where uint8 tensors lie (uint8 Q/DQ: int8)"


def _cast_to(node: onnx.NodeProto, g: _Graph | None = None) -> int | None:
    if node.op_type == "CastLike":
        return g.types.get(node.input[1]) if g is not None and len(node.input) > 1 else None
    return next((a.i for a in node.attribute if a.name == "to"), None)


def _check_dynamic_dims(g: _Graph, table: SupportTable, precision) -> tuple[list[Finding], str]:
    found = []
    layouts = {name: layout for name, layout, _, _ in g.meta.input_tensors()} if g.meta else {}
    for value in g.inputs:
        dims = g.shapes.get(value.name)
        if not dims or len(dims) != 4:
            continue
        layout = layouts.get(value.name)
        if layout is not None:
            channel = 1 if layout == "NCHW" else 3
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
                                     _where(node)))
    return found, "only batch, height and width vary" + (" (layouts from fcn-edge metadata)"
                                                         if layouts else "")


def _check_int8(g: _Graph, table: SupportTable, precision) -> tuple[list[Finding], str]:
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
        source = _type_name(g.types.get(node.input[0]))
        allowed = table.operators["DequantizeLinear"].types
        if source not in ("unknown", "UINT8") and source not in allowed:
            found.append(Finding(
                "int8", f"DequantizeLinear of the {source} tensor '{node.input[0]}'; TensorRT "
                        f"{table.tensorrt} dequantizes {', '.join(allowed)} only",
                "keep biases in float (ONNX Runtime: extra_options QuantizeBias=False, which "
                "`--int8-target tensorrt` sets)" if source == "INT32" else
                "quantize to int8", _where(node)))
    what = f"{len(q)} QuantizeLinear, {len(dq)} DequantizeLinear" if q or dq else "no Q/DQ nodes"
    return found, what + (f"; meant for {precision}" if precision else "")


def _zero_point(g: _Graph, node: onnx.NodeProto, index: int, name: str,
                quantize: bool) -> list[Finding]:
    """TensorRT quantizes symmetrically to int8: a zero point of 0, of type INT8. A missing
    zero point means uint8 (the ONNX default), which TensorRT does not take either."""
    point = node.input[index] if len(node.input) > index and node.input[index] else None
    elem = g.types.get(point) if point else (TensorProto.UINT8 if quantize else None)
    if elem == TensorProto.UINT8:
        return [Finding("int8", f"{node.op_type} to uint8 (asymmetric, ONNX Runtime's CPU "
                                f"scheme); TensorRT quantizes symmetrically to int8",
                        "export with `--int8-target tensorrt` (symmetric int8, zero point 0)",
                        _where(node))]
    values = _constant_values(g, point) if point else None
    if values is not None and any(v != 0 for v in values):
        return [Finding("int8", f"{node.op_type} {name} is not 0; TensorRT takes zero points "
                                f"of 0 only", "quantize symmetrically (zero point 0)",
                        _where(node))]
    return []


def _constant_values(g: _Graph, name: str) -> list | None:
    tensor = g.initializers.get(name)
    return None if tensor is None else onnx.numpy_helper.to_array(tensor).ravel().tolist()


_CHECKS: dict[str, Check] = {
    "opset": _check_opset, "operators": _check_operators, "types": _check_types,
    "uint8-input": _check_uint8_input, "uint8-cast": _check_uint8_cast,
    "dynamic-dims": _check_dynamic_dims, "int8": _check_int8,
}
assert tuple(_CHECKS) == RULES
