"""ONNX Runtime backend: fcn-edge ONNX artifacts on the CPU, CUDA or TensorRT execution provider.

One ``InferenceSession`` per backend, with every graph optimisation on and a configurable
intra-op thread count. The artifact's metadata comes from the session
(``get_modelmeta().custom_metadata_map``). ``run`` on one session may be called from several
threads at once (ONNX Runtime documents sessions as thread-safe), so this backend is. Several
inputs and outputs (paper §5: RGB + depth in, one output per head) are fed and fetched by name.

The TensorRT execution provider builds its engines for an optimisation profile; this backend
gives it the artifact's own shapes (so ``input_spec.profile`` bounds the sizes, as with a native
engine) and caches the engines beside the native ones. Those shapes are needed before a session
exists, so they are read from the ONNX file's ``metadata_props`` by ``runtime/onnx_file.py``,
which skips the graph: no ``onnx`` package on an edge box.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ...errors import BackendUnavailable, FcnEdgeError, InputError, ModelFormatError
from ..engine_file import cache_root
from ..metadata import ArtifactMeta
from ..onnx_file import read_onnx_metadata
from .base import BackendBase, InputSpec, check_tensor_names, check_threads, input_specs
from .optional import has_module, lazy_import

PROVIDERS = {"tensorrt": "TensorrtExecutionProvider", "cuda": "CUDAExecutionProvider",
             "cpu": "CPUExecutionProvider"}
#: What to try, best first, for each ``provider`` option.
FALLBACKS = {"tensorrt": ("tensorrt", "cuda", "cpu"), "cuda": ("cuda", "cpu"), "cpu": ("cpu",)}
GPU_EXTRA = 'pip install "fcn-edge[gpu]" (onnxruntime-gpu; see docs/install.md "GPU ONNX Runtime")'
# onnxruntime's error classes for a file it cannot load (all derive from Exception only).
_LOAD_ERRORS = ("InvalidProtobuf", "InvalidGraph", "Fail", "NoSuchFile", "InvalidArgument",
                "NotImplemented", "NoModel", "RuntimeException")


def probe(provider: str) -> tuple[bool, str]:
    """Whether this onnxruntime has ``provider`` (compiled in; a GPU is checked on opening)."""
    if not has_module("onnxruntime"):
        return False, "onnxruntime is not installed: pip install onnxruntime"
    ort = _import_ort()
    here = ort.get_available_providers()
    wanted = PROVIDERS[provider]
    if wanted in here:
        return True, f"onnxruntime {ort.__version__} has {wanted}"
    have = ", ".join(p.replace("ExecutionProvider", "") for p in here)
    return False, f"onnxruntime {ort.__version__} has no {wanted} (it has {have}): {GPU_EXTRA}"


class OnnxRuntimeBackend(BackendBase):
    """An fcn-edge ONNX in an ONNX Runtime session.

    Args:
        path: the ``.onnx`` file.
        provider: ``cpu``, ``cuda`` or ``tensorrt``: the best provider to use; the session
            falls back down that list (TensorRT → CUDA → CPU) for nodes a provider cannot run.
        threads: intra-op threads (0: ONNX Runtime's default, one per core).
        fp16: let the TensorRT provider compute an FP32 artifact in FP16.
        device_id: the GPU for the CUDA and TensorRT providers.
        trt_cache_dir: where the TensorRT provider keeps its engines (default: fcn-edge's
            cache, ``$FCN_EDGE_CACHE`` or ``~/.cache/fcn-edge``, under ``ort-trt``).
    """

    thread_safe = True

    def __init__(self, path: str | Path, *, provider: str = "cpu", threads: int = 0,
                 fp16: bool = False, device_id: int = 0,
                 trt_cache_dir: str | Path | None = None) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such ONNX file")
        if provider not in FALLBACKS:
            raise InputError(f"provider must be one of {', '.join(FALLBACKS)}, got {provider!r}")
        threads = check_threads(threads, "threads", zero="ONNX Runtime's default, one per "
                                                         "core") or 0
        ort = _import_ort()
        ok, why = probe(provider)
        if not ok:
            raise BackendUnavailable(why)
        meta_hint = read_onnx_metadata(self.path) if provider == "tensorrt" else None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # its warnings (unused initialisers …) are not the user's
        providers = _providers(ort, provider, meta_hint, fp16, device_id, trt_cache_dir)
        self._session = _open_session(ort, self.path, options, providers)
        self._threads = threads
        self.meta = _session_meta(self._session, self.path)
        self._providers = self._session.get_providers()
        active = next(k for k, v in PROVIDERS.items() if v == self._providers[0])
        self.name = f"onnxruntime:{active}"
        # With the TensorRT provider, sizes outside the profile it was given would fail; so
        # would any other size with a graph of fixed height and width (an imported model).
        fixed = _fixed_size(self._session.get_inputs()[0].shape)
        profile = self.meta.shapes if active == "tensorrt" or fixed else None
        self.input_spec = InputSpec.for_meta(self.meta, profile)
        self._outputs = list(self.meta.output_names)
        self._version = ort.__version__
        self.check_classes({o.name: _channels(o.shape) for o in self._session.get_outputs()})

    def _run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Every output by name for ``feed`` (input name → batch); concurrent calls allowed."""
        try:
            return dict(zip(self._outputs, self._session.run(self._outputs, dict(feed))))
        except Exception as exc:  # onnxruntime's own classes, all plain Exceptions
            n, h, w = self.input_spec.dims(feed[self.input_spec.name].shape)
            raise FcnEdgeError(f"onnxruntime failed on a {n}×{h}×{w} batch of {self.path}: "
                               f"{_first_line(exc)}") from None

    def describe(self) -> str:
        threads = self._threads or "default"
        return (f"onnxruntime {self._version} [{', '.join(self._providers)}], intra-op threads "
                f"{threads}, {self.meta.precision} {self.path.name}")

    def close(self) -> None:
        self._session = None
        super().close()


def _import_ort() -> Any:
    return lazy_import("onnxruntime", "running ONNX models needs onnxruntime ({exc}): "
                                      "pip install onnxruntime")


def _providers(ort: Any, provider: str, meta: ArtifactMeta | None, fp16: bool, device_id: int,
               trt_cache_dir: str | Path | None) -> list:
    """The provider list, best first, with options; only providers this build has."""
    here = set(ort.get_available_providers())
    chosen: list = []
    for key in FALLBACKS[provider]:
        name = PROVIDERS[key]
        if name not in here:
            continue
        if key == "tensorrt":
            chosen.append((name, _trt_options(meta, fp16, device_id, trt_cache_dir)))
        elif key == "cuda":
            chosen.append((name, {"device_id": str(device_id)}))
        else:
            chosen.append(name)
    return chosen


def _trt_options(meta: ArtifactMeta | None, fp16: bool, device_id: int,
                 cache_dir: str | Path | None) -> dict[str, str]:
    if cache_dir is None:
        cache_dir = cache_root() / "ort-trt"
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    options = {"device_id": str(device_id), "trt_engine_cache_enable": "True",
               "trt_engine_cache_path": str(cache_dir), "trt_timing_cache_enable": "True",
               "trt_fp16_enable": str(bool(fp16))}
    if meta is not None:  # an explicit profile: no rebuild each time a new size arrives
        specs = input_specs(meta).values()
        for key, dims in zip(("min", "opt", "max"), (meta.shapes.min, meta.shapes.opt,
                                                     meta.shapes.max)):
            options[f"trt_profile_{key}_shapes"] = ",".join(
                f"{s.name}:" + "x".join(str(d) for d in s.tensor_shape(*dims)) for s in specs)
    return options


def _open_session(ort: Any, path: Path, options: Any, providers: list) -> Any:
    state = ort.capi.onnxruntime_pybind11_state
    load_errors = tuple(getattr(state, n) for n in _LOAD_ERRORS if hasattr(state, n))
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except load_errors as exc:
        raise ModelFormatError(f"{path}: onnxruntime cannot load it ({_first_line(exc)}); a "
                               f"truncated or damaged file must be exported again with "
                               f"`fcn-edge export`") from None
    except getattr(state, "EPFail", ()) as exc:
        raise BackendUnavailable(f"an onnxruntime execution provider failed on {path}: "
                                 f"{_first_line(exc)}") from None


def _session_meta(session: Any, path: Path) -> ArtifactMeta:
    meta = ArtifactMeta.from_props(session.get_modelmeta().custom_metadata_map, source=str(path))
    check_tensor_names(path, [i.name for i in session.get_inputs()],
                       [o.name for o in session.get_outputs()], meta,
                       "export it again with `fcn-edge export`")
    return meta


def _fixed_size(shape: Any) -> bool:
    """Whether an N×C×H×W or N×H×W×C input's height and width are fixed numbers."""
    if not isinstance(shape, (list, tuple)) or len(shape) != 4:
        return False
    return all(isinstance(d, int) for d in shape[1:])


def _channels(shape: Any) -> Any:
    """An output's channel dimension as the graph states it (a name or None when dynamic)."""
    return shape[1] if isinstance(shape, (list, tuple)) and len(shape) == 4 else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
