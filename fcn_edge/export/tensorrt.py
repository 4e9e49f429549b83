"""Build TensorRT engines from fcn-edge ONNX artifacts, cached by all that makes plans differ.

A plan depends on the ONNX bytes, the TensorRT release, the GPU, the precision and the
optimisation profile; :func:`engine_cache_key` hashes exactly those, so a second
``fcn-edge build`` of the same model on the same box is a file copy, and any change rebuilds.

Precision follows what each TensorRT release offers:

* 8.6–10.x, FP32 ONNX: a weakly typed network, with ``BuilderFlag.FP16`` for ``fp16`` (the
  flag is deprecated since 10.12 but works through 10.x);
* 10.x (9.1+), FP16 ONNX: a strongly typed network: the graph's own types decide;
* 11.x: always strongly typed — ``BuilderFlag.FP16`` was removed, so ``fp16`` needs the
  FP16 ONNX that ``fcn-edge export --fp16`` writes.

Everything above the ``tensorrt`` import is plain Python and tested without TensorRT.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import BackendUnavailable, InputError, ModelFormatError
from ..io import atomic_path
from ..runtime.backends.tensorrt import tensorrt_logger
from ..runtime.metadata import ArtifactMeta, Shapes
from .engine_file import TRT_EXTRA, check_engine_compatible, query_gpu, read_engine, write_engine

MIN_TENSORRT = (8, 6)
_STRONGLY_TYPED_SINCE = (9, 1)   # NetworkDefinitionCreationFlag.STRONGLY_TYPED appeared in 9.1
KEY_FORMAT = "fcn-edge/engine-key/1"
BUILD_PRECISIONS = ("fp32", "fp16")


def cache_root() -> Path:
    """``$FCN_EDGE_CACHE``, else ``$XDG_CACHE_HOME/fcn-edge``, else ``~/.cache/fcn-edge``."""
    if os.environ.get("FCN_EDGE_CACHE"):
        return Path(os.environ["FCN_EDGE_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fcn-edge"


def default_cache_dir() -> Path:
    return cache_root() / "engines"


@dataclass(frozen=True)
class BuildOptions:
    """How to build an engine.

    Attributes:
        precision: ``fp32`` or ``fp16``; None builds at the ONNX's own precision.
        shapes: the optimisation profile; None takes the shapes in the ONNX metadata.
        workspace_gb: TensorRT's workspace memory pool limit, in GiB.
        timing_cache: timing-cache file; None: one per TensorRT release and GPU in ``cache_dir``.
        cache_dir: where built engines are kept, named by their cache key.
        output: where the engine goes; None: beside the ONNX, e.g. ``model.fp16.engine``.
        force: rebuild even when a cached engine fits.
        check: run the TensorRT compatibility check (``trt_compat``) for this TensorRT before
            parsing; False builds anyway (the tables may lag a newer parser).
    """

    precision: str | None = None
    shapes: Shapes | None = None
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    output: Path | None = None
    force: bool = False
    check: bool = True

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in BUILD_PRECISIONS:
            raise InputError(f"precision {self.precision!r}: TensorRT builds take one of "
                             f"{BUILD_PRECISIONS}")
        if not self.workspace_gb > 0:
            raise InputError(f"workspace_gb must be positive, got {self.workspace_gb}")
        for name in ("timing_cache", "cache_dir", "output"):  # accept str paths from callers
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))


# --- plain decisions (no TensorRT needed) ---------------------------------------------------

def tensorrt_version_info(version: str) -> dict[str, Any]:
    """What a TensorRT release (``"10.3.0.26"``, ``"11.0.0"``) offers the builder."""
    numbers = [int(n) for n in re.findall(r"\d+", str(version))[:3]]
    if len(numbers) < 2:
        raise InputError(f"cannot read the TensorRT version {version!r}")
    major, minor, patch = (numbers + [0])[:3]
    return {
        "version": f"{major}.{minor}.{patch}", "major": major, "minor": minor, "patch": patch,
        "supported": (major, minor) >= MIN_TENSORRT,
        "fp16_flag": major < 11,                       # BuilderFlag.FP16 was removed in 11
        "strongly_typed": (major, minor) >= _STRONGLY_TYPED_SINCE,
        "always_strongly_typed": major >= 11,
        "explicit_batch_flag": major < 10,             # the default (flag deprecated) from 10
    }


def _supported_info(trt_version: str) -> dict[str, Any]:
    info = tensorrt_version_info(trt_version)
    if not info["supported"]:
        raise BackendUnavailable(f"TensorRT {info['version']} is too old: fcn-edge builds "
                                 f"engines with TensorRT 8.6 or newer ({TRT_EXTRA})")
    return info


def fp16_strategy(trt_version: str, onnx_is_fp16: bool) -> str:
    """``"strongly_typed"`` or ``"builder_flag"``: how to get an FP16 engine on this release."""
    info = _supported_info(trt_version)
    if info["always_strongly_typed"]:
        if not onnx_is_fp16:
            raise InputError(f"TensorRT {info['version']} has no FP16 builder flag (networks are "
                             f"strongly typed): write an FP16 ONNX with `fcn-edge export --fp16` "
                             f"and build that")
        return "strongly_typed"
    if onnx_is_fp16 and info["strongly_typed"]:
        return "strongly_typed"
    return "builder_flag"


def precision_strategy(trt_version: str, precision: str, onnx_precision: str) -> str:
    """The network typing for building ``precision`` from an ONNX of ``onnx_precision``."""
    if onnx_precision not in BUILD_PRECISIONS:
        raise InputError(f"this ONNX is {onnx_precision}; TensorRT builds take an fp32 or fp16 "
                         f"ONNX (export one with `fcn-edge export`)")
    if precision == "fp16":
        return fp16_strategy(trt_version, onnx_precision == "fp16")
    if precision != "fp32":
        raise InputError(f"precision {precision!r}: TensorRT builds take {BUILD_PRECISIONS}")
    if onnx_precision == "fp16":
        raise InputError("this ONNX is FP16: build it with --fp16, or export an FP32 ONNX")
    info = _supported_info(trt_version)
    return "strongly_typed" if info["always_strongly_typed"] else "builder_flag"


def network_flags(trt_version: str, strategy: str) -> tuple[str, ...]:
    """Names of the ``NetworkDefinitionCreationFlag`` members to set."""
    info = _supported_info(trt_version)
    if strategy not in ("strongly_typed", "builder_flag"):
        raise InputError(f"unknown typing strategy {strategy!r}")
    if strategy == "builder_flag" and info["always_strongly_typed"]:
        raise InputError(f"TensorRT {info['version']} has no weakly typed networks")
    flags = ["EXPLICIT_BATCH"] if info["explicit_batch_flag"] else []  # the ONNX parser needs it
    # From 11 every network is strongly typed and the flag is deprecated and ignored.
    if strategy == "strongly_typed" and not info["always_strongly_typed"]:
        if not info["strongly_typed"]:
            raise BackendUnavailable(f"TensorRT {info['version']} has no strongly typed "
                                     f"networks; upgrade with {TRT_EXTRA}")
        flags.append("STRONGLY_TYPED")
    return tuple(flags)


def builder_flags(precision: str, strategy: str) -> tuple[str, ...]:
    """Names of the ``BuilderFlag`` members to set: FP16 only on the weakly typed path."""
    return ("FP16",) if precision == "fp16" and strategy == "builder_flag" else ()


def profile_shapes(meta: ArtifactMeta, shapes: Shapes) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``{input name: (min, opt, max)}`` as full tensor shapes, for every input (one profile
    spans them all: an RGB-D model's depth has the image's batch and size): NHWC for raw-IO
    frames, else NCHW."""
    shapes.check_multiple(meta.size_multiple)
    profile = {}
    for name, layout, channels, _ in meta.input_tensors():
        def full(n: int, h: int, w: int) -> tuple[int, ...]:
            return (n, h, w, channels) if layout == "NHWC" else (n, channels, h, w)

        profile[name] = (full(*shapes.min), full(*shapes.opt), full(*shapes.max))
    return profile


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str,
                     compute_capability: str | tuple[int, int], precision: str,
                     shapes: Shapes) -> tuple[str, dict[str, Any]]:
    """``(sha256 hex, fields)`` over everything that makes two plans differ."""
    cc = compute_capability
    fields = {
        "format": KEY_FORMAT,
        "onnx_sha256": onnx_sha256,
        # Plans load only on the release that built them; the build number does not matter.
        "tensorrt_version": tensorrt_version_info(trt_version)["version"],
        "gpu_name": str(gpu_name).strip(),
        "compute_capability": f"{cc[0]}.{cc[1]}" if isinstance(cc, (tuple, list)) else str(cc),
        "precision": precision,
        "shapes": shapes.to_json(),
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest(), fields


def cached_engine_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.engine"


def find_cached_engine(cache_dir: str | Path, key: str) -> Path | None:
    path = cached_engine_path(cache_dir, key)
    return path if path.is_file() else None


def default_output_path(onnx_path: str | Path, precision: str) -> Path:
    """``model.onnx`` → ``model.fp16.engine``; ``model.fp16.onnx`` → ``model.fp16.engine``."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    for p in BUILD_PRECISIONS + ("int8",):
        stem = stem.removesuffix(f".{p}")
    return onnx_path.with_name(f"{stem}.{precision}.engine")


def default_timing_cache(cache_dir: str | Path, trt_version: str, compute_capability: str) -> Path:
    """One timing cache per TensorRT release and GPU architecture: tactics do not transfer."""
    version = tensorrt_version_info(trt_version)["version"]
    return Path(cache_dir) / f"timing-trt{version}-sm{compute_capability.replace('.', '')}.cache"


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_onnx_props(path: str | Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (via ``onnx`` without weights, else ONNX Runtime)."""
    try:
        import onnx
    except ImportError:
        onnx = None
    try:
        if onnx is not None:
            model = onnx.load(str(path), load_external_data=False)
            return {p.key: p.value for p in model.metadata_props}
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return dict(session.get_modelmeta().custom_metadata_map)
    except Exception as exc:  # protobuf DecodeError, ORT's Fail/InvalidGraph, ...
        raise ModelFormatError(f"{path} is not a readable ONNX model: {exc}") from None


def read_onnx_meta(path: str | Path) -> ArtifactMeta:
    """The fcn-edge metadata of an ONNX file."""
    return ArtifactMeta.from_props(read_onnx_props(path), str(path))


# --- the builder (needs TensorRT and a CUDA GPU) --------------------------------------------

def build_engine(onnx_path: str | Path, options: BuildOptions | None = None) -> Path:
    """Build (or fetch from the cache) the engine for ``onnx_path``; returns the output path."""
    options = options or BuildOptions()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path}: no such ONNX file")
    meta = read_onnx_meta(onnx_path)
    precision = options.precision or meta.precision
    shapes = options.shapes or meta.shapes
    profile = profile_shapes(meta, shapes)        # refuse bad shapes before loading TensorRT
    trt = _import_tensorrt()
    version = trt.__version__
    strategy = precision_strategy(version, precision, meta.precision)
    if options.check:
        check_before_build(onnx_path, version, precision)
    gpu_name, cc = query_gpu()
    onnx_sha = file_sha256(onnx_path)
    key, fields = engine_cache_key(onnx_sha, version, gpu_name, cc, precision, shapes)
    cached = None if options.force else _usable_cached_engine(options.cache_dir, key, version,
                                                              gpu_name, cc)
    if cached is None:
        print(f"building a {precision} TensorRT {version} engine for {gpu_name} from "
              f"{onnx_path.name} (shapes {shapes}); this takes a while", file=sys.stderr)
        timing = options.timing_cache or default_timing_cache(options.cache_dir, version, cc)
        plan, build = _build_plan(trt, onnx_path, meta, profile, precision, strategy,
                                  options.workspace_gb, timing)
        header = {"meta": meta.with_(precision=precision, shapes=shapes).to_dict(),
                  "cache_key": key, "key_fields": fields, "tensorrt_version": version,
                  "gpu": {"name": gpu_name, "compute_capability": cc}, "precision": precision,
                  "shapes": shapes.to_json(), "onnx_sha256": onnx_sha, "onnx_file": onnx_path.name,
                  "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                  "build": build, "fcn_edge_version": __version__}
        cached = write_engine(cached_engine_path(options.cache_dir, key), plan, header)
    output = options.output or default_output_path(onnx_path, precision)
    if output.resolve() != cached.resolve():
        with atomic_path(output) as tmp:
            shutil.copyfile(cached, tmp)
    return output


def check_before_build(onnx_path: Path, trt_version: str, precision: str) -> None:
    """The compatibility check for the TensorRT that will parse ``onnx_path``: a failure names
    node, rule and fix before TensorRT spends minutes failing (or builds no outputs)."""
    try:
        import onnx
    except ImportError:
        raise BackendUnavailable(f"checking {onnx_path.name} before the build needs onnx "
                                 f"(pip install onnx, which {TRT_EXTRA} brings), or pass "
                                 f"--no-check") from None
    from .trt_compat import require_tensorrt_compat

    model = onnx.load(str(onnx_path), load_external_data=False)
    require_tensorrt_compat(model, [trt_version], str(onnx_path), precision=precision,
                            hint="export it again with this fcn-edge, or pass --no-check to "
                                 "let TensorRT's own parser judge")


def _usable_cached_engine(cache_dir: Path, key: str, trt_version: str, gpu_name: str,
                          cc: str) -> Path | None:
    path = find_cached_engine(cache_dir, key)
    if path is None:
        return None
    try:
        header, _ = read_engine(path)  # reads the plan too: catches truncated cache files
        check_engine_compatible(header, trt_version, gpu_name, cc)
        if header.get("cache_key") != key:
            raise ModelFormatError("its header holds another cache key")
    except ModelFormatError as exc:
        print(f"rebuilding: the cached engine {path} is unusable: {exc}", file=sys.stderr)
        return None
    return path


def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except (ImportError, OSError) as exc:  # OSError: the package is there, libnvinfer is not
        raise BackendUnavailable(f"building TensorRT engines needs TensorRT ({exc}): "
                                 f"{TRT_EXTRA}") from None
    return tensorrt


def _build_plan(trt: Any, onnx_path: Path, meta: ArtifactMeta, profile: dict, precision: str,
                strategy: str, workspace_gb: float, timing_path: Path) -> tuple[bytes, dict]:
    """Parse, configure and build; returns the serialised plan and how it was built."""
    logger = tensorrt_logger(trt)  # the process's one logger, shared with the runtime
    builder = trt.Builder(logger)
    net_flags = network_flags(trt.__version__, strategy)
    network = builder.create_network(_flag_bits(trt.NetworkDefinitionCreationFlag, net_flags))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))  # from the file: external weights resolve
    if not ok or parser.num_errors:
        raise ModelFormatError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: "
                               + ("; ".join(_parser_errors(parser)) or "no details given"))
    _check_network_io(network, meta, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    flags = builder_flags(precision, strategy)
    for name in flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    trt_profile = builder.create_optimization_profile()
    for name, shapes in profile.items():
        _set_profile_shape(trt_profile, name, shapes, onnx_path)
    if config.add_optimization_profile(trt_profile) < 0:
        raise InputError(f"TensorRT refused the profile {profile} for {onnx_path} (see its "
                         f"messages above): does the ONNX have fixed height/width?")
    _attach_timing_cache(config, timing_path)  # set_timing_cache keeps it alive with config
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelFormatError(f"TensorRT {trt.__version__} could not build an engine from "
                               f"{onnx_path} (see its messages above); try a larger --workspace "
                               f"or a smaller --shapes maximum")
    _save_timing_cache(config, timing_path)
    build = {"strategy": strategy, "network_flags": list(net_flags),
             "builder_flags": list(flags), "workspace_gb": workspace_gb}
    return bytes(serialized), build


def _set_profile_shape(trt_profile: Any, name: str, shapes: tuple, onnx_path: Path) -> None:
    """``set_shape`` for one input; an InputError naming it when TensorRT refuses the shapes.

    The Python bindings raise a bare RuntimeError where ``setDimensions`` returns false ("Shape
    provided for min is inconsistent with other shapes.": NVIDIA/TensorRT
    python/src/infer/pyCore.cpp, ``opt_profile_set_shape``), e.g. for min > opt or a rank that
    is not the input's.
    """
    lo, opt, hi = shapes
    try:
        trt_profile.set_shape(name, lo, opt, hi)
    except RuntimeError as exc:
        raise InputError(f"TensorRT refused the optimisation profile of input '{name}' in "
                         f"{onnx_path.name} (min {tuple(lo)}, opt {tuple(opt)}, max "
                         f"{tuple(hi)}): {exc} Give --shapes MIN:OPT:MAX with min ≤ opt ≤ max "
                         f"on every axis, or export the ONNX again with `fcn-edge export` so "
                         f"its input has dynamic batch, height and width") from None


def _flag_bits(enum: Any, names: tuple[str, ...]) -> int:
    bits = 0
    for name in names:
        bits |= 1 << int(getattr(enum, name))
    return bits


def _parser_errors(parser: Any) -> list[str]:
    """Every parser error as ``node 3 'Conv_0' (Conv): UNSUPPORTED_NODE: <description>``."""
    messages = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = ""
        if error.node() >= 0:
            where = f"node {error.node()}"
            if hasattr(error, "node_name"):  # TensorRT ≥ 10 names the node and its operator
                where += f" {error.node_name()!r} ({error.node_operator()})"
            where += ": "
        code = str(error.code()).rsplit(".", 1)[-1]
        messages.append(f"{where}{code}: {error.desc()}")
    return messages


def _check_network_io(network: Any, meta: ArtifactMeta, onnx_path: Path) -> None:
    inputs = [network.get_input(i).name for i in range(network.num_inputs)]
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    if inputs != list(meta.input_names) or not set(meta.output_names) <= set(outputs):
        raise ModelFormatError(f"{onnx_path} has inputs {inputs} and outputs {outputs}, but its "
                               f"metadata says {list(meta.input_names)} → "
                               f"{list(meta.output_names)}: export it again with `fcn-edge "
                               f"export`")


def _attach_timing_cache(config: Any, path: Path) -> Any:
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data)
    if cache is None or not config.set_timing_cache(cache, False):
        if data:
            print(f"ignoring the timing cache {path}: it was made for another TensorRT or GPU",
                  file=sys.stderr)
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, False)
    return cache


def _save_timing_cache(config: Any, path: Path) -> None:
    cache = config.get_timing_cache()
    if cache is None:
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(bytes(cache.serialize()))
