"""A Triton model folder that serves any fcn-edge artifact through Triton's Python backend.

``write_python_model(REPO, ARTIFACT, ServeModel(name="fcn"))`` writes::

    REPO/fcn/config.pbtxt          backend "python": the inputs and outputs of
                                   serve.protocol, batching, instances, the artifact's metadata
    REPO/fcn/1/model.py            one import: fcn_edge.serve.python_model.TritonPythonModel
    REPO/fcn/1/<artifact>          the artifact as it is (ONNX, TensorRT engine, checkpoint)

Any Triton whose Python environment has ``fcn-edge`` (and the backend's engine: ONNX Runtime,
TensorRT, torch) serves it: ``fcn-edge serve`` starts the tritonserver PyTriton bundles on such
a folder, and NVIDIA's containers load it as they load any Python model.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from ..io import atomic_path
from ..runtime.backends import artifact_kind, open_backend
from ..runtime.metadata import ArtifactMeta
from .pbtxt import check_model_name, quote, string_parameters, tensor_list
from .protocol import Limits, TensorSpec, input_specs, output_specs

#: ``config.pbtxt`` parameters besides the artifact's metadata: how model.py opens it.
ARTIFACT_KEY, BACKEND_KEY = "fcn_edge_artifact", "fcn_edge_backend"
THREADS_KEY, MAX_SIDE_KEY = "fcn_edge_threads", "fcn_edge_max_side"
MODEL_PY = '''"""Triton Python backend model written by fcn-edge: runs the artifact beside this file
with fcn-edge's runtime (pip install fcn-edge in the server's Python). See config.pbtxt."""
from fcn_edge.serve.python_model import TritonPythonModel  # noqa: F401
'''
MAX_BATCH, MAX_INSTANCES, MAX_DELAY_US, MAX_THREADS = 256, 64, 1_000_000, 1024


@dataclass(frozen=True)
class ServeModel:
    """How Triton serves one artifact.

    ``max_batch_size`` 1 answers each request alone; above 1, Triton's dynamic batcher joins
    requests that arrive within ``max_delay_us`` into one call of up to that many frames (one
    ``Segmenter.batch``: equal sizes run as one batch). ``instances`` copies of the model run
    in parallel (each its own process and engine); ``threads`` is each one's ONNX Runtime
    thread count (0: the engine's default). ``backend`` is the runtime's backend name.
    ``max_side`` bounds a frame's (or a decoded image's) sides, in pixels.
    """

    name: str = "fcn"
    version: int = 1
    max_batch_size: int = 8
    max_delay_us: int = 1000
    instances: int = 1
    backend: str = "auto"
    threads: int = 0
    max_side: int = Limits.max_side

    def __post_init__(self) -> None:
        check_model_name(self.name)
        _bounded("version", self.version, 1, 1 << 31)
        _bounded("max_batch_size", self.max_batch_size, 1, MAX_BATCH)
        _bounded("max_delay_us", self.max_delay_us, 0, MAX_DELAY_US)
        _bounded("instances", self.instances, 1, MAX_INSTANCES)
        _bounded("threads", self.threads, 0, MAX_THREADS)
        Limits(max_side=self.max_side)  # its own bounds


def write_python_model(repo_dir: str | Path, artifact_path: str | Path,
                       settings: ServeModel | None = None) -> Path:
    """Write ``repo_dir/<name>`` (see the module docstring); returns that folder. The artifact
    is opened once first, with ``settings.backend``, so one that cannot run here is refused
    before anything is written."""
    settings = settings or ServeModel()
    artifact = Path(artifact_path)
    if not artifact.is_file():
        raise InputError(f"{artifact}: no such artifact")
    artifact_kind(artifact)  # an unknown kind: one line naming the kinds there are
    backend = open_backend(artifact, settings.backend)
    try:
        meta = backend.meta
    finally:
        backend.close()
    model_dir = Path(repo_dir) / settings.name
    version_dir = model_dir / str(settings.version)
    with atomic_path(version_dir / artifact.name) as tmp:
        shutil.copyfile(artifact, tmp)
    with atomic_path(version_dir / "model.py") as tmp:
        tmp.write_text(MODEL_PY, "utf-8")
    with atomic_path(model_dir / "config.pbtxt") as tmp:  # last: Triton loads what it names
        tmp.write_text(python_config(meta, settings, artifact.name), "utf-8")
    return model_dir


def python_config(meta: ArtifactMeta, settings: ServeModel, artifact_name: str) -> str:
    """The ``config.pbtxt`` text (protobuf text format) of the Python-backend model."""
    lines = [f"name: {quote(settings.name)}", 'backend: "python"',
             f"max_batch_size: {settings.max_batch_size}"]
    if settings.max_batch_size > 1:
        lines += ["dynamic_batching {",
                  f"  max_queue_delay_microseconds: {settings.max_delay_us}", "}"]
    lines += ["instance_group [", "  {", f"    count: {settings.instances}",
              "    kind: KIND_CPU", "  }", "]"]
    lines += tensor_list("input", [_fields(s) for s in input_specs(meta)])
    lines += tensor_list("output", [_fields(s) for s in output_specs(meta)])
    params = {**meta.to_props(), ARTIFACT_KEY: artifact_name, BACKEND_KEY: settings.backend,
              THREADS_KEY: str(settings.threads), MAX_SIDE_KEY: str(settings.max_side)}
    return "\n".join(lines + string_parameters(params.items())) + "\n"


def _fields(spec: TensorSpec) -> tuple[str, str, tuple[int, ...], bool]:
    return spec.name, spec.data_type, spec.dims, spec.optional


def _bounded(name: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InputError(f"{name} {value!r}: a whole number from {low} to {high}")
