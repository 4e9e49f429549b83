"""Backends, and how one is chosen for an artifact.

``BACKENDS`` maps each artifact kind to its backends, fastest first, each with an availability
probe. ``backend="auto"`` opens the first whose probe passes and that opens, in this order:

1. ``tensorrt`` — a native engine: TensorRT's fused kernels tuned for this very GPU with no
   framework between frames and kernels; it needs an engine built for this GPU and release.
2. ``onnxruntime:tensorrt`` — the same TensorRT kernels, built by ONNX Runtime from the ONNX
   (cached after the first run), with ONNX Runtime's per-call overhead on top.
3. ``onnxruntime:cuda`` — cuDNN kernels, no whole-graph fusion or fp16 tuning.
4. ``onnxruntime:cpu`` — the CPU: what every box has.
5. ``torch:cuda`` — eager PyTorch on the GPU: a kernel launch per layer from Python.
6. ``torch:cpu`` — eager PyTorch on the CPU: the reference, slowest.

An artifact has one kind, so ``auto`` chooses only among its kind's backends: it never swaps an
``.onnx`` for an engine file that may hold another model. The chosen backend's ``reason``
says what was chosen and why, and what was passed over.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from ...errors import BackendUnavailable, InputError, ModelFormatError
from ..engine_file import is_engine_file, read_engine_header
from . import onnxruntime as _ort
from . import tensorrt as _trt
from . import torch as _torch
from .base import Backend, BackendBase, CallTimes, InputSpec, check_feed, input_specs

__all__ = ["ARTIFACT_KINDS", "AUTO_ORDER", "BACKENDS", "Backend", "BackendBase", "BackendEntry",
           "CallTimes", "InputSpec", "artifact_kind", "available_backends", "backend_names",
           "check_feed", "input_specs", "open_backend"]

Probe = Callable[..., "tuple[bool, str]"]  # ``probe(path, **options)`` → (available, reason)


@dataclass(frozen=True)
class BackendEntry:
    """One way to run one kind of artifact."""

    name: str                        # what ``backend=`` takes
    kind: str                        # the artifact kind it runs
    opener: Callable[..., Backend]   # ``opener(path, **options)``
    probe: Probe                     # ``probe(path, **options)`` → ``(available, reason)``;
    #                                  cheap; given the opener's options, so it checks what the
    #                                  opener will use (the TensorRT probe: GPU ``device_id``);
    #                                  ModelFormatError when the file itself cannot run here
    options: frozenset[str]          # keyword options the opener (and probe) take

    def accepted(self, options: dict[str, Any]) -> dict[str, Any]:
        """The part of ``options`` this backend takes."""
        return {k: v for k, v in options.items() if k in self.options}


#: File suffix → artifact kind. An fcn-edge engine is recognised by its header whatever its name.
ARTIFACT_KINDS = {".onnx": "onnx", ".engine": "engine", ".plan": "engine", ".pt": "checkpoint",
         ".pth": "checkpoint", ".safetensors": "checkpoint"}
_KIND_TEXT = {"engine": "an fcn-edge TensorRT engine", "onnx": "an ONNX model",
              "checkpoint": "a PyTorch checkpoint"}
_ORT_OPTIONS = frozenset({"threads", "fp16", "device_id", "trt_cache_dir"})
_TORCH_OPTIONS = frozenset({"threads", "fp16", "cuda_graphs", "channels_last", "argmax"})

BACKENDS: dict[str, tuple[BackendEntry, ...]] = {
    # Lambdas look the probes up when called, so a test can stand in for a missing engine.
    "engine": (BackendEntry("tensorrt", "engine", _trt.TensorRTBackend,
                            lambda path, device_id=0, **_: _trt.probe(path, device_id=device_id),
                            frozenset({"device_id", "preallocate"})),),
    "onnx": tuple(BackendEntry(f"onnxruntime:{p}", "onnx",
                               partial(_ort.OnnxRuntimeBackend, provider=p),
                               lambda path, p=p, **_: _ort.probe(p), _ORT_OPTIONS)
                  for p in ("tensorrt", "cuda", "cpu")),
    "checkpoint": tuple(BackendEntry(f"torch:{d}", "checkpoint",
                                     partial(_torch.TorchBackend, device=d),
                                     lambda path, d=d, **_: _torch.probe(d), _TORCH_OPTIONS)
                        for d in ("cuda", "cpu")),
}
AUTO_ORDER = tuple(e.name for entries in BACKENDS.values() for e in entries)
#: Names for "the best of these": ``onnxruntime`` is its best provider here, ``torch`` its device.
_GROUPS = {"onnxruntime": "onnx", "torch": "checkpoint"}


def backend_names() -> list[str]:
    """Every name ``backend=`` accepts."""
    return ["auto", *_GROUPS, *AUTO_ORDER]


def artifact_kind(path: str | Path) -> str:
    """``engine``, ``onnx`` or ``checkpoint``; a clear error for anything else."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such model file" + (" (it is a folder)" if path.is_dir()
                                                          else ""))
    if is_engine_file(path):
        return "engine"
    kind = ARTIFACT_KINDS.get(path.suffix.lower())
    if kind is None:
        raise InputError(f"{path}: unknown kind of model '{path.suffix}'; give an .onnx, an "
                         f"fcn-edge .engine/.plan or a .pt/.pth/.safetensors checkpoint")
    if kind == "engine":
        read_engine_header(path)  # raises, explaining why a bare TensorRT plan is not enough
    return kind


def available_backends(path: str | Path, **options: Any) -> list[tuple[str, bool, str]]:
    """``(name, available, reason)`` for every backend, in ``auto`` order, for ``path``;
    ``options`` as :func:`open_backend` takes them (``device_id`` picks the GPU probed)."""
    path = Path(path)
    kind = artifact_kind(path)
    rows = []
    for entry_kind, entries in BACKENDS.items():
        for entry in entries:
            if entry_kind == kind:
                try:
                    rows.append((entry.name, *entry.probe(path, **entry.accepted(options))))
                except ModelFormatError as exc:
                    rows.append((entry.name, False, str(exc)))
            else:
                rows.append((entry.name, False, _not_applicable(entry_kind, kind, path)))
    return rows


def open_backend(path: str | Path, backend: str = "auto", **options: Any) -> Backend:
    """Open ``path`` with ``backend`` (a name from :func:`backend_names`).

    ``auto`` and the group names try their backends in order and take the first that opens;
    the backend's ``reason`` says which was chosen and why. ``options`` go to the backends that
    take them (``threads``, ``fp16``, ``device_id`` …); one that no candidate takes is refused.
    A damaged or foreign file (ModelFormatError) is never passed over: it fails every backend.
    """
    path = Path(path)
    kind = artifact_kind(path)
    entries = _candidates(backend, kind, path)
    _check_options(options, entries, kind)
    passed: list[str] = []
    for entry in entries:
        ok, why = entry.probe(path, **entry.accepted(options))
        if not ok:
            passed.append(f"{entry.name}: {why}")
            continue
        try:
            opened = entry.opener(path, **entry.accepted(options))
        except BackendUnavailable as exc:
            passed.append(f"{entry.name}: {exc}")
            continue
        opened.reason = _reason(backend, kind, entry.name, opened, why, passed)
        return opened
    raise BackendUnavailable(f"no backend can run {path} here: " + "; ".join(passed))


def _candidates(backend: str, kind: str, path: Path) -> tuple[BackendEntry, ...]:
    if backend == "auto":
        return BACKENDS[kind]
    if backend in _GROUPS:
        group = _GROUPS[backend]
        if group != kind:
            raise InputError(f"backend '{backend}' {_not_applicable(group, kind, path)}")
        return BACKENDS[kind]
    for entry_kind, entries in BACKENDS.items():
        for entry in entries:
            if entry.name == backend:
                if entry_kind != kind:
                    raise InputError(f"backend '{backend}' "
                                     f"{_not_applicable(entry_kind, kind, path)}")
                return (entry,)
    raise InputError(f"unknown backend {backend!r}; choose one of {', '.join(backend_names())}")


def _not_applicable(entry_kind: str, kind: str, path: Path) -> str:
    what = f"runs {_KIND_TEXT[entry_kind].split(' ', 1)[1]}s; {path.name} is {_KIND_TEXT[kind]}"
    if entry_kind == "engine" and kind == "onnx":
        return f"{what}: build one with `fcn-edge build {path}`"
    if entry_kind == "onnx" and kind == "checkpoint":
        return f"{what}: export one with `fcn-edge export {path}`"
    return what


def _check_options(options: dict, entries: tuple[BackendEntry, ...], kind: str) -> None:
    known = frozenset().union(*(e.options for e in entries))
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)} for {_KIND_TEXT[kind]} "
                         f"({', '.join(e.name for e in entries)}); they take "
                         f"{', '.join(sorted(known)) or 'none'}")


def _reason(asked: str, kind: str, tried: str, opened: Backend, why: str,
            passed: list[str]) -> str:
    if asked == opened.name:
        text = f"{opened.name}, as asked ({why})"
    else:
        text = (f"{asked} chose {tried}: the fastest backend for {_KIND_TEXT[kind]} that runs "
                f"here ({why})")
    if tried != opened.name:  # e.g. onnxruntime's TensorRT provider failed over to CUDA
        text += f"; the session runs on {opened.name}"
    return text + (f"; passed over {'; '.join(passed)}" if passed else "")
