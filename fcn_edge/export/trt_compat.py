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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import onnx

from ..errors import InputError, ModelFormatError
from .trt_graph import OnnxGraph
from .trt_rules import CHECKS, RULES, Finding
from .trt_support import TRT_VERSIONS, SupportTable, load_table, trt_family

__all__ = ["RULES", "CompatReport", "Finding", "check_onnx_file", "check_tensorrt_compat",
           "check_tensorrt_targets", "default_versions", "format_reports", "parse_versions",
           "reports_to_json", "require_tensorrt_compat"]


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
    return _judge(OnnxGraph(model), load_table(version), precision)


def _judge(graph: OnnxGraph, table: SupportTable, precision: str | None) -> CompatReport:
    precision = precision or (graph.meta.precision if graph.meta else None)
    findings: list[Finding] = []
    checked = {}
    for rule, check in CHECKS.items():
        found, what = check(graph, table, precision)
        findings.extend(found)
        checked[rule] = what
    return CompatReport(table.tensorrt, table.cited, tuple(findings), checked)


def check_tensorrt_targets(model: onnx.ModelProto, versions: Iterable[str] = TRT_VERSIONS, *,
                           precision: str | None = None) -> list[CompatReport]:
    graph = OnnxGraph(model)  # read once, judged by each release's table
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
    from ..runtime.backends.tensorrt import installed_tensorrt_version

    version = installed_tensorrt_version()
    try:
        return (trt_family(version),) if version else TRT_VERSIONS
    except InputError:  # older than 8.6: judge it by every table, the build will refuse it
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
