"""FP16 graphs: rewrite an fp32 ONNX model so that it stores and computes in float16.

Our own pass: the libraries' converters get fcn-edge's graphs wrong (docs/export.md, "Why
fcn-edge has its own FP16 pass"). It works on *precision groups*: the operator schemas say which
of a node's tensors share one type parameter (Conv's X, W, B and Y are all ``T``), so float
tensors joined through ordinary nodes end up with one dtype. The pass

1. isolates behind ``Cast`` nodes what stays fp32: the float inputs and outputs of
   ``keep_fp32_ops`` and of the nodes named in ``keep_fp32_nodes``, schema slots fixed to
   ``tensor(float)`` (Resize's scales), other domains' nodes and, with ``keep_io_fp32``, the
   graph's float inputs and outputs;
2. joins the float tensors into groups through the schemas' type parameters;
3. makes a group fp16 unless it holds a pinned tensor (one of the above, or shape arithmetic
   cast from integers wider than 8 bits: fp16 holds integers exactly only up to 2048) or
   computes nothing (a constant only ever read through casts stays fp32);
4. rewrites the fp16 groups' sources (initializers, Constant, ConstantOfShape, Cast(to=FLOAT),
   dtype attributes) and drops casts that became no-ops; integer tensors are never touched.

Values beyond ±65504 are clipped and non-zero values that would round to 0 are flushed; both
are counted in the :class:`Fp16Report`.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from functools import partial
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import InputError, ModelFormatError

__all__ = ["DEFAULT_KEEP_FP32", "FP16_MAX", "Fp16Report", "convert_to_fp16",
           "convert_with_report", "to_float16"]

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
#: Integer types whose values can pass 2048, the last integer fp16 holds exactly.
_WIDE_INTS = {TensorProto.INT16, TensorProto.UINT16, TensorProto.INT32, TensorProto.UINT32,
              TensorProto.INT64, TensorProto.UINT64}
_VARIADIC = onnx.defs.OpSchema.FormalParameterOption.Variadic
#: Ops whose ``dtype`` attribute chooses the float type of their output (default FLOAT).
_DTYPE_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
              "EyeLike", "Bernoulli"}

#: Ops kept in fp32 between casts. Why each:
#: * Softmax, LogSoftmax, Exp: exp(x) overflows fp16 from x ≈ 11.1; sums over classes lose bits.
#: * Reduce*, CumSum: sums over H×W pixels pass 65504 and a 10-bit mantissa drops small terms.
#: * Pow: x² overflows from |x| = 256. Sqrt, Log: their inputs are variances and probabilities,
#:   which reach fp16's subnormals (below 6.1e-5) where only a few significant bits are left.
#: * Layer/Instance/GroupNormalization: a mean and a variance over whole planes (as Reduce*).
#: Not kept: Conv, ConvTranspose, MatMul (TensorRT and cuDNN accumulate fp16 in fp32 and they are
#: the work fp16 is for); Resize (bilinear weights form a convex combination: no growth, error
#: ≈ one fp16 ulp); Erf (bounded, slope ≤ 1.13: its error is its input's); BatchNormalization
#: (refolded below into a per-channel x·s + b, fp16-safe); Div (x / std, everywhere; overflow
#: there shows up in :func:`fcn_edge.export.execute.check_finite`).
DEFAULT_KEEP_FP32 = frozenset({
    "Softmax", "LogSoftmax", "Exp", "ReduceSum", "ReduceMean", "ReduceSumSquare", "ReduceL1",
    "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceProd", "CumSum", "Pow", "Sqrt", "Log",
    "LayerNormalization", "InstanceNormalization", "GroupNormalization",
})


@dataclass
class Fp16Report:
    """What :func:`convert_to_fp16` did to a model."""

    converted_tensors: int = 0   # initializers and constant tensors stored as fp16
    clipped_values: int = 0      # finite values beyond ±65504, clipped to it
    flushed_values: int = 0      # non-zero values below fp16's smallest subnormal, now 0
    kept_fp32_nodes: int = 0     # nodes computing in fp32 between casts
    inserted_casts: int = 0      # Cast nodes in the result that the source did not have
    fp32_tensors: int = 0        # float tensors left fp32 (kept ops, IO, shape arithmetic)
    #: The nodes kept fp32 beyond the defaults: named in ``keep_fp32_nodes``, or of an op type
    #: that ``keep_fp32_ops`` adds to DEFAULT_KEEP_FP32 (``export --keep-fp32``).
    requested_fp32_nodes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"fp16: {self.converted_tensors} tensors converted, {self.clipped_values} values "
                f"clipped to ±{FP16_MAX:g}, {self.flushed_values} flushed to 0, "
                f"{self.kept_fp32_nodes} nodes kept fp32 ({len(self.requested_fp32_nodes)} "
                f"as asked), {self.inserted_casts} casts inserted")


def to_float16(array: np.ndarray) -> tuple[np.ndarray, int, int]:
    """``array`` as float16, with the number of values clipped to ±65504 and flushed to 0.
    Infinities stay infinite (they are meant, e.g. a mask's -inf); NaN stays NaN."""
    array = np.asarray(array, np.float32)
    finite = np.isfinite(array)
    clipped = int(np.count_nonzero(finite & (np.abs(array) > FP16_MAX)))
    half = np.where(finite, np.clip(array, -FP16_MAX, FP16_MAX), array).astype(np.float16)
    flushed = int(np.count_nonzero((half == 0) & (array != 0)))
    return half, clipped, flushed


def convert_to_fp16(model: onnx.ModelProto, keep_io_fp32: bool = True,
                    keep_fp32_ops: frozenset[str] = DEFAULT_KEEP_FP32,
                    keep_fp32_nodes: frozenset[str] = frozenset()) -> onnx.ModelProto:
    """A float16 copy of ``model`` (not modified), metadata kept; with ``keep_io_fp32`` float
    inputs and outputs stay float32 (cast at the edges): fed and read as the fp32 model is.
    The nodes of ``keep_fp32_ops`` types and those named in ``keep_fp32_nodes`` compute fp32."""
    return convert_with_report(model, keep_io_fp32, keep_fp32_ops, keep_fp32_nodes)[0]


def convert_with_report(model: onnx.ModelProto, keep_io_fp32: bool = True,
                        keep_fp32_ops: frozenset[str] = DEFAULT_KEEP_FP32,
                        keep_fp32_nodes: frozenset[str] = frozenset()
                        ) -> tuple[onnx.ModelProto, Fp16Report]:
    """:func:`convert_to_fp16` and its :class:`Fp16Report` (clipping cannot be read back from
    a converted model)."""
    missing = sorted(set(keep_fp32_nodes) - {node.name for node in model.graph.node if node.name})
    if missing:   # a name that matches nothing would keep nothing, silently
        raise InputError(f"keep_fp32_nodes: the model has no node named "
                         f"{', '.join(map(repr, missing))}")
    # FCN graphs have no control flow; a half-converted If/Loop body would be silently wrong.
    for node in model.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for a in node.attribute):
            raise ModelFormatError(f"fp16 conversion does not support control flow "
                                   f"({node.op_type} node {node.name!r}); export without it")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    casts_before = sum(n.op_type == "Cast" for n in out.graph.node)
    report = Fp16Report()
    rewrite = _Rewrite(out, (frozenset(keep_fp32_ops), frozenset(keep_fp32_nodes)),
                       _refold_batchnorms(out.graph), keep_io_fp32, report)
    rewrite.isolate()
    half = rewrite.choose_fp16()
    rewrite.apply(half)
    rewrite.drop_noop_casts(half)
    report.inserted_casts = sum(n.op_type == "Cast" for n in out.graph.node) - casts_before
    report.fp32_tensors = sum(t == FLOAT for n, t in rewrite.types.items() if n not in half)
    _finish(out)
    # Clipping changes what a layer computes; flushing weights below 6e-8 to 0 does not.
    (log.warning if report.clipped_values else log.info)("%s", report)
    return out, report


def _refold_batchnorms(graph: onnx.GraphProto) -> set[str]:
    """Rewrite inference BatchNormalizations as x·s + b (mean 0, var 1, epsilon 0), computed in
    fp32 first: var + 1e-5 and 1/sqrt of a tiny variance are where fp16 BN loses accuracy.
    Returns the outputs of the nodes rewritten; the others are kept fp32."""
    inits = {t.name: t for t in graph.initializer}
    done: set[str] = set()   # the outputs of the BNs refolded
    replaced: set[str] = set()   # their original parameters, dropped below where now unused
    for node in graph.node:
        if (node.op_type != "BatchNormalization" or len(node.output) != 1 or len(node.input) != 5
                or any(n not in inits or inits[n].data_type != FLOAT for n in node.input[1:])):
            continue
        scale, bias, mean, var = (numpy_helper.to_array(inits[n]) for n in node.input[1:])
        eps = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-5)
        s = (scale / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
        folded = (s, (bias - mean * s).astype(np.float32), np.zeros_like(s), np.ones_like(s))
        names = [f"{node.output[0]}/bn_{k}" for k in ("scale", "bias", "mean", "var")]
        graph.initializer.extend(numpy_helper.from_array(a, n) for a, n in zip(folded, names))
        replaced.update(node.input[1:])
        node.input[1:] = names
        _set_attribute(node, "epsilon", 0.0)
        done.add(node.output[0])
    used = {name for node in graph.node for name in node.input} | {v.name for v in graph.output}
    for tensor in [t for t in graph.initializer if t.name in replaced - used]:
        graph.initializer.remove(tensor)
    return done


def _finish(model: onnx.ModelProto) -> None:
    """Re-derive value_info from the new types and check the result."""
    del model.graph.value_info[:]
    model.graph.value_info.extend(onnx.shape_inference.infer_shapes(model).graph.value_info)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as error:
        raise ModelFormatError(f"fp16 conversion produced an invalid model: {error}") from error


def _schema_params(node: onnx.NodeProto, opset: int) -> tuple[list[str], list[str]] | None:
    """The type parameter (or fixed type) of each input and output of ``node``."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except onnx.defs.SchemaError:
        return None

    def expand(formals: list, count: int) -> list[str]:
        strs = [f.type_str for f in formals]
        if formals and formals[-1].option == _VARIADIC:   # Concat's inputs, Split's outputs
            strs += [strs[-1]] * max(0, count - len(strs))
        return strs[:count]

    return expand(schema.inputs, len(node.input)), expand(schema.outputs, len(node.output))


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every tensor whose type ONNX shape inference can tell."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError as error:
        problem = f"fp16 conversion: the model does not type-check: {error}"
        raise ModelFormatError(problem) from error
    graph = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type
             for v in (*graph.input, *graph.output, *graph.value_info)
             if v.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in graph.initializer})
    return types


class _Rewrite:
    """One conversion of one graph: its float types before, and the tensors pinned to fp32."""

    def __init__(self, model: onnx.ModelProto, keep: tuple[frozenset[str], frozenset[str]],
                 refolded: set[str], keep_io: bool, report: Fp16Report) -> None:
        self.graph, self.keep_io, self.report = model.graph, keep_io, report
        (self.keep_ops, self.keep_nodes), self.refolded = keep, refolded   # op types, node names
        self.opset = next((o.version for o in model.opset_import
                           if o.domain in ("", "ai.onnx")), 1)
        self.types = _elem_types(model)
        self.pinned: set[str] = set()
        self.names = set(self.types) | {n for node in self.graph.node
                                        for n in (*node.input, *node.output, node.name)}

    # ---- step 1: isolate what stays fp32 behind casts ---------------------------------------
    def opaque(self, node: onnx.NodeProto) -> bool:
        """Whether ``node`` computes in fp32: kept ops and nodes, unfolded BN, other domains."""
        return node.domain not in ("", "ai.onnx") or node.op_type in self.keep_ops or (
            node.name in self.keep_nodes) or (
            node.op_type == "BatchNormalization" and node.output[0] not in self.refolded)

    def is_float(self, name: str) -> bool:
        return self.types.get(name) == FLOAT

    def fresh(self, base: str, tag: str) -> str:
        name, k = f"{base}/{tag}", 1
        while name in self.names:
            name, k = f"{base}/{tag}_{k}", k + 1
        self.names.add(name)
        return name

    def cast(self, source: str, target: str) -> onnx.NodeProto:
        """A Cast to FLOAT; step 4 retargets it to FLOAT16 where ``target`` becomes fp16."""
        self.types[target] = FLOAT
        return helper.make_node("Cast", [source], [target], to=FLOAT,
                                name=self.fresh(target, "cast"))

    def fixed_slots(self, node: onnx.NodeProto) -> tuple[list[bool], list[bool]]:
        """Which inputs and outputs of ``node`` must be fp32 (all of an fp32 node's)."""
        params = None if self.opaque(node) else _schema_params(node, self.opset)
        if params is None:
            self.report.kept_fp32_nodes += 1
            if node.name in self.keep_nodes or node.op_type in self.keep_ops - DEFAULT_KEEP_FP32:
                self.report.requested_fp32_nodes.append(node.name)   # beyond the defaults
            return [True] * len(node.input), [True] * len(node.output)
        return tuple([p == "tensor(float)" for p in slots] for slots in params)

    def isolate(self) -> None:
        nodes: list[onnx.NodeProto] = []
        fp32_copies: dict[str, str] = {}   # a tensor → its fp32 copy, one per tensor
        for node in self.graph.node:
            fixed_in, fixed_out = self.fixed_slots(node)
            for i, name in enumerate(node.input):
                if fixed_in[i] and self.is_float(name):
                    if name not in fp32_copies:
                        fp32_copies[name] = self.fresh(name, "fp32")
                        nodes.append(self.cast(name, fp32_copies[name]))
                        self.pinned.add(fp32_copies[name])
                    node.input[i] = fp32_copies[name]
            nodes.append(node)
            for i, name in enumerate(node.output):
                if fixed_out[i] and self.is_float(name):
                    node.output[i] = self.fresh(name, "fp32")
                    self.pinned.add(node.output[i])
                    self.types[node.output[i]] = FLOAT
                    nodes.append(self.cast(node.output[i], name))
            if node.op_type == "Cast" and self.types.get(node.input[0]) in _WIDE_INTS:
                self.pinned.update(filter(self.is_float, node.output))   # shape arithmetic
        del self.graph.node[:]
        self.graph.node.extend(self._isolate_io(nodes) if self.keep_io else nodes)

    def _isolate_io(self, nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        """Float graph inputs are read through a Cast; float outputs are written by one."""
        initializers = {t.name for t in self.graph.initializer}
        head = []
        for value in self.graph.input:
            if not self.is_float(value.name) or value.name in initializers:
                continue
            self.pinned.add(value.name)
            copy = self.fresh(value.name, "fp16")
            for node in nodes:   # our fp32 boundary casts keep reading the fp32 input
                if not (node.op_type == "Cast" and node.output[0] in self.pinned):
                    _rename(node.input, value.name, copy)
            head.append(self.cast(value.name, copy))
        tail = []
        for value in self.graph.output:
            if not self.is_float(value.name) or value.name in self.pinned:
                continue
            self.pinned.add(value.name)
            if any(value.name in node.output for node in nodes):
                before = self.fresh(value.name, "fp16")
                self.types[before] = FLOAT
                for node in nodes:
                    _rename(node.input, value.name, before)
                    _rename(node.output, value.name, before)
                tail.append(self.cast(before, value.name))
        return head + nodes + tail

    # ---- steps 2 and 3: precision groups ---------------------------------------------------
    def choose_fp16(self) -> set[str]:
        """The float tensors that become fp16."""
        parent = {name: name for name, t in self.types.items() if t == FLOAT}   # union-find
        find = partial(_follow, parent)
        consumed = set()   # tensors read by ordinary compute (not only by casts or fp32 ops)
        for node in self.graph.node:
            if node.op_type in ("Cast", "Constant") or self.opaque(node):
                continue
            by_param: dict[str, list[str]] = defaultdict(list)
            params = _schema_params(node, self.opset) or ((), ())
            for names, kinds in zip((node.input, node.output), params):
                for name, kind in zip(names, kinds):
                    if name in parent and not kind.startswith("tensor("):
                        by_param[kind].append(name)
            for members in by_param.values():
                consumed.update(m for m in members if m in node.input)
                for other in members[1:]:
                    parent[find(other)] = find(members[0])
        outputs = {v.name for v in self.graph.output}
        fp32_roots = {find(n) for n in self.pinned if n in parent}
        live_roots = {find(n) for n in consumed | (outputs & parent.keys())}
        return {n for n in parent if find(n) not in fp32_roots and find(n) in live_roots}

    # ---- step 4: rewrite the sources of fp16 tensors -----------------------------------------
    def apply(self, half: set[str]) -> None:
        for i, tensor in enumerate(self.graph.initializer):
            if tensor.name in half:
                self.graph.initializer[i].CopyFrom(self.to_half(tensor))
        for node in self.graph.node:
            if not any(name in half for name in node.output):
                continue
            if node.op_type == "Cast":
                _set_attribute(node, "to", FLOAT16)
            elif node.op_type in _DTYPE_OPS:
                _set_attribute(node, "dtype", FLOAT16)
            elif node.op_type == "ConstantOfShape" and not node.attribute:
                node.attribute.append(helper.make_attribute(
                    "value", numpy_helper.from_array(np.zeros(1, np.float16))))
            self._convert_attributes(node)
        for value in (*self.graph.input, *self.graph.output):
            if value.name in half:
                value.type.tensor_type.elem_type = FLOAT16

    def to_half(self, tensor: TensorProto) -> TensorProto:
        half, clipped, flushed = to_float16(numpy_helper.to_array(tensor))
        self.report.converted_tensors += 1
        self.report.clipped_values += clipped
        self.report.flushed_values += flushed
        return numpy_helper.from_array(half, tensor.name)

    def _convert_attributes(self, node: onnx.NodeProto) -> None:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
                attr.t.CopyFrom(self.to_half(attr.t))
            elif node.op_type == "Constant" and attr.name in ("value_float", "value_floats"):
                value = numpy_helper.from_array(np.asarray(
                    attr.f if attr.name == "value_float" else list(attr.floats), np.float32))
                attr.CopyFrom(helper.make_attribute("value", self.to_half(value)))

    def drop_noop_casts(self, half: set[str]) -> None:
        """Remove casts whose input already has the target type (fp32 → fp32 after step 3)."""
        outputs = {v.name for v in self.graph.output}
        inputs = {v.name for v in self.graph.input}
        producers = {out: node for node in self.graph.node for out in node.output}
        alias: dict[str, str] = {}
        kept = []
        for node in self.graph.node:
            to = next((a.i for a in node.attribute if a.name == "to"), None)
            if node.op_type != "Cast" or to not in (FLOAT, FLOAT16) or to != (
                    FLOAT16 if node.input[0] in half else self.types.get(node.input[0])):
                kept.append(node)
                continue
            source, target = _follow(alias, node.input[0]), node.output[0]
            if target not in outputs:
                alias[target] = source
            elif source in producers and source not in outputs | inputs:
                _rename(producers[source].output, source, target)
                alias[source] = target
            else:
                kept.append(node)
        for node in kept:
            node.input[:] = [_follow(alias, name) for name in node.input]
        del self.graph.node[:]
        self.graph.node.extend(kept)


def _follow(links: dict[str, str], name: str) -> str:
    """The end of ``name``'s chain of links (a union-find root links to itself)."""
    while links.get(name, name) != name:
        links[name] = links.get(links[name], links[name])   # path halving
        name = links[name]
    return name


def _rename(names, old: str, new: str) -> None:
    for i, name in enumerate(names):
        if name == old:
            names[i] = new


def _set_attribute(node: onnx.NodeProto, name: str, value: int | float) -> None:
    others = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend(others + [helper.make_attribute(name, value)])
