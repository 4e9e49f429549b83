"""``fcn-edge build``: a TensorRT engine from an fcn-edge ONNX artifact, cached by all that
makes plans differ, written in the self-describing engine format (``runtime/engine_file.py``).

What to build — network typing per release, flags, profile, cache key and paths — is decided
without TensorRT in ``trt_options.py``; this module does the TensorRT calls: parse, configure,
build (on a Jetson's DLA core when asked, GPU fallback reported per layer), keep the timing cache,
and write the engine. TensorRT logs through the runtime's one process-wide logger
(:func:`~fcn_edge.runtime.backends.tensorrt.tensorrt_logger`).

Nothing is cached or written before the accuracy gate (``trt_gate.py``) has passed: the fresh
plan goes to a temporary file beside its cache entry, the runtime's own TensorRT backend runs it
against ONNX Runtime on the same ONNX at the profile's min/opt/max shapes, and only an engine
within its precision's bounds is renamed into the cache, its figures in the header (next to the
ONNX's own parity figures in ``meta``). A cached engine that was built with ``--no-verify``, or
gated on other frames, is verified before it is used.
"""
from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import AccuracyGateFailed, InputError, ModelFormatError
from ..io import atomic_path, file_sha256
from ..runtime.backends.base import check_tensor_names
from ..runtime.backends.cuda import query_gpu
from ..runtime.backends.optional import TRT_EXTRA, lazy_import
from ..runtime.backends.tensorrt import tensorrt_logger
from ..runtime.engine_file import check_engine_compatible, read_engine, write_engine
from ..runtime.metadata import ArtifactMeta
from ..runtime.onnx_file import read_onnx_metadata
from .trt_gate import (frames_label, gate_bounds, reference_backend, refuse, run_gate,
                       verify_images)
from .trt_options import (BuildOptions, DlaPlan, builder_flags, cached_engine_path,
                          default_output_path, default_timing_cache, dla_layer_report, dla_plan,
                          dla_report_lines, engine_cache_key, find_cached_engine,
                          int8_source_problem,
                          network_flags, optimisation_profile, precision_strategy)


def build_engine(onnx_path: str | Path, options: BuildOptions | None = None) -> Path:
    """Build (or fetch from the cache) the engine for ``onnx_path``, verified by the accuracy
    gate unless ``options.verify`` is False; returns the output path."""
    options = options or BuildOptions()
    job = _plan(Path(onnx_path), options)
    cached = None if options.force else _cached(job)
    if cached is None:
        cached = _build_and_verify(job)
    output = options.output or default_output_path(job.onnx_path, job.meta.precision,
                                                   options.dla_core)
    if output.resolve() != cached.resolve():
        with atomic_path(output) as tmp:
            shutil.copyfile(cached, tmp)
    return output


@dataclass(frozen=True)
class _Job:
    """One build, decided: the engine's metadata (precision and shapes as built), its profile,
    the network typing, the TensorRT release and GPU it is for, and its cache key."""

    onnx_path: Path
    options: BuildOptions
    meta: ArtifactMeta
    profile: dict
    strategy: str
    trt: Any
    gpu: tuple[str, str]
    onnx_sha: str
    key: str
    key_fields: dict

    @property
    def what(self) -> str:
        where = f" on DLA core {self.options.dla_core}" if self.options.dla_core is not None \
            else ""
        return f"the {self.meta.precision} engine{where} for {self.onnx_path.name}"


def _plan(onnx_path: Path, options: BuildOptions) -> _Job:
    """Everything decided before TensorRT builds, each refusal as early as it can be made."""
    if not onnx_path.is_file():
        raise InputError(f"{onnx_path}: no such ONNX file")
    source = read_onnx_metadata(onnx_path)
    meta = source.with_(precision=options.precision or source.precision,
                        shapes=options.shapes or source.shapes)
    profile = optimisation_profile(meta, meta.shapes)  # bad shapes: refused before TensorRT
    if options.verify and options.verify_data is not None:
        verify_images(meta, options.verify_data, 1)  # a bad --verify-data, likewise
    trt = _import_tensorrt()
    strategy = precision_strategy(trt.__version__, meta.precision, source.precision,
                                  dla=options.dla_core is not None)
    problem = int8_source_problem(source) if meta.precision == "int8" else None
    if problem:
        raise InputError(f"{onnx_path.name}: {problem}")
    if options.check:
        check_before_build(onnx_path, trt.__version__, meta.precision)
    gpu_name, cc = query_gpu()
    onnx_sha = file_sha256(onnx_path)
    key, fields = engine_cache_key(onnx_sha, trt.__version__, gpu_name, cc, meta.precision,
                                   meta.shapes, options.dla_core)
    return _Job(onnx_path, options, meta, profile, strategy, trt, (gpu_name, cc), onnx_sha,
                key, fields)


def _cached(job: _Job) -> Path | None:
    """The cached engine for ``job``'s key, verified: one built with ``--no-verify`` or gated
    on other frames is verified now (and removed from the cache when it fails)."""
    cached = _usable_cached_engine(job.options.cache_dir, job.key, job.trt.__version__, *job.gpu)
    if cached is None:
        return None
    path, header, plan = cached
    if not job.options.verify or _verified(header.get("verification"), job):
        return path
    print(f"verifying the cached engine {path.name}: it was not verified on these frames",
          file=sys.stderr)
    try:
        verification = _verify(job, path)
    except AccuracyGateFailed:
        path.unlink(missing_ok=True)  # a refused engine does not stay in the cache
        raise
    return write_engine(path, plan, {**header, "verification": verification})


def _build_and_verify(job: _Job) -> Path:
    """Build the plan; with the gate on, the engine is written under a temporary name, run
    against ONNX Runtime, and renamed into the cache only when it passes."""
    print(f"building {job.what} with TensorRT {job.trt.__version__} on {job.gpu[0]} (shapes "
          f"{job.meta.shapes}); this takes a while", file=sys.stderr)
    options = job.options
    timing = options.timing_cache or default_timing_cache(options.cache_dir,
                                                          job.trt.__version__, job.gpu[1])
    plan, build = _build_plan(job, timing)
    header = _header(job, build)
    final = cached_engine_path(options.cache_dir, job.key)
    if not options.verify:
        print(f"{job.what} was not verified (--no-verify)", file=sys.stderr)
        return write_engine(final, plan, {**header, "verification": {"skipped": True}})
    with atomic_path(final) as staged:  # removed unless the gate passes
        write_engine(staged, plan, header)
        verification = _verify(job, staged)
        write_engine(staged, plan, {**header, "verification": verification})
    return final


def _verify(job: _Job, engine_path: Path) -> dict:
    """Run the accuracy gate on ``engine_path``: its figures for the header, or a
    ModelFormatError naming the output that failed and what to try."""
    from ..runtime.backends.tensorrt import TensorRTBackend

    reference = reference_backend(job.onnx_path)
    try:
        engine = TensorRTBackend(engine_path)
        try:
            report = run_gate(job.meta, engine.run, reference.run, job.meta.shapes,
                              job.options.verify_data)
        finally:
            engine.close()
    finally:
        reference.close()
    for line in report.lines():
        print(line, file=sys.stderr)
    refuse(report, job.what)
    print(f"{job.what} passed the accuracy gate", file=sys.stderr)
    return report.to_header()


def _verified(verification: Any, job: _Job) -> bool:
    """Whether a cached engine's gate figures stand for this build: passed, on the same frames,
    against the same bound."""
    if not isinstance(verification, dict) or verification.get("passed") is not True:
        return False
    return verification.get("frames") == frames_label(job.options.verify_data) and \
        verification.get("min_agreement") == gate_bounds(job.meta.precision).min_agreement


def _header(job: _Job, build: dict) -> dict:
    gpu_name, cc = job.gpu
    build = dict(build)
    dla = build.pop("dla", None)  # the runtime reads it at the top (engine_dla_core)
    header = {"meta": job.meta.to_dict(), "cache_key": job.key, "key_fields": job.key_fields,
              "tensorrt_version": job.trt.__version__,
              "gpu": {"name": gpu_name, "compute_capability": cc},
              "precision": job.meta.precision, "shapes": job.meta.shapes.to_json(),
              "onnx_sha256": job.onnx_sha, "onnx_file": job.onnx_path.name,
              "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "build": build, "fcn_edge_version": __version__}
    return header if dla is None else {**header, "dla": dla}


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
                          cc: str) -> tuple[Path, dict, bytes] | None:
    """The cached engine for ``key`` with its header and plan, read once; None when there is
    none or it is unusable (truncated, stale, another key)."""
    path = find_cached_engine(cache_dir, key)
    if path is None:
        return None
    try:
        header, plan = read_engine(path)  # reads the plan too: catches truncated cache files
        check_engine_compatible(header, trt_version, gpu_name, cc)
        if header.get("cache_key") != key:
            raise ModelFormatError("its header holds another cache key")
    except ModelFormatError as exc:
        print(f"rebuilding: the cached engine {path} is unusable: {exc}", file=sys.stderr)
        return None
    return path, header, plan


def _import_tensorrt() -> Any:
    return lazy_import("tensorrt", "building TensorRT engines needs TensorRT ({exc}): "
                                   + TRT_EXTRA)


def _build_plan(job: _Job, timing_path: Path) -> tuple[bytes, dict]:
    """Parse, configure and build; returns the serialised plan and how it was built."""
    trt, onnx_path, precision = job.trt, job.onnx_path, job.meta.precision
    logger = tensorrt_logger(trt)  # the process's one logger, shared with the runtime
    builder = trt.Builder(logger)
    dla = dla_plan(trt.__version__, job.options.dla_core, precision, job.strategy,
                   int(getattr(builder, "num_DLA_cores", 0)), job.gpu[0])
    net_flags = network_flags(trt.__version__, job.strategy)
    network = builder.create_network(_flag_bits(trt.NetworkDefinitionCreationFlag, net_flags))
    parser = trt.OnnxParser(network, logger)
    ok = parser.parse_from_file(str(onnx_path))  # from the file: external weights resolve
    if not ok or parser.num_errors:
        raise ModelFormatError(f"TensorRT {trt.__version__} cannot parse {onnx_path}: "
                               + ("; ".join(_parser_errors(parser)) or "no details given"))
    check_tensor_names(onnx_path, [network.get_input(i).name for i in range(network.num_inputs)],
                       [network.get_output(i).name for i in range(network.num_outputs)],
                       job.meta, "export it again with `fcn-edge export`")
    config = builder.create_builder_config()
    workspace_gb = job.options.workspace_gb
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    flags = builder_flags(precision, job.strategy, dla=dla is not None)
    for name in flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    build = {"strategy": job.strategy, "network_flags": list(net_flags),
             "builder_flags": list(flags), "workspace_gb": workspace_gb}
    if dla is not None:
        build["dla"] = _place_on_dla(trt, network, config, dla)
    trt_profile = builder.create_optimization_profile()
    for name, shapes in job.profile.items():
        _set_profile_shape(trt_profile, name, shapes, onnx_path)
    if config.add_optimization_profile(trt_profile) < 0:
        raise InputError(f"TensorRT refused the profile {job.profile} for {onnx_path} (see its "
                         f"messages above): does the ONNX have fixed height/width?")
    _attach_timing_cache(config, timing_path)  # set_timing_cache keeps it alive with config
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelFormatError(f"TensorRT {trt.__version__} could not build an engine from "
                               f"{onnx_path} (see its messages above); try a larger --workspace "
                               f"or a smaller --shapes maximum")
    _save_timing_cache(config, timing_path)
    return bytes(serialized), build


def _place_on_dla(trt: Any, network: Any, config: Any, dla: DlaPlan) -> dict:
    """Send the network to DLA core ``dla.core``, GPU fallback for the layers DLA cannot run;
    which those are comes from the builder (``IBuilderConfig.can_run_on_DLA``), per layer."""
    config.default_device_type = getattr(trt.DeviceType, dla.device_type)
    config.DLA_core = dla.core
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    report = dla_layer_report(((layer.name, str(layer.type), config.can_run_on_DLA(layer))
                               for layer in layers), core=dla.core)
    for line in dla_report_lines(report):
        print(line, file=sys.stderr)
    return report


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
