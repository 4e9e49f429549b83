"""Write a support table from an onnx-tensorrt ``docs/operators.md``, citing where it was read.

    git -C onnx-tensorrt show 10.1-GA:docs/operators.md > operators.md
    python -m fcn_edge.export.trt_support operators.md --tensorrt 10 --ref 10.1-GA \\
        --commit "$(git -C onnx-tensorrt rev-parse 10.1-GA)"

Writes ``tensorrt-<family>.json`` beside this module (``--out`` elsewhere).
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

from ...errors import InputError
from ...io import atomic_path
from . import _HERE, SupportTable, parse_operators_md, table_to_json

#: Network I/O types per family: 8.6 binds INT64 as INT32 (its parser casts INT64 down) and
#: took UINT8 I/O from 8.5 on; BF16 and native INT64 arrived with 9.0 (onnx-tensorrt
#: docs/Changelog.md). DOUBLE is never a TensorRT type.
IO_TYPES = {"8.6": ("FP32", "FP16", "INT32", "INT8", "UINT8", "BOOL"),
            "10": ("FP32", "FP16", "BF16", "INT32", "INT64", "INT8", "UINT8", "BOOL"),
            "11": ("FP32", "FP16", "BF16", "INT32", "INT64", "INT8", "UINT8", "BOOL")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fcn_edge.export.trt_support",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("operators_md", type=Path)
    parser.add_argument("--tensorrt", required=True, choices=sorted(IO_TYPES))
    parser.add_argument("--repo", default="onnx/onnx-tensorrt")
    parser.add_argument("--ref", required=True, help="branch or tag read, e.g. 10.1-GA")
    parser.add_argument("--commit", required=True, help="the commit the page was read at")
    parser.add_argument("--path", default="docs/operators.md")
    parser.add_argument("--opset", help="MIN-MAX, where the page's header is known to be stale")
    parser.add_argument("--note", action="append", default=[], help="why, where it matters")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    try:
        opset, operators = parse_operators_md(args.operators_md.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, InputError) as exc:
        print(f"trt_support: {args.operators_md}: {exc}", file=sys.stderr)
        return 1
    if args.opset:
        low, high = (int(v) for v in args.opset.split("-"))
        opset = (low, high)
    source = {"repo": args.repo, "ref": args.ref, "commit": args.commit, "path": args.path,
              "read": date.today().isoformat()}
    table = SupportTable(args.tensorrt, opset, operators, IO_TYPES[args.tensorrt], source,
                         tuple(args.note))
    out = args.out or _HERE / f"tensorrt-{args.tensorrt}.json"
    with atomic_path(out) as tmp:
        tmp.write_text(_dumps(table_to_json(table)), encoding="utf-8")
    print(f"wrote {out}: {len(operators)} operators, opset {opset[0]}–{opset[1]}")
    return 0


def _dumps(data: dict) -> str:
    """Indented JSON with one operator per line: a diff of two tables reads row by row."""
    rows = data.pop("operators")
    head = json.dumps(data, indent=1, ensure_ascii=False)[:-2]
    body = ",\n".join(f"  {json.dumps(name)}: {json.dumps(row, ensure_ascii=False)}"
                       for name, row in rows.items())
    return f"{head},\n \"operators\": {{\n{body}\n }}\n}}\n"


if __name__ == "__main__":
    raise SystemExit(main())
