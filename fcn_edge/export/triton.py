"""A Triton Inference Server model repository for an fcn-edge artifact.

Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/VERSION/model.onnx`` (or ``model.plan``).
The artifact's metadata goes into the config's ``parameters`` as the same key/value strings
the ONNX ``metadata_props`` hold, so a client reads the classes, palette, mean/std and colour
order from Triton's model-config endpoint and rebuilds them with ``ArtifactMeta.from_props``.

Plain Python; the config follows Triton's ModelConfig protobuf (model_config.proto).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..errors import InputError
from ..io import atomic_path
from ..runtime.engine_file import engine_meta, is_engine_file, read_engine
from ..runtime.metadata import FORMAT, NHWC, ArtifactMeta
from ..runtime.onnx_file import read_onnx_props

#: Triton platform → the file name its backend loads from a version folder.
PLATFORMS = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
_TRITON_TYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8", "int32": "TYPE_INT32",
                 "int64": "TYPE_INT64"}
# Letters, digits, '_', '-', '.': safe as a folder name and in Triton's HTTP/GRPC routes.
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def write_triton_repo(repo_dir: str | Path, model_name: str, artifact_path: str | Path,
                      meta: ArtifactMeta, platform: str = "onnxruntime_onnx", version: int = 1,
                      max_batch_size: int = 0) -> Path:
    """Write the model folder; returns ``repo_dir/model_name``.

    ``max_batch_size`` 0 keeps the batch dimension in the tensors' dims (as -1); N > 0 lets
    Triton batch requests up to N, and the dims then leave the batch out. For
    ``tensorrt_plan`` the artifact is an fcn-edge engine whose bare plan is written, since
    Triton's TensorRT backend deserialises ``model.plan`` as it is. The artifact's own
    metadata (its precision, profile) is preferred to ``meta`` where it has some; the two
    must describe the same tensors.
    """
    _check_args(model_name, platform, version, max_batch_size)
    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise InputError(f"{artifact}: no such artifact")
    model_dir = Path(repo_dir) / model_name
    target = model_dir / str(version) / PLATFORMS[platform]
    if platform == "tensorrt_plan":
        meta = _write_plan(artifact, target, meta, max_batch_size)
    else:
        meta = _write_onnx(artifact, target, meta)
    with atomic_path(model_dir / "config.pbtxt") as tmp:
        tmp.write_text(triton_config(model_name, meta, platform, max_batch_size), "utf-8")
    return model_dir


def triton_config(model_name: str, meta: ArtifactMeta, platform: str,
                  max_batch_size: int = 0) -> str:
    """The ``config.pbtxt`` text (protobuf text format) for ``meta``'s tensors."""
    _check_args(model_name, platform, 1, max_batch_size)
    batch = [] if max_batch_size > 0 else [-1]
    lines = [f"name: {_quote(model_name)}", f"platform: {_quote(platform)}",
             f"max_batch_size: {max_batch_size}"]
    for name, layout, channels, dtype in meta.input_tensors():
        dims = [-1, -1, channels] if layout == NHWC else [channels, -1, -1]
        lines += _tensor("input", name, "TYPE_UINT8" if dtype == "uint8" else "TYPE_FP32",
                         batch + dims)
    for name, classes, dtype in meta.output_tensors():
        if dtype not in _TRITON_TYPES:
            raise InputError(f"output dtype {dtype!r} has no Triton type here")
        dims = [-1, -1] if meta.argmax else [classes, -1, -1]
        lines += _tensor("output", name, _TRITON_TYPES[dtype], batch + dims)
    for key, value in meta.to_props().items():
        lines += ["parameters {", f"  key: {_quote(key)}",
                  f"  value {{ string_value: {_quote(value)} }}", "}"]
    return "\n".join(lines) + "\n"


def _tensor(kind: str, name: str, data_type: str, dims: list[int]) -> list[str]:
    return [f"{kind} [", "  {", f"    name: {_quote(name)}", f"    data_type: {data_type}",
            f"    dims: [ {', '.join(str(d) for d in dims)} ]", "  }", "]"]


def _quote(text: str) -> str:
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


def _check_args(model_name: str, platform: str, version: int, max_batch_size: int) -> None:
    if not isinstance(model_name, str) or not _MODEL_NAME.match(model_name):
        raise InputError(f"Triton model name {model_name!r}: use 1–128 letters, digits, '_', "
                         f"'-' or '.', not starting with '.' or '-'")
    if platform not in PLATFORMS:
        raise InputError(f"Triton platform {platform!r}: one of {sorted(PLATFORMS)}")
    if not isinstance(version, int) or version < 1:
        raise InputError(f"model version {version!r}: a positive integer (Triton's folder name)")
    if not isinstance(max_batch_size, int) or max_batch_size < 0:
        raise InputError(f"max_batch_size {max_batch_size!r}: 0 (no Triton batching) or more")


def _write_onnx(artifact: Path, target: Path, meta: ArtifactMeta) -> ArtifactMeta:
    """Copy the ONNX (and its external weights); returns its own metadata where it has some."""
    if is_engine_file(artifact):
        raise InputError(f"{artifact} is a TensorRT engine: use platform 'tensorrt_plan'")
    props = read_onnx_props(artifact)
    own = ArtifactMeta.from_props(props, str(artifact)) if props.get("format") == FORMAT else meta
    _check_same(own, meta, artifact)
    with atomic_path(target) as tmp:
        shutil.copyfile(artifact, tmp)
    for name in _external_data_files(artifact):  # weights kept beside a >2 GB graph
        with atomic_path(target.parent / name) as tmp:
            shutil.copyfile(artifact.parent / name, tmp)
    return own


def _write_plan(artifact: Path, target: Path, meta: ArtifactMeta, max_batch_size: int
                ) -> ArtifactMeta:
    """Write the bare plan; returns the engine's own metadata (its precision and profile)."""
    header, plan = read_engine(artifact)
    built = engine_meta(header, artifact)
    _check_same(built, meta, artifact)
    if max_batch_size > built.shapes.max[0]:
        raise InputError(f"max_batch_size {max_batch_size} exceeds the engine's profile "
                         f"(batch ≤ {built.shapes.max[0]}): rebuild with a larger --shapes "
                         f"batch or lower max_batch_size")
    with atomic_path(target) as tmp:
        tmp.write_bytes(plan)
    return built


def _check_same(own: ArtifactMeta, meta: ArtifactMeta, artifact: Path) -> None:
    if (own.input_tensors(), own.output_tensors()) != (meta.input_tensors(),
                                                       meta.output_tensors()):
        raise InputError(f"{artifact} holds a model with tensors {list(own.input_names)} → "
                         f"{list(own.output_names)} and {own.num_classes} classes, not the one "
                         f"described ({list(meta.input_names)} → {list(meta.output_names)}, "
                         f"{meta.num_classes} classes)")


def _external_data_files(onnx_path: Path) -> list[str]:
    """Relative names of the external-data files an ONNX model refers to (needs ``onnx``)."""
    try:
        import onnx
    except ImportError:
        return []
    model = onnx.load(str(onnx_path), load_external_data=False)
    names = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            names.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(n for n in names if (onnx_path.parent / n).is_file())
