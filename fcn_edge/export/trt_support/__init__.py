"""What each TensorRT release's ONNX parser supports, kept as data with the source it was read from.

onnx/onnx-tensorrt publishes, per release branch, ``docs/operators.md``: the opset range the
parser reads and, per ONNX operator, whether it is supported, for which types and with which
restrictions. :func:`parse_operators_md` turns that page into a :class:`SupportTable`; the
JSON files beside this module are those tables, each naming the repository, branch, commit
and date it was read (``python -m fcn_edge.export.trt_support`` writes a new one).

``TRT_VERSIONS`` are the release families fcn-edge builds for: 8.6 (JetPack 6.0), 10.x
(JetPack 6.1/6.2, most x86 installs) and 11.x. Plain Python and JSON: no onnx or TensorRT.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from ...errors import InputError

TRT_VERSIONS = ("8.6", "10", "11")
_HERE = Path(__file__).parent
_OPSET_UP_TO = re.compile(r"supports operators up to opset (\d+)", re.IGNORECASE)
_OPSET_RANGE = re.compile(r"inclusive range of opset (\d+) to opset (\d+)", re.IGNORECASE)


@dataclass(frozen=True)
class OperatorSupport:
    """One row of ``operators.md``: supported or not, the types, the restrictions."""

    supported: bool
    types: tuple[str, ...] = ()          # FP32, FP16, BF16, INT32, INT64, INT8, UINT8, BOOL ...
    restrictions: str = ""


@dataclass(frozen=True)
class SupportTable:
    """A TensorRT release family's ONNX parser, as its ``operators.md`` describes it."""

    tensorrt: str                          # "8.6", "10", "11"
    opset: tuple[int, int]                 # the default domain's opsets the parser reads
    operators: Mapping[str, OperatorSupport]
    io_types: tuple[str, ...]              # tensor types allowed as network inputs/outputs
    source: Mapping[str, Any] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def cited(self) -> str:
        """Where the table was read, e.g. ``onnx/onnx-tensorrt@96e7811 (10.1-GA)``."""
        src = self.source
        return f"{src.get('repo', '?')}@{str(src.get('commit', '?'))[:7]} ({src.get('ref', '?')})"


def trt_family(version: str) -> str:
    """The family of a TensorRT release (``"10.3.0.26"`` → ``"10"``, ``"8.6.2"`` → ``"8.6"``,
    ``"11"`` → ``"11"``); 9.x, an early-access line, is judged by 8.6's table."""
    numbers = [int(n) for n in re.findall(r"\d+", str(version))[:2]]
    if not numbers:
        raise InputError(f"cannot read the TensorRT version {version!r}: give 8.6, 10 or 11")
    major, minor = numbers[0], (numbers + [0])[1]
    if major >= 11:
        return "11"
    if major == 10:
        return "10"
    if (major, minor) >= (8, 6):
        return "8.6"
    raise InputError(f"TensorRT {version} is older than 8.6, the oldest fcn-edge builds for")


def load_table(version: str) -> SupportTable:
    """The support table of ``version``'s family (any spelling :func:`trt_family` reads)."""
    return _load(trt_family(version))


@lru_cache(maxsize=None)
def _load(family: str) -> SupportTable:
    data = json.loads((_HERE / f"tensorrt-{family}.json").read_text(encoding="utf-8"))
    return table_from_json(data)


def table_from_json(data: Mapping[str, Any]) -> SupportTable:
    operators = {name: OperatorSupport(bool(row["supported"]), tuple(row.get("types", ())),
                                       row.get("restrictions", ""))
                 for name, row in data["operators"].items()}
    return SupportTable(str(data["tensorrt"]), tuple(data["opset"]), operators,
                        tuple(data["io_types"]), dict(data.get("source", {})),
                        tuple(data.get("notes", ())))


def parse_operators_md(text: str) -> tuple[tuple[int, int], dict[str, OperatorSupport]]:
    """``((min opset, max opset), {operator: support})`` from an onnx-tensorrt
    ``docs/operators.md`` (the 8.x "up to Opset N" and the 10.x "range of opset A to B"
    headers both read; 8.x pages name no minimum, which is then 1)."""
    ranged = _OPSET_RANGE.search(text)
    if ranged:
        opset = (int(ranged.group(1)), int(ranged.group(2)))
    else:
        up_to = _OPSET_UP_TO.search(text)
        if not up_to:
            raise InputError("no opset range in this operators.md: is it onnx-tensorrt's?")
        opset = (1, int(up_to.group(1)))
    operators: dict[str, OperatorSupport] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not line.lstrip().startswith("|") or len(cells) < 2 or not cells[1][:1] in "YN":
            continue  # the header, its ---- separator, prose
        if cells[0] in ("Operator", "") or set(cells[0]) <= {"-"}:
            continue
        types = tuple(t.strip() for t in (cells[2] if len(cells) > 2 else "").split(",")
                      if t.strip())
        restrictions = " ".join(c for c in cells[3:] if c).replace("\\.", ".")
        operators[cells[0]] = OperatorSupport(cells[1].startswith("Y"), types, restrictions)
    if not operators:
        raise InputError("no operator rows in this operators.md")
    return opset, operators


def table_to_json(table: SupportTable) -> dict[str, Any]:
    return {"tensorrt": table.tensorrt, "source": dict(table.source), "notes": list(table.notes),
            "opset": list(table.opset), "io_types": list(table.io_types),
            "operators": {name: {"supported": row.supported, "types": list(row.types),
                                 **({"restrictions": row.restrictions}
                                    if row.restrictions else {})}
                          for name, row in sorted(table.operators.items())}}
