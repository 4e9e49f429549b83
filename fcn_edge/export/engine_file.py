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
trt.__version__, *query_gpu(device_id))``. Plain Python: no tensorrt import here, and the
CUDA bindings that :func:`query_gpu` needs are imported only when it is called.
"""
from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any, Mapping

from ..errors import ModelFormatError
from ..io import atomic_path
from ..runtime.metadata import ArtifactMeta

MAGIC = b"FCNEDGE\0"
FORMAT = "fcn-edge/engine"
FORMAT_VERSION = 1
_LENGTH = struct.Struct("<I")
_MAX_HEADER = 16 << 20  # a sane header is a few kB; more means the length field is garbage
_REQUIRED = ("meta", "tensorrt_version", "gpu", "plan_bytes")
#: The TensorRT extras: CUDA 12 (JetPack 6, any driver ≥ 525) or CUDA 13 (driver ≥ 580.65,
#: JetPack 7); docs/edge-workflow.md "Which TensorRT and CUDA packages" says which fits.
TRT_EXTRA = ('pip install "fcn-edge[trt]" (CUDA 12: JetPack 6, drivers ≥ 525) or '
             '"fcn-edge[trt-cu13]" (CUDA 13: driver ≥ 580.65, JetPack 7)')


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


def engine_meta(header: Mapping[str, Any]) -> ArtifactMeta:
    """The :class:`ArtifactMeta` stored in an engine header."""
    return ArtifactMeta.from_dict(header["meta"])


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


def query_gpu(device_id: int | None = None) -> tuple[str, str]:
    """``(name, "major.minor")`` of CUDA device ``device_id`` (None: the current device).

    Through cuda-python, falling back to pycuda when cuda-python is missing *or* imports but
    cannot reach the GPU (cuda-python 13 on a driver older than 580); one BackendUnavailable
    naming both bindings' errors when neither works (``runtime/backends/cuda.py``).
    """
    from ..runtime.backends.cuda import gpu_identity  # lazy: the bindings load only when asked

    return gpu_identity(device_id)


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
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path}: the engine header is not valid JSON ({exc})") from None
    return _check_header(header, path)


def _check_header(header: Any, path: Path) -> dict[str, Any]:
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFormatError(f"{path}: the engine header is not an '{FORMAT}' header")
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelFormatError(f"{path} has engine format {header.get('format_version')}; this "
                               f"fcn-edge reads format {FORMAT_VERSION}: rebuild it with "
                               f"`fcn-edge build MODEL.onnx`")
    missing = [k for k in _REQUIRED if k not in header]
    if missing or not isinstance(header["plan_bytes"], int):
        raise ModelFormatError(f"{path}: the engine header lacks {missing or ['plan_bytes']}")
    return header


def _release(version: str) -> tuple[int, ...]:
    """``"10.3.0.26"`` → ``(10, 3, 0)``: the build number does not change the plan format."""
    return tuple(int(p) for p in re.findall(r"\d+", str(version))[:3])


def _cc(value: Any) -> str:
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return f"{int(value[0])}.{int(value[1])}"
    return str(value)


def _sm(cc: str) -> str:
    return "sm_" + cc.replace(".", "") if re.fullmatch(r"\d+\.\d+", cc) else f"compute {cc}"
