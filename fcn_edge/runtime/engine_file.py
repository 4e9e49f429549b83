"""The fcn-edge engine file: a TensorRT plan that describes itself.

A bare TensorRT plan says nothing about the model inside (classes, palette, preprocessing,
tensor layouts) nor about where it can run: TensorRT deserialises a plan only with the exact
TensorRT version that built it, and a plan is tuned for one GPU model. So fcn-edge writes::

    b"FCNEDGE\\0"            8 bytes of magic
    uint32, little-endian   length of the header in bytes
    header                  UTF-8 JSON object (artifact metadata, build key, TensorRT, GPU)
    plan                    the serialised TensorRT engine, ``plan_bytes`` long

The header is read without touching the plan, so a runtime can refuse a stale engine with a
clear message before handing megabytes to TensorRT: ``check_engine_compatible(header,
trt.__version__, *query_gpu(device_id))`` (``query_gpu``: ``runtime/backends/cuda.py``).
Plain Python: no tensorrt import here.

The format lives in the runtime because a deployed box reads it; ``fcn-edge build``
(``export/tensorrt.py``) writes it with :func:`write_engine`, kept beside the reader so the
layout is written down once. :func:`cache_root` is where both keep TensorRT engines: the
builder's (``engines/``) and ONNX Runtime's TensorRT provider's (``ort-trt/``).
"""
from __future__ import annotations

import json
import os
import re
import struct
from pathlib import Path
from typing import Any, Mapping

from ..errors import ModelFormatError
from ..io import atomic_path
from .fields import FieldReader, bounded, text
from .metadata import ArtifactMeta

MAGIC = b"FCNEDGE\0"
FORMAT = "fcn-edge/engine"
FORMAT_VERSION = 1
_LENGTH = struct.Struct("<I")
_MAX_HEADER = 16 << 20  # a sane header is a few kB; more means the length field is garbage
_REQUIRED = ("meta", "tensorrt_version", "gpu", "plan_bytes")
_REBUILD = "rebuild it with `fcn-edge build MODEL.onnx`"


def cache_root() -> Path:
    """``$FCN_EDGE_CACHE``, else ``$XDG_CACHE_HOME/fcn-edge``, else ``~/.cache/fcn-edge``."""
    if os.environ.get("FCN_EDGE_CACHE"):
        return Path(os.environ["FCN_EDGE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fcn-edge"


def write_engine(path: str | Path, plan: bytes, header: Mapping[str, Any]) -> Path:
    """Atomically write ``plan`` behind ``header`` (format fields and ``plan_bytes`` added)."""
    path = Path(path)
    full = {"format": FORMAT, "format_version": FORMAT_VERSION, **header,
            "plan_bytes": len(plan)}
    blob = json.dumps(full, sort_keys=True, ensure_ascii=False).encode("utf-8")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(MAGIC)
        f.write(_LENGTH.pack(len(blob)))
        f.write(blob)
        f.write(plan)
    return path


def is_engine_file(path: str | Path) -> bool:
    """Whether ``path`` starts with the fcn-edge engine magic (cheap: reads 8 bytes)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_engine_header(path: str | Path) -> dict[str, Any]:
    """The header of an fcn-edge engine, without reading its plan."""
    with _open(path) as f:
        return _read_header(f, Path(path))


def read_engine(path: str | Path) -> tuple[dict[str, Any], bytes]:
    """``(header, plan)`` of an fcn-edge engine; the plan is checked against its stated size."""
    path = Path(path)
    with _open(path) as f:
        header = _read_header(f, path)
        plan = f.read()
    if len(plan) != header["plan_bytes"]:
        raise ModelFormatError(f"{path}: the engine plan is {len(plan)} bytes but the header "
                               f"says {header['plan_bytes']}: the file is truncated or damaged; "
                               f"rebuild it with `fcn-edge build MODEL.onnx`")
    return header, plan


def engine_meta(header: Mapping[str, Any], source: str | Path = "the engine") -> ArtifactMeta:
    """The :class:`ArtifactMeta` stored in an engine header; errors name ``source`` (the file)."""
    return ArtifactMeta.from_dict(header["meta"], str(source))


def engine_dla_core(header: Mapping[str, Any], source: str | Path = "the engine") -> int | None:
    """The DLA core an engine was built for (``header["dla"]["core"]``, written by ``fcn-edge
    build --dla-core N``), None for a GPU engine; a ModelFormatError unless it is 0–15."""
    if header.get("dla") is None:
        return None
    return FieldReader(header, str(source), _REBUILD).nested("dla")("core", bounded(0, 15))


def check_engine_compatible(header: Mapping[str, Any], tensorrt_version: str, gpu_name: str,
                            compute_capability: str | tuple[int, int]) -> None:
    """Refuse an engine built by another TensorRT release or for another GPU.

    TensorRT deserialises a plan only with the release that built it (major.minor.patch), and
    kernels are chosen for one GPU model, so both must match this machine.
    """
    built_trt = str(header.get("tensorrt_version", "?"))
    gpu = header.get("gpu") or {}
    built_name, built_cc = str(gpu.get("name", "?")), _cc(gpu.get("compute_capability", "?"))
    here_cc = _cc(compute_capability)
    same_trt = _release(built_trt) == _release(tensorrt_version)
    same_gpu = built_cc == here_cc and built_name.strip() == str(gpu_name).strip()
    if same_trt and same_gpu:
        return
    onnx = header.get("onnx_file") or "MODEL.onnx"
    raise ModelFormatError(
        f"engine built for {built_name} ({_sm(built_cc)}) with TensorRT {built_trt}; this "
        f"machine has {gpu_name} ({_sm(here_cc)}) with TensorRT {tensorrt_version}: rebuild it "
        f"with `fcn-edge build {onnx}`")


def _open(path: str | Path):
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ModelFormatError(f"{path}: no such engine file") from None
    except OSError as exc:
        raise ModelFormatError(f"{path}: cannot read the engine: {exc.strerror}") from None


def _read_header(f, path: Path) -> dict[str, Any]:
    if f.read(len(MAGIC)) != MAGIC:
        raise ModelFormatError(
            f"{path} is not an fcn-edge engine (no FCNEDGE header): a bare .plan/.engine built "
            f"elsewhere carries no model metadata; give it a sidecar metadata file or rebuild it "
            f"with `fcn-edge build MODEL.onnx`")
    raw_length = f.read(_LENGTH.size)
    if len(raw_length) != _LENGTH.size:
        raise ModelFormatError(f"{path}: the engine header is truncated")
    (length,) = _LENGTH.unpack(raw_length)
    blob = f.read(length) if length <= _MAX_HEADER else b""
    if len(blob) != length or not blob:
        raise ModelFormatError(f"{path}: the engine header is truncated or its length "
                               f"({length} bytes) is garbled")
    try:
        header = json.loads(blob.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # bad UTF-8 or JSON, absurd numbers, nesting
        raise ModelFormatError(f"{path}: the engine header is not valid JSON "
                               f"({str(exc)[:80] or type(exc).__name__}); {_REBUILD}") from None
    return _check_header(header, path)


def _check_header(header: Any, path: Path) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: the engine header is not an '{FORMAT}' header")
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"{path} has engine format {header.get('format_version')}; this "
                               f"fcn-edge reads format {FORMAT_VERSION}: rebuild it with "
                               f"`fcn-edge build MODEL.onnx`")
    missing = [k for k in _REQUIRED if k not in header]
    if missing:
        raise ModelFormatError(f"{path}: the engine header lacks {missing}; {_REBUILD}")
    read = FieldReader(header, str(path), _REBUILD)  # each field's type, once, before use
    read("tensorrt_version", text)
    read("plan_bytes", bounded(0, 1 << 40))
    read("onnx_file", text, None)
    gpu = read.nested("gpu")
    gpu("name", text)
    gpu("compute_capability", _capability)
    engine_dla_core(header, path)
    return header


def _capability(value: Any) -> str:
    """A compute capability as ``"8.6"`` or ``[8, 6]``."""
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return f"{bounded(0, 99)(value[0])}.{bounded(0, 99)(value[1])}"
    if isinstance(value, str) and re.fullmatch(r"\d{1,2}\.\d{1,2}", value):
        return value
    raise ValueError('must be "MAJOR.MINOR" or [major, minor]')


def _release(version: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` → ``(10, 3, 0)``: the build number does not change the plan format."""
    return tuple(int(p) for p in re.findall(r"\d+", str(version))[:3])


def _cc(value: Any) -> str:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"{int(value[0])}.{int(value[1])}"
    return str(value)


def _sm(cc: str) -> str:
    return "sm_" + cc.replace(".", "") if re.fullmatch(r"\d+\.\d+", cc) else f"compute {cc}"
