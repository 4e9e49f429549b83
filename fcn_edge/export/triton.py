"""A Triton Inference Server model repository for an fcn-edge artifact.

Writes ``REPO/NAME/config.pbtxt`` and ``REPO/NAME/VERSION/model.onnx`` (or ``model.plan``).
The artifact's metadata goes into the config's ``parameters`` as the same key/value strings
the ONNX ``metadata_props`` hold, so a client reads the classes, palette, mean/std and colour
order from Triton's model-config endpoint and rebuilds them with ``ArtifactMeta.from_props``.

Plain Python; the config follows Triton's ModelConfig protobuf (model_config.proto).

``export --triton-repo`` writes the model folder with :func:`stage_model`: ONNX Runtime's own
backend (``onnxruntime_onnx``, the default) or, with ``--triton-platform python``, fcn-edge's
Python-backend model (``fcn_edge.serve.repository``), which any Triton runs with fcn-edge
installed in its Python: the repository ``fcn-edge serve`` builds, and the one the tests start
the real tritonserver on.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from ..errors import InputError
from ..io import atomic_path
from ..runtime.bounds import Bound
from ..runtime.engine_file import engine_meta, is_engine_file, read_engine
from ..runtime.metadata import FORMAT, NHWC, ArtifactMeta
from ..runtime.onnx_file import read_onnx_props
from ..serve.pbtxt import check_model_name, quote, string_parameters, tensor_list
from ..serve.repository import (MAX_BATCH, MAX_INSTANCES, MAX_THREADS, ServeModel,
                                write_python_model)
from .staging import Staging

#: Triton platform → the file name its backend loads from a version folder.
PLATFORMS = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
_TRITON_TYPES = {"float32": "TYPE_FP32", "uint8": "TYPE_UINT8", "int32": "TYPE_INT32",
                 "int64": "TYPE_INT64"}
#: What ``export --triton-platform`` writes (an engine's ``tensorrt_plan`` folder is written
#: with write_triton_repo, where the engine is built).
EXPORT_PLATFORMS = ("onnxruntime_onnx", "python")
#: ``--triton-max-batch`` and ``--triton-instances``; the Python model's own bounds (ServeModel).
EXPORT_BOUNDS = {"triton_max_batch": Bound(0, MAX_BATCH),
                 "triton_instances": Bound(1, MAX_INSTANCES),
                 "triton_threads": Bound(0, MAX_THREADS, zero="the engine's default")}


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


def check_export_options(platform: str, max_batch: int | None, instances: int | None,
                         threads: int | None = None) -> None:
    """Refuse, before any work, a ``--triton-*`` combination ``stage_model`` cannot write."""
    if platform not in EXPORT_PLATFORMS:
        raise InputError(f"--triton-platform {platform!r}: choose one of "
                         f"{', '.join(EXPORT_PLATFORMS)}")
    if platform == "python" and max_batch == 0:
        raise InputError("--triton-max-batch 0 with --triton-platform python: the Python model "
                         "takes [N,H,W,3] batches; give 1 (no batching) or more")
    for flag, value in (("--triton-instances", instances), ("--triton-threads", threads)):
        if platform != "python" and value is not None:
            raise InputError(f"{flag} goes with --triton-platform python (the {platform} "
                             f"backend's own settings choose them)")


def stage_model(staging: Staging, repo_dir: str | Path, name: str, artifact: Path,
                meta: ArtifactMeta, platform: str = "onnxruntime_onnx",
                max_batch: int | None = None, instances: int | None = None,
                threads: int | None = None) -> Path:
    """Write the model folder ``repo_dir/name`` into ``staging``, which moves it into the
    repository on commit; returns where it will be. The repository is ``scanned``: a live
    Triton polling it never sees the staging folder (see ``staging``)."""
    check_export_options(platform, max_batch, instances, threads)
    repo = Path(repo_dir)
    staging.scanned(repo)
    staging.path(repo / name)  # the model folder, renamed into the repository at the end
    if platform == "python":
        batch = {} if max_batch is None else {"max_batch_size": max_batch}  # else its default
        write_python_model(staging.folder(repo), artifact, ServeModel(
            name=name, instances=instances or 1, threads=threads or 0, **batch))
    else:
        write_triton_repo(staging.folder(repo), name, artifact, meta, platform,
                          max_batch_size=max_batch or 0)
    return repo / name


def triton_config(model_name: str, meta: ArtifactMeta, platform: str,
                  max_batch_size: int = 0) -> str:
    """The ``config.pbtxt`` text (protobuf text format) for ``meta``'s tensors."""
    _check_args(model_name, platform, 1, max_batch_size)
    batch = [] if max_batch_size > 0 else [-1]
    lines = [f"name: {quote(model_name)}", f"platform: {quote(platform)}",
             f"max_batch_size: {max_batch_size}"]
    inputs = [(name, "TYPE_UINT8" if dtype == "uint8" else "TYPE_FP32",
               batch + ([-1, -1, channels] if layout == NHWC else [channels, -1, -1]), False)
              for name, layout, channels, dtype in meta.input_tensors()]
    outputs = []
    for name, classes, dtype in meta.output_tensors():
        if dtype not in _TRITON_TYPES:
            raise InputError(f"output dtype {dtype!r} has no Triton type here")
        dims = [-1, -1] if meta.argmax else [classes, -1, -1]
        outputs.append((name, _TRITON_TYPES[dtype], batch + dims, False))
    for kind, tensors in (("input", inputs), ("output", outputs)):  # one list per tensor
        lines += [line for each in tensors for line in tensor_list(kind, [each])]
    return "\n".join(lines + string_parameters(meta.to_props().items())) + "\n"


def _check_args(model_name: str, platform: str, version: int, max_batch_size: int) -> None:
    check_model_name(model_name)
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
