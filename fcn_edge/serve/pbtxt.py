"""Pieces of Triton's ``config.pbtxt`` (protobuf text format) shared by every config written
here: string literals, model names, tensor lists. Triton's own schema
(``tritonclient.grpc.model_config_pb2.ModelConfig``) checks what they make in the tests."""
from __future__ import annotations

import re
from typing import Iterable, Sequence

from ..errors import InputError

# Letters, digits, '_', '-', '.': safe as a folder name and in Triton's HTTP/GRPC routes.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def check_model_name(name: str) -> None:
    if not isinstance(name, str) or not _MODEL_NAME.match(name):
        raise InputError(f"Triton model name {name!r}: use 1–128 letters, digits, '_', "
                         f"'-' or '.', not starting with '.' or '-'")


def quote(text: str) -> str:
    """A protobuf text-format string literal (C-style escapes; UTF-8 passes through)."""
    out = []
    for ch in text:
        if ch in ('"', "\\"):
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\{ord(ch):03o}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def tensor_list(kind: str, tensors: Sequence[tuple[str, str, Sequence[int], bool]]
                ) -> list[str]:
    """``input [ {…}, {…} ]`` (or ``output``): one entry per (name, data_type, dims,
    optional)."""
    lines = [f"{kind} ["]
    for i, (name, data_type, dims, optional) in enumerate(tensors):
        lines += ["  {", f"    name: {quote(name)}", f"    data_type: {data_type}",
                  f"    dims: [ {', '.join(str(d) for d in dims)} ]"]
        lines += ["    optional: true"] if optional else []
        lines += ["  }," if i < len(tensors) - 1 else "  }"]
    return lines + ["]"]


def string_parameters(params: Iterable[tuple[str, str]]) -> list[str]:
    """``parameters { key: … value { string_value: … } }``, one block per pair."""
    lines: list[str] = []
    for key, value in params:
        lines += ["parameters {", f"  key: {quote(key)}",
                  f"  value {{ string_value: {quote(value)} }}", "}"]
    return lines
