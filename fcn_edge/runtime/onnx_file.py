"""Reading an ONNX file's metadata without the ``onnx`` package (an edge box has none).

fcn-edge's ONNX artifacts carry their :class:`~fcn_edge.runtime.metadata.ArtifactMeta` in the
model's ``metadata_props``. Everyone who needs it before a session exists reads it here: the
ONNX Runtime backend (its TensorRT provider's profile), ``fcn-edge build`` (the engine's
header), the Triton repository writer and the benchmarks. A tiny protobuf reader walks the
top-level fields of the memory-mapped file and decodes only field 14 (``metadata_props``),
so a 500 MB model costs a scan of its top-level field headers, not a parse of its weights.
"""
from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any, Iterator

from ..errors import ModelFormatError
from .metadata import ArtifactMeta

#: ModelProto.metadata_props (onnx.proto); each a StringStringEntryProto: key = 1, value = 2.
_METADATA_PROPS = 14


def read_onnx_props(path: str | Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (key → value), read from its top-level protobuf
    fields only: the graph and its weights are skipped, not parsed."""
    path = Path(path)
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            props = {}
            for field, value in _fields(data, 0, len(data)):
                if field == _METADATA_PROPS and isinstance(value, tuple):
                    entry = dict((k, bytes(data[a:b]).decode("utf-8"))
                                 for k, (a, b) in _entry_fields(data, *value))
                    props[entry.get(1, "")] = entry.get(2, "")
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path} is not a readable ONNX file (corrupt or truncated?): "
                               f"{exc}") from None
    return props


def read_onnx_metadata(path: str | Path) -> ArtifactMeta:
    """An ONNX file's fcn-edge metadata (:func:`read_onnx_props`, parsed and checked)."""
    return ArtifactMeta.from_props(read_onnx_props(path), source=str(path))


def _entry_fields(data: Any, start: int, end: int) -> Iterator[tuple[int, tuple[int, int]]]:
    for field, value in _fields(data, start, end):
        if isinstance(value, tuple):
            yield field, value


def _fields(data: Any, pos: int, end: int) -> Iterator[tuple[int, int | tuple[int, int]]]:
    """``(field number, varint value or (start, end) of a length-delimited value)``."""
    while pos < end:
        key, pos = _varint(data, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
            yield field, value
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > end:
                raise ValueError("a field runs past the end of the file")
            yield field, (pos, pos + length)
            pos += length
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        else:
            raise ValueError(f"protobuf wire type {wire} at byte {pos}")


def _varint(data: Any, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
