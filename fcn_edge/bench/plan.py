"""What ``fcn-edge bench`` runs: backend × precision × IO rows, and which artifact each needs.

Plain decisions, no engine imported: a row either names the artifact that runs it (and the
backend options) or says why it cannot run — unsupported combinations and unavailable backends
stay in the table with their reason, never silently dropped.

Artifacts (``ArtifactKey``): ``checkpoint`` (PyTorch runs the checkpoint itself), or an exported
``onnx`` of one precision and IO, or a TensorRT ``engine`` built from the ONNX of its own
precision and IO. IO ``plain`` takes normalised float NCHW images and returns logits; ``raw`` is
``--raw-io --argmax``: uint8 BGR frames in, labels out, normalisation and argmax in the graph.

int8 comes in two flavours (``ArtifactKey.int8_target``, the export's ``--int8-target``): ONNX
Runtime's rows run ``cpu`` (uint8 activations, its fastest CPU kernels); the TensorRT engine is
built from ``tensorrt`` (symmetric int8 Q/DQ: TensorRT builds nothing else).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..config import IMAGE_SIZE
from ..errors import InputError
from ..runtime.bounds import Many
# An artifact's precisions are the rows' precisions.
from ..runtime.metadata import PRECISIONS, ArtifactMeta  # noqa: F401

IO_KINDS = ("plain", "raw")
#: Every name ``--backends`` takes, fastest first; ``torch:cuda+graphs`` is torch:cuda
#: replaying captured CUDA graphs.
BENCH_BACKENDS = ("tensorrt", "onnxruntime:tensorrt", "onnxruntime:cuda", "onnxruntime:cpu",
                  "torch:cuda+graphs", "torch:cuda", "torch:cpu")
DEFAULT_SIZES = ((256, 512), (512, 1024))
REFERENCE = ("torch:cpu", "fp32", "plain")


@dataclass(frozen=True)
class ArtifactKey:
    """Which file runs a row: ``kind`` checkpoint | onnx | engine, its precision and IO.
    ``int8_target`` is the int8 export's flavour (``cpu``: uint8 activations for ONNX Runtime;
    ``tensorrt``: the symmetric int8 TensorRT requires)."""

    kind: str
    precision: str = "fp32"
    io: str = "plain"
    int8_target: str = "cpu"


@dataclass(frozen=True)
class Combo:
    """One backend × precision × IO; ``artifact`` None when it cannot run (``why``)."""

    backend: str
    precision: str
    io: str
    artifact: ArtifactKey | None
    options: tuple[tuple[str, object], ...] = ()
    why: str = ""
    note: str = ""

    @property
    def backend_name(self) -> str:
        """The runtime backend's name (``torch:cuda+graphs`` runs on ``torch:cuda``)."""
        return self.backend.split("+")[0]


def parse_sizes(text: str, flag: str = "--sizes") -> tuple[tuple[int, int], ...]:
    """``"256x512,512x1024"`` → ((256, 512), (512, 1024)): HEIGHTxWIDTH, comma-separated,
    each size once, each side within the range every image size has (``config.IMAGE_SIZE``)."""
    return tuple(dict.fromkeys(Many(IMAGE_SIZE).parse(text, flag)))


def parse_choices(text: str, choices: Iterable[str], flag: str) -> tuple[str, ...]:
    """A comma-separated subset of ``choices`` (``all`` for every one), in the given order."""
    choices = tuple(choices)
    items = _items(text, flag)
    if items == ["all"]:
        return choices
    unknown = [i for i in items if i not in choices]
    if unknown:
        raise InputError(f"{flag}: unknown {', '.join(unknown)}; choose from "
                         f"{', '.join(choices)} or all")
    return tuple(dict.fromkeys(items))


def combo(backend: str, precision: str, io: str) -> Combo:
    """How ``backend`` runs ``precision`` with ``io``, or why it does not."""
    if backend.startswith("torch"):
        return _torch_combo(backend, precision, io)
    if backend == "tensorrt":
        # TensorRT 11 builds fp16 only from an fp16 ONNX (strongly typed); 10 takes either.
        # int8: the explicit Q/DQ of an `--int8-target tensorrt` export (the cpu flavour's
        # uint8 activations do not build).
        return Combo(backend, precision, io, ArtifactKey(
            "engine", precision, io, "tensorrt" if precision == "int8" else "cpu"))
    if backend == "onnxruntime:tensorrt":
        if precision == "int8":
            return Combo(backend, precision, io, None, why="the TensorRT provider's int8 mode "
                         "is not wired up; use the tensorrt backend's int8 engine or "
                         "onnxruntime:cpu/cuda")
        # The provider builds fp16 kernels from the fp32 ONNX when asked to (trt_fp16_enable).
        return Combo(backend, precision, io, ArtifactKey("onnx", "fp32", io),
                     (("fp16", precision == "fp16"),))
    note = ""
    if backend == "onnxruntime:cpu" and precision == "fp16":
        note = "ORT CPU inserts casts and computes fp16 convolutions in fp32"
    return Combo(backend, precision, io, ArtifactKey("onnx", precision, io), note=note)


def plan_combos(backends: Iterable[str], precisions: Iterable[str],
                io_kinds: Iterable[str]) -> list[Combo]:
    """Every requested combination, runnable or not, in table order."""
    return [combo(b, p, io) for b in backends for p in precisions for io in io_kinds]


def combos_for_artifact(kind: str, precision: str, io: str, backends: Iterable[str],
                        int8_target: str = "cpu") -> list[Combo]:
    """Rows for benchmarking one given artifact (an ONNX or an engine) as it is: every row
    that runs a file of its kind runs that file; the others say what they run instead."""
    given = ArtifactKey(kind, precision, io, int8_target)
    rows = []
    for backend in backends:
        planned = combo(backend, precision, io)
        if planned.artifact is not None and planned.artifact.kind == kind \
                and planned.artifact != given:
            # e.g. the TensorRT provider builds fp16 from an fp32 ONNX; given an fp16 ONNX,
            # it runs that file as it is. ONNX Runtime runs either int8 flavour.
            options = planned.options if planned.artifact.precision == precision else ()
            planned = Combo(backend, precision, io, given, options, note=planned.note)
        if planned.artifact is not None and planned.artifact.kind != kind:
            planned = Combo(backend, precision, io, None,
                            why=_runs_another_kind(planned.artifact, given))
        rows.append(planned)
    return rows


def given_key(kind: str, meta: ArtifactMeta) -> ArtifactKey:
    """The key of a given ONNX or engine, from its metadata. An int8 export records its
    flavour (its ``parity`` figures' ``target``); an int8 engine is built only from the
    ``tensorrt`` one."""
    io = "raw" if meta.raw_io else "plain"
    flavour = "cpu"
    if meta.precision == "int8":
        flavour = "tensorrt" if kind == "engine" else str(meta.int8_target or "cpu")
    return ArtifactKey(kind, meta.precision, io, flavour)


def _runs_another_kind(needed: ArtifactKey, given: ArtifactKey) -> str:
    names = {"onnx": "an ONNX", "engine": "a TensorRT engine"}
    if needed.kind == "engine" and given.precision == "int8" and given.int8_target != "tensorrt":
        return ("runs a TensorRT engine built from an `--int8-target tensorrt` export; the "
                f"model given is an ONNX of `--int8-target {given.int8_target}`, whose uint8 "
                "activations TensorRT cannot build")
    return f"runs {names.get(needed.kind, 'a checkpoint')}; the model given is {names[given.kind]}"


def _torch_combo(backend: str, precision: str, io: str) -> Combo:
    if io == "raw":
        return Combo(backend, precision, io, None, why="raw-IO + argmax is an exported graph; "
                     "PyTorch runs the checkpoint (plain IO)")
    if precision == "int8":
        return Combo(backend, precision, io, None, why="no PyTorch int8 path; int8 runs as a "
                     "QDQ ONNX")
    if precision == "fp16" and backend == "torch:cpu":
        return Combo(backend, precision, io, None, why="PyTorch has no fast fp16 CPU kernels")
    options: tuple[tuple[str, object], ...] = (("fp16", precision == "fp16"),)
    if backend == "torch:cuda+graphs":
        options += (("cuda_graphs", True),)
    return Combo(backend, precision, io, ArtifactKey("checkpoint"), options)


def _items(text: str, flag: str) -> list[str]:
    items = [i.strip() for i in str(text).split(",") if i.strip()]
    if not items:
        raise InputError(f"{flag} is empty")
    return items
