"""How to build a TensorRT engine, decided without TensorRT: :class:`BuildOptions`, what each
TensorRT release offers (network typing, flags), the optimisation profile, and the cache key
and paths of built engines. ``export/tensorrt.py`` builds with these; everything here is plain
Python and tested without TensorRT or a GPU.

A plan depends on the ONNX bytes, the TensorRT release, the GPU, the precision and the
optimisation profile; :func:`engine_cache_key` hashes exactly those, so a second
``fcn-edge build`` of the same model on the same box is a file copy, and any change rebuilds.

Precision follows what each TensorRT release offers:

* 8.6–10.x, FP32 ONNX: a weakly typed network, with ``BuilderFlag.FP16`` for ``fp16`` (the
  flag is deprecated since 10.12 but works through 10.x);
* 10.x (9.1+), FP16 ONNX: a strongly typed network: the graph's own types decide;
* 11.x: always strongly typed — ``BuilderFlag.FP16`` was removed, so ``fp16`` needs the
  FP16 ONNX that ``fcn-edge export --fp16`` writes.

INT8 comes only from an explicitly quantised (Q/DQ) ONNX, ``fcn-edge export --int8
--int8-target tensorrt`` (symmetric int8, zero point 0, float biases): fcn-edge never runs
TensorRT's calibrator.

* 8.6–10.x: a weakly typed network with ``BuilderFlag.INT8``: explicit quantization needs the
  INT8 flag on a weakly typed network, and the Q/DQ nodes then decide which layers run int8
  (the 8.6 developer guide: "to enable any quantization operations, the INT8 flag must be set";
  trtexec's ``--int8`` does the same). ``FP16`` is *not* added: the layers the export left
  unquantised on purpose (input normalisation and the classifier head, ``export/int8.py``)
  stay fp32, as in the ONNX Runtime run of the same Q/DQ graph that the build's accuracy gate
  compares with, so the gate measures quantisation alone. (10.x could also build Q/DQ strongly
  typed — ``IDequantizeLayer`` documents strongly typed inputs, include/NvInfer.h at
  NVIDIA/TensorRT release/10.3 5b990f0a — but 8.6 cannot, and DLA on 10.x takes flags.)
* 11.x: strongly typed; ``BuilderFlag.INT8`` was removed with ``FP16`` (BuilderFlag in
  python/src/infer/pyCore.cpp, NVIDIA/TensorRT release/11.0 93842ac9: no FP16, BF16, INT8; the
  "Removed Python APIs" page of the 10.x→11.x migration guide: ``BuilderFlag.INT8`` → explicit
  quantization with Q/DQ nodes).

Jetson DLA (:func:`dla_plan`): ``config.default_device_type = trt.DeviceType.DLA``,
``config.DLA_core = N`` and ``BuilderFlag.GPU_FALLBACK`` for the layers DLA cannot run, as
trtexec's ``--useDLACore N --allowGPUFallback`` does (samples/common/sampleEngines.cpp,
``setupNetworkAndConfig``, release/10.3 5b990f0a); ``builder.num_DLA_cores`` says how many cores
there are and ``config.can_run_on_DLA(layer)`` which layers fit (pyCore.cpp on release/8.6
a0215c1a, release/10.3 and main a892d222 all bind them). "Working with DLA"
(docs.nvidia.com/deeplearning/tensorrt/latest/inference-library/dla-build-and-run.html): DLA
runs FP16 and INT8 networks only. Which releases have DLA (docs.nvidia.com/deeplearning/
tensorrt/11.4.1/inference-library/work-with-dla.html and its 11.3.0/11.5.0 versions): 10.7 was
the last 10.x release with DLA (JetPack 6 ships 10.3); 11.0–11.3 have none; 11.4.1 has it for
Jetson AGX Orin on JetPack 7.2.2+ (GPU fallback as in 10.x), and 11.4.0/11.5 only on Windows on
ARM (beta, no GPU fallback), where ``num_DLA_cores`` decides. Before 11 DLA engines take the
precision flags (trtexec sets ``FP16``/``INT8`` for DLA), so a DLA build on 10.x is weakly
typed even from an FP16 ONNX; 11.x DLA builds are strongly typed ("Strongly Typed Networks for
DLA", 11.4.1 docs).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

from ..errors import BackendUnavailable, InputError
from ..runtime.backends.base import input_specs
from ..runtime.backends.optional import TRT_EXTRA
from ..runtime.backends.tensorrt import profile_shapes
from ..runtime.bounds import Bound, Rule, check_bounds
from ..runtime.engine_file import cache_root
from ..runtime.metadata import PRECISIONS, ArtifactMeta, Shapes

MIN_TENSORRT = (8, 6)
_STRONGLY_TYPED_SINCE = (9, 1)   # NetworkDefinitionCreationFlag.STRONGLY_TYPED appeared in 9.1
KEY_FORMAT = "fcn-edge/engine-key/2"   # 2: dla_core joined the key
#: The precisions TensorRT builds an engine at: int8 only from an int8 (Q/DQ) ONNX.
BUILD_PRECISIONS = ("fp32", "fp16", "int8")
#: The TensorRT releases with DLA (see the module docstring): up to 10.7, and from 11.4.
_DLA_UNTIL, _DLA_AGAIN_SINCE = (10, 7), (11, 4)
#: BuilderFlag names every DLA build sets: layers DLA cannot run go to the GPU.
_DLA_FLAGS = ("GPU_FALLBACK",)
_INT8_EXPORT = "`fcn-edge export --int8 --int8-target tensorrt`"


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
        verify: the accuracy gate: run the engine against ONNX Runtime on the same ONNX before
            anything is cached or written; False (``--no-verify``) skips it.
        verify_data: ``--verify-data DIR``: the user's images for the gate; None: the
            procedural scenes the artifact's metadata regenerates.
        dla_core: the Jetson DLA core to build for (``--dla-core N``, GPU fallback for the
            layers DLA cannot run); None builds for the GPU.
    """

    precision: str | None = None
    shapes: Shapes | None = None
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    output: Path | None = None
    force: bool = False
    check: bool = True
    verify: bool = True
    verify_data: Path | None = None
    dla_core: int | None = None

    #: ``--workspace``'s range (GiB), for ``fcn-edge export`` and ``build`` alike; DLA cores
    #: are numbered from 0 (Orin and Xavier have two; 16 leaves room, the builder says more).
    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "workspace_gb": Bound(0.0, 1024.0, integer=False, low_open=True),
        "dla_core": Bound(0, 15)}

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in BUILD_PRECISIONS:
            raise InputError(f"precision {self.precision!r}: TensorRT builds take one of "
                             f"{BUILD_PRECISIONS}")
        check_bounds(self, self.BOUNDS)
        for name in ("timing_cache", "cache_dir", "output", "verify_data"):  # str paths too
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
        "int8_flag": major < 11,                       # ... and BuilderFlag.INT8 with it
        "dla": not _DLA_UNTIL < (major, minor) < _DLA_AGAIN_SINCE,  # none in 10.8–11.3
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


def precision_strategy(trt_version: str, precision: str, onnx_precision: str, *,
                       dla: bool = False) -> str:
    """The network typing for building ``precision`` from an ONNX of ``onnx_precision``;
    ``dla``: for a DLA core, which before 11 takes precision flags (a weakly typed network)."""
    if onnx_precision not in BUILD_PRECISIONS:
        raise InputError(f"this ONNX is {onnx_precision}; TensorRT builds take an fp32, fp16 or "
                         f"int8 ONNX (export one with `fcn-edge export`)")
    if precision not in BUILD_PRECISIONS:
        raise InputError(f"precision {precision!r}: TensorRT builds take {BUILD_PRECISIONS}")
    if "int8" in (precision, onnx_precision):
        return _int8_strategy(trt_version, precision, onnx_precision)
    if precision == "fp16":
        strategy = fp16_strategy(trt_version, onnx_precision == "fp16")
        return "builder_flag" if dla and not _supported_info(trt_version)[
            "always_strongly_typed"] else strategy
    if onnx_precision == "fp16":
        raise InputError("this ONNX is FP16: build it with --fp16, or export an FP32 ONNX")
    info = _supported_info(trt_version)
    return "strongly_typed" if info["always_strongly_typed"] else "builder_flag"


def _int8_strategy(trt_version: str, precision: str, onnx_precision: str) -> str:
    """INT8 only from an int8 (Q/DQ) ONNX, and an int8 ONNX only as int8: its Q/DQ scales are
    the quantisation; TensorRT 8.6–10 reads them with the INT8 flag, 11 strongly typed."""
    if onnx_precision != "int8":
        raise InputError(f"TensorRT int8 engines are built from an int8 Q/DQ ONNX: export one "
                         f"with {_INT8_EXPORT}")
    if precision != "int8":
        raise InputError(f"this ONNX is int8 (Q/DQ), not {precision}: build it as it is, "
                         f"without --fp16")
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


def builder_flags(precision: str, strategy: str, dla: bool = False) -> tuple[str, ...]:
    """Names of the ``BuilderFlag`` members to set: ``FP16`` or ``INT8`` on the weakly typed
    path only (never both: see the module docstring), and ``GPU_FALLBACK`` for a DLA build."""
    weak = {"fp16": ("FP16",), "int8": ("INT8",)}.get(precision, ()) \
        if strategy == "builder_flag" else ()
    return weak + (_DLA_FLAGS if dla else ())


def optimisation_profile(meta: ArtifactMeta, shapes: Shapes
                         ) -> dict[str, tuple[tuple[int, ...], ...]]:
    """``{input name: (min, opt, max)}`` as full tensor shapes, for every input (one profile
    spans them all: an RGB-D model's depth has the image's batch and size), in each input's
    own layout (NHWC raw-IO frames, else NCHW) as the runtime reads them."""
    shapes.check_multiple(meta.size_multiple)
    specs = input_specs(meta)
    per_bound = [profile_shapes(specs, dims) for dims in (shapes.min, shapes.opt, shapes.max)]
    return {name: tuple(bound[name] for bound in per_bound) for name in specs}


def engine_cache_key(onnx_sha256: str, trt_version: str, gpu_name: str,
                     compute_capability: str | tuple[int, int], precision: str,
                     shapes: Shapes, dla_core: int | None = None) -> tuple[str, dict[str, Any]]:
    """``(sha256 hex, fields)`` over everything that makes two plans differ: a DLA engine
    (``dla_core``) and a GPU engine (None) of one ONNX never share a cache entry."""
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
        "dla_core": dla_core,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest(), fields


def cached_engine_path(cache_dir: str | Path, key: str) -> Path:
    return Path(cache_dir) / f"{key}.engine"


def find_cached_engine(cache_dir: str | Path, key: str) -> Path | None:
    path = cached_engine_path(cache_dir, key)
    return path if path.is_file() else None


def default_output_path(onnx_path: str | Path, precision: str,
                        dla_core: int | None = None) -> Path:
    """``model.onnx`` → ``model.fp16.engine``; ``model.fp16.onnx`` → ``model.fp16.engine``;
    ``model.int8.onnx`` → ``model.int8.engine``; for DLA core 0 ``model.fp16.dla0.engine``."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    for p in PRECISIONS:
        stem = stem.removesuffix(f".{p}")
    device = "" if dla_core is None else f".dla{dla_core}"
    return onnx_path.with_name(f"{stem}.{precision}{device}.engine")


def default_timing_cache(cache_dir: str | Path, trt_version: str, compute_capability: str) -> Path:
    """One timing cache per TensorRT release and GPU architecture: tactics do not transfer."""
    version = tensorrt_version_info(trt_version)["version"]
    return Path(cache_dir) / f"timing-trt{version}-sm{compute_capability.replace('.', '')}.cache"


# --- INT8 sources and Jetson DLA -----------------------------------------------------------

def int8_source_problem(meta: ArtifactMeta, model: Any = None,
                        trt_version: str = "10") -> str | None:
    """Why this int8 ONNX cannot become a TensorRT int8 engine, else None (also for other
    precisions). Its metadata says which scheme the export chose (``export_int8`` records
    ``parity["target"]``; ``export_options["int8_target"]`` too); given the ``model``
    (``onnx.ModelProto``), TensorRT's own int8 rule (``trt_rules``: uint8 or non-zero zero
    points, int32 biases) judges its Q/DQ nodes, for files whose metadata says nothing."""
    if meta.precision != "int8":
        return None
    redo = f"export it again with {_INT8_EXPORT}"
    if meta.int8_target == "cpu":
        return (f"this int8 ONNX was quantised for ONNX Runtime's CPU (`--int8-target cpu`: "
                f"asymmetric uint8 activations), which TensorRT cannot build: {redo}")
    if model is None:
        return None
    from .trt_graph import OnnxGraph  # lazily: onnx, and only when a model is judged
    from .trt_rules import CHECKS
    from .trt_support import load_table

    found, _ = CHECKS["int8"](OnnxGraph(model), load_table(trt_version), "int8")
    errors = [f for f in found if f.severity == "error"]
    if not errors:
        return None
    where = f" (node {errors[0].node}{f' and {len(errors) - 1} more' if len(errors) > 1 else ''})"
    return f"this int8 ONNX is not TensorRT's int8: {errors[0].message}{where}: {redo}"


@dataclass(frozen=True)
class DlaPlan:
    """How to configure the builder for a DLA core (see the module docstring)."""

    core: int
    flags: tuple[str, ...]              # BuilderFlag names to set
    device_type: str = "DLA"            # trt.DeviceType member for config.default_device_type


def dla_plan(trt_version: str, dla_core: int | None, precision: str, strategy: str,
             num_dla_cores: int, gpu_name: str = "this GPU") -> DlaPlan | None:
    """The DLA settings for ``--dla-core``; None for a GPU engine. Each refusal is one line
    that says what to do."""
    if dla_core is None:
        return None
    info = _supported_info(trt_version)
    if not info["dla"]:
        raise InputError(f"TensorRT {info['version']} has no DLA support (10.7 was the last 10.x "
                         f"release with it, and 11.0–11.3 have none): build DLA engines with "
                         f"your JetPack's TensorRT (JetPack 6: 10.3; JetPack 7.2.2+: 11.4.1), "
                         f"or leave out --dla-core")
    if num_dla_cores <= 0:
        raise InputError(f"{gpu_name} has no DLA (DLA cores are on Jetson AGX Orin, Orin NX, "
                         f"Xavier and DRIVE): leave out --dla-core")
    if not 0 <= dla_core < num_dla_cores:
        cores = "1 DLA core (0)" if num_dla_cores == 1 else \
            f"{num_dla_cores} DLA cores (0..{num_dla_cores - 1})"
        raise InputError(f"--dla-core {dla_core}: this device has {cores}")
    if precision not in ("fp16", "int8"):
        raise InputError("DLA runs fp16 and int8 layers only: build with --fp16 or from an "
                         "int8 ONNX")
    if strategy == "strongly_typed" and not info["always_strongly_typed"]:
        raise InputError(f"TensorRT {info['version']} builds DLA engines from precision flags, "
                         f"not strongly typed networks: choose the typing with "
                         f"precision_strategy(..., dla=True)")
    return DlaPlan(core=dla_core, flags=_DLA_FLAGS)


def dla_layer_report(layers: Iterable[tuple[str, str, bool]],
                     core: int | None = None) -> dict[str, Any]:
    """``(name, type, can run on DLA)`` for every network layer (``config.can_run_on_DLA``)
    → the engine header's ``dla`` entry: counts and the layers that fall back to the GPU.
    Types are shown as TensorRT names them, ``LayerType.RESIZE`` → ``RESIZE``."""
    rows = [(str(name), str(kind).rsplit(".", 1)[-1], bool(ok)) for name, kind, ok in layers]
    report: dict[str, Any] = {} if core is None else {"core": core}
    report.update(layers=len(rows), on_dla=sum(ok for _, _, ok in rows),
                  gpu_fallback=[{"name": n, "type": t} for n, t, ok in rows if not ok])
    return report


def dla_report_lines(report: Mapping[str, Any], limit: int = 10) -> list[str]:
    """Console lines for a :func:`dla_layer_report`: ``DLA core 0: 41 of 45 layers on DLA;
    GPU fallback: 'up8' (RESIZE), …`` (the first ``limit`` named, then ``+K more``)."""
    where = f"DLA core {report['core']}" if report.get("core") is not None else "DLA"
    line = f"{where}: {report['on_dla']} of {report['layers']} layers on DLA"
    fallback = list(report.get("gpu_fallback", ()))
    if fallback:
        named = ", ".join(f"'{layer['name']}' ({layer['type']})" for layer in fallback[:limit])
        more = f", +{len(fallback) - limit} more" if len(fallback) > limit else ""
        line += f"; GPU fallback: {named}{more}"
    return [line]
