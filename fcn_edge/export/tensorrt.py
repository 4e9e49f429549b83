"""``fcn-edge build``: a TensorRT engine from an fcn-edge ONNX artifact, cached by all that
makes plans differ, written in the self-describing engine format (``runtime/engine_file.py``).

What to build — network typing per release, flags, profile, cache key and paths — is decided
without TensorRT in ``trt_options.py``; this module does the TensorRT calls: parse, configure,
build, keep the timing cache, and write the engine. TensorRT logs through the runtime's one
process-wide logger (:func:`~fcn_edge.runtime.backends.tensorrt.tensorrt_logger`).
"""
from __future__ import annotations

import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError, ModelFormatError
from ..io import atomic_path, file_sha256
from ..runtime.backends.base import check_tensor_names
from ..runtime.backends.cuda import query_gpu
from ..runtime.backends.optional import TRT_EXTRA, lazy_import
from ..runtime.backends.tensorrt import tensorrt_logger
from ..runtime.engine_file import check_engine_compatible, read_engine, write_engine
from ..runtime.metadata import ArtifactMeta
from ..runtime.onnx_file import read_onnx_metadata
from .trt_options import (BuildOptions, builder_flags, cached_engine_path, default_output_path,
                          default_timing_cache, engine_cache_key, find_cached_engine,
                          network_flags, optimisation_profile, precision_strategy)


def build_engine(onnx_path: str | Path, options: BuildOptions | None = None) -> Path:
    """Build (or fetch from the cache) the engine for ``onnx_path``; returns the output path."""
    options = options or BuildOptions()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path}: no such ONNX file")
    meta = read_onnx_metadata(onnx_path)
    precision = options.precision or meta.precision
    shapes = options.shapes or meta.shapes
    profile = optimisation_profile(meta, shapes)  # refuse bad shapes before loading TensorRT
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
    onnx = lazy_import("onnx", f"checking {onnx_path.name} before the build needs onnx "
                               f"(pip install onnx, which {TRT_EXTRA} brings), or pass "
                               f"--no-check")
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
    return lazy_import("tensorrt", "building TensorRT engines needs TensorRT ({exc}): "
                                   + TRT_EXTRA)


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
    check_tensor_names(onnx_path, [network.get_input(i).name for i in range(network.num_inputs)],
                       [network.get_output(i).name for i in range(network.num_outputs)], meta,
                       "export it again with `fcn-edge export`")
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
