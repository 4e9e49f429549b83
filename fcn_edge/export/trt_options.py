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
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

from ..errors import BackendUnavailable, InputError
from ..runtime.backends.base import input_specs
from ..runtime.backends.optional import TRT_EXTRA
from ..runtime.backends.tensorrt import profile_shapes
from ..runtime.bounds import Bound, Rule, check_bounds
from ..runtime.engine_file import cache_root
from ..runtime.metadata import PRECISIONS, ArtifactMeta, Shapes

MIN_TENSORRT = (8, 6)
_STRONGLY_TYPED_SINCE = (9, 1)   # NetworkDefinitionCreationFlag.STRONGLY_TYPED appeared in 9.1
KEY_FORMAT = "fcn-edge/engine-key/1"
#: The precisions TensorRT builds an engine at (an int8 ONNX carries its own QDQ scales and is
#: not built here; PRECISIONS are every artifact's).
BUILD_PRECISIONS = ("fp32", "fp16")


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

    #: ``--workspace``'s range (GiB), for ``fcn-edge export`` and ``build`` alike.
    BOUNDS: ClassVar[Mapping[str, Rule]] = {
        "workspace_gb": Bound(0.0, 1024.0, integer=False, low_open=True)}

    def __post_init__(self) -> None:
        if self.precision is not None and self.precision not in BUILD_PRECISIONS:
            raise InputError(f"precision {self.precision!r}: TensorRT builds take one of "
                             f"{BUILD_PRECISIONS}")
        check_bounds(self, self.BOUNDS)
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
    for p in PRECISIONS:
        stem = stem.removesuffix(f".{p}")
    return onnx_path.with_name(f"{stem}.{precision}.engine")


def default_timing_cache(cache_dir: str | Path, trt_version: str, compute_capability: str) -> Path:
    """One timing cache per TensorRT release and GPU architecture: tactics do not transfer."""
    version = tensorrt_version_info(trt_version)["version"]
    return Path(cache_dir) / f"timing-trt{version}-sm{compute_capability.replace('.', '')}.cache"
