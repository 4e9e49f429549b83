"""The optional engines (onnxruntime, tensorrt, the CUDA bindings, torch): whether one is here,
the one function that imports any of them, and what to install for TensorRT.

Every engine is imported only when a backend that needs it opens (``import fcn_edge.runtime``
imports none), always through :func:`lazy_import`, so a missing or broken engine is one
BackendUnavailable line naming what to install, never a traceback (docs/architecture.md,
"Conventions"; Polygraphy's ``mod.lazy_import`` does the same for its runners).
"""
from __future__ import annotations

import importlib
from importlib.util import find_spec
from typing import Any

from ...errors import BackendUnavailable

#: The TensorRT extras: CUDA 12 (JetPack 6, any driver ≥ 525) or CUDA 13 (driver ≥ 580.65,
#: JetPack 7); docs/edge-workflow.md "Which TensorRT and CUDA packages" says which fits.
TRT_EXTRA = ('pip install "fcn-edge[trt]" (CUDA 12: JetPack 6, drivers ≥ 525) or '
             '"fcn-edge[trt-cu13]" (CUDA 13: driver ≥ 580.65, JetPack 7)')


def has_module(name: str) -> bool:
    """Whether ``name`` is importable, without importing it."""
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):  # a parent package that is missing or half-installed
        return False


def lazy_import(module: str, failure: str) -> Any:
    """``module``, imported now; else BackendUnavailable with ``failure``, in which ``{exc}``
    stands for the import's own error.

    OSError counts as missing too: a wheel can be installed while the native library it loads
    is not (tensorrt without libnvinfer, pycuda without libcuda, torch without its CUDA libs).
    """
    try:
        return importlib.import_module(module)
    except (ImportError, OSError) as exc:
        raise BackendUnavailable(failure.replace("{exc}", str(exc))) from None
